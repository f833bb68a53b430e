/**
 * Streaming decode: bytes → CloudTrail records, one batch at a time, with bounded memory.
 * PLACEHOLDER: being implemented (gzip by magic bytes, multi-member, Records splitter, caps).
 *
 * @module
 */

import { ObjectDecodeError } from "./errors.ts";
import type { CloudTrailRecord } from "./types.ts";

/** Limits applied while decoding one object. */
export interface DecodeOptions {
  /** Cap on decompressed bytes per object. */
  maxObjectBytes: number;
  /** Cap on the bytes of one record. */
  maxRecordBytes: number;
  /** Cap on the nesting depth of one record. */
  maxDepth: number;
}

/** Default limits: 2 GiB per object, 4 MiB per record, 500 levels. */
export const defaults = {
  maxObjectBytes: 2 * 1024 ** 3,
  maxRecordBytes: 4 * 1024 ** 2,
  maxDepth: 500,
} satisfies DecodeOptions;

/** One decoded record, or a failure confined to one record. `offset` is where it starts. */
export type DecodedRecord =
  | { record: CloudTrailRecord; offset: number; error?: undefined }
  | { error: string; offset: number; record?: undefined };

/**
 * Decodes an object's bytes into batches of records. Throws {@link ObjectDecodeError} for an
 * object-level failure, after yielding every record decoded before it.
 */
export async function* decodeRecords(
  input: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  object: string,
  options: Partial<DecodeOptions> = {},
): AsyncGenerator<DecodedRecord[]> {
  const opts = { ...defaults, ...options };
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of input as AsyncIterable<Uint8Array>) {
    chunks.push(chunk);
    total += chunk.length;
  }
  let bytes = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    const { gunzipSync } = await import("node:zlib");
    bytes = new Uint8Array(gunzipSync(bytes));
  }
  if (bytes.length > opts.maxObjectBytes) throw new ObjectDecodeError(object, opts.maxObjectBytes, "too large");
  const text = new TextDecoder().decode(bytes).trim();
  if (text === "") return;
  let values: unknown[];
  if (text.startsWith("[")) values = JSON.parse(text);
  else if (text.startsWith("{") && text.includes('"Records"')) {
    const parsed = JSON.parse(text);
    values = parsed.Records;
  } else values = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  yield values.map((record) =>
    typeof record === "object" && record !== null && !Array.isArray(record)
      ? { record: record as CloudTrailRecord, offset: 0 }
      : { error: "record is not an object", offset: 0 }
  );
}
