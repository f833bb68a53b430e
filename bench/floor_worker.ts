/**
 * One worker of `FloorPair` (bench/floor.ts): decodes the files it is sent and answers with their
 * record count.
 *
 * @module
 */

/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />

import { floorDecode } from "./floor.ts";

self.onmessage = (event: MessageEvent<string[]>) => {
  self.postMessage(floorDecode(event.data));
};
