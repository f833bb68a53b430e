/**
 * Decode hot path: `deno bench -A bench/decode_bench.ts`.
 *
 * Dataset: 20,000 records from bench/dataset.ts (~1.5 KB each, ~30 MB of JSON) in one
 * `{"Records":[…]}` object — the shape and size of a busy CloudTrail log file. The floor is what
 * any decoder must at least do: gunzip the whole file and JSON.parse the whole text. (A streaming
 * JSON library, npm:@streamparser/json 0.0.26, measured ~8× slower than the splitter here and is
 * not kept as a dependency.)
 *
 * @module
 */

import { gunzipSync, gzipSync } from "node:zlib";
import { decodeRecords, DEFERRED_PAYLOADS, ObjectDecoder, RecordSplitter } from "../core/decode.ts";
import { generateRecords } from "./dataset.ts";

const RECORDS = 20_000;
const CHUNK = 64 * 1024;

const plain = new TextEncoder().encode(`{"Records":[${[...generateRecords(RECORDS)].join(",")}]}`);
const zipped = new Uint8Array(gzipSync(plain));
console.log(
  `dataset: ${RECORDS} records, ${(plain.length / 1e6).toFixed(1)} MB JSON ` +
    `(${(plain.length / RECORDS).toFixed(0)} B/record), ${
      (zipped.length / 1e6).toFixed(1)
    } MB gzip`,
);

function expect(count: number): void {
  if (count !== RECORDS) throw new Error(`decoded ${count} records, expected ${RECORDS}`);
}

function streamOf(data: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= data.length) controller.close();
      else {
        controller.enqueue(data.subarray(at, at + CHUNK));
        at += CHUNK;
      }
    },
  });
}

Deno.bench({
  name: "floor: gunzipSync whole file + JSON.parse whole text",
  group: "gzip",
  baseline: true,
  fn() {
    const text = new TextDecoder().decode(gunzipSync(zipped));
    expect(JSON.parse(text).Records.length);
  },
});

Deno.bench({
  name: "decodeRecords() over a ReadableStream of 64 KiB chunks",
  group: "gzip",
  async fn() {
    let count = 0;
    for await (const batch of decodeRecords(streamOf(zipped), "bench")) count += batch.length;
    expect(count);
  },
});

Deno.bench({
  name: "decodeRecords() deferring the pipeline's payloads (as ingest does)",
  group: "gzip",
  async fn() {
    let count = 0;
    const options = { defer: DEFERRED_PAYLOADS };
    for await (const batch of decodeRecords(streamOf(zipped), "bench", options)) {
      count += batch.length;
    }
    expect(count);
  },
});

Deno.bench({
  name: "ObjectDecoder (sync) fed 64 KiB chunks",
  group: "gzip",
  fn() {
    const decoder = new ObjectDecoder("bench");
    let count = 0;
    for (let at = 0; at < zipped.length; at += CHUNK) {
      count += decoder.push(zipped.subarray(at, at + CHUNK)).length;
    }
    expect(count + decoder.end().length);
  },
});

Deno.bench({
  name: "floor: JSON.parse whole text",
  group: "plain",
  baseline: true,
  fn() {
    expect(JSON.parse(new TextDecoder().decode(plain)).Records.length);
  },
});

// Reference (not a decoder): the same records with their nested payload objects set to null. It
// shows how much of JSON.parse goes into objects that only some rules and logins look at.
const PAYLOADS = [
  "requestParameters",
  "responseElements",
  "additionalEventData",
  "resources",
  "tlsDetails",
];
const envelopes = new TextEncoder().encode(JSON.stringify({
  Records: (JSON.parse(new TextDecoder().decode(plain)).Records as Record<string, unknown>[]).map(
    (record) => {
      const copy = { ...record };
      for (const key of PAYLOADS) if (copy[key] && typeof copy[key] === "object") copy[key] = null;
      return copy;
    },
  ),
}));

Deno.bench({
  name: "reference: JSON.parse whole text, payload objects nulled",
  group: "plain",
  fn() {
    expect(JSON.parse(new TextDecoder().decode(envelopes)).Records.length);
  },
});

Deno.bench({
  name: "RecordSplitter alone fed 256 KiB chunks",
  group: "plain",
  fn() {
    const splitter = new RecordSplitter("bench");
    let count = 0;
    for (let at = 0; at < plain.length; at += 4 * CHUNK) {
      count += splitter.push(plain.subarray(at, at + 4 * CHUNK)).length;
    }
    expect(count + splitter.end().length);
  },
});
