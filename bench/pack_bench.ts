/**
 * The decode workers' packing: `deno bench -A bench/pack_bench.ts`.
 *
 * Dataset: 20,000 records from bench/dataset.ts, decoded and normalized once into batches as a
 * worker prepares them (one per 256 KiB of compressed input: ~1,200 events). Each timed pass
 * packs fresh copies of the events (re-parsed before the timer starts): a worker packs strings
 * that `JSON.parse` just made, whose hash V8 has not computed yet, so packing the same objects
 * twice would time a cheaper case. The reference packs the strings table with a `Map`, as the
 * workers did before.
 *
 * @module
 */

import { defaults, DEFERRED_PAYLOADS, ObjectDecoder } from "../core/decode.ts";
import {
  packedTransfer,
  packPrepared,
  type Prepared,
  Preparer,
  STRING_FIELDS,
  unpackPrepared,
} from "../core/prepare.ts";
import { trailFile } from "./dataset.ts";

const RECORDS = 20_000;

const batches: string[] = [];
const preparer = new Preparer([], {});
const file = trailFile(RECORDS, 0);
// As a worker does: one batch per 256 KiB of compressed input.
const decoder = new ObjectDecoder("bench.json.gz", { ...defaults, defer: DEFERRED_PAYLOADS });
for (let at = 0; at <= file.length; at += 256 * 1024) {
  const records = at < file.length
    ? decoder.push(file.subarray(at, at + 256 * 1024))
    : decoder.end();
  if (records.length > 0) batches.push(JSON.stringify(preparer.decoded(records)));
}
const fresh = (): Prepared[][] => batches.map((text) => JSON.parse(text));
console.log(`dataset: ${preparer.count} events in ${batches.length} batches`);

/** The strings table as a Map (the reference): one V8 string hash per field. */
function packWithMap(items: readonly Prepared[]): number {
  const seen = new Map<string, number>();
  const codes: number[] = [];
  for (const item of items) {
    const event = item.event as unknown as Record<string, unknown> | undefined;
    if (!event) continue;
    for (const field of FIELDS) {
      const value = event[field] as string | undefined;
      if (value === undefined) continue;
      let code = seen.get(value);
      if (code === undefined) seen.set(value, code = seen.size + 1);
      codes.push(code);
    }
  }
  return codes.length;
}
/** The fields the Map version looks up (the event id, unique per event, is not). */
const FIELDS = STRING_FIELDS.slice(1);

Deno.bench("strings table by Map (reference)", { group: "pack", baseline: true }, (b) => {
  const input = fresh();
  b.start();
  for (const items of input) packWithMap(items);
  b.end();
});

Deno.bench("packPrepared", { group: "pack" }, (b) => {
  const input = fresh();
  b.start();
  for (const items of input) packPrepared(items);
  b.end();
});

Deno.bench("packPrepared + structured clone + unpackPrepared", (b) => {
  const input = fresh();
  b.start();
  for (const items of input) {
    const packed = packPrepared(items);
    unpackPrepared(structuredClone(packed, { transfer: packedTransfer(packed) }));
  }
  b.end();
});
