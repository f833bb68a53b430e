/**
 * The decode floor: `node:zlib` gunzip + `JSON.parse` of every `.json.gz` file in a folder, what
 * any CloudTrail reader must at least do. `bench/run.ts` times it in-process; `bench/work.ts` runs
 * this module as a child to count its instructions.
 *
 * Usage as a script: `deno run -R bench/floor.ts <folder>` (one pass; prints the event count).
 *
 * @module
 */

import { gunzipSync } from "node:zlib";

/** Decodes every file of `folder` once; returns the number of records. */
export function floorPass(folder: string): number {
  let events = 0;
  for (const entry of Deno.readDirSync(folder)) {
    const bytes = Deno.readFileSync(`${folder}/${entry.name}`);
    const parsed = JSON.parse(new TextDecoder().decode(gunzipSync(bytes)));
    events += parsed.Records.length;
  }
  return events;
}

if (import.meta.main) console.log(floorPass(Deno.args[0]));
