import assert from "node:assert/strict";
import { crc32, deflateRawSync, gunzipSync, gzipSync } from "node:zlib";
import {
  type DecodedRecord,
  decodeRecords,
  defaults,
  DEFERRED_PAYLOADS,
  hasDeferred,
  materialize,
  ObjectDecoder,
  RecordSplitter,
} from "../core/decode.ts";
import { ObjectDecodeError, RecordError } from "../core/errors.ts";

const encoder = new TextEncoder();
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers (fixtures are generated here, never stored)
// ---------------------------------------------------------------------------------------------

function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function gzip(data: string | Uint8Array): Uint8Array {
  return new Uint8Array(gzipSync(typeof data === "string" ? bytes(data) : data));
}

/** A stream of `data` cut into chunks of `size` bytes. */
function streamOf(data: Uint8Array, size = 64 * 1024): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= data.length) controller.close();
      else {
        controller.enqueue(data.slice(at, at + size));
        at += size;
      }
    },
  });
}

/** A realistic-looking CloudTrail record, deterministic in `i`. */
function cloudTrailRecord(i: number): Record<string, unknown> {
  const account = String(123456789000 + (i % 7));
  return {
    eventVersion: "1.09",
    userIdentity: {
      type: "AssumedRole",
      principalId: `AROAEXAMPLE${i % 13}:session-${i}`,
      arn: `arn:aws:sts::${account}:assumed-role/Admin/session-${i}`,
      accountId: account,
      sessionContext: {
        attributes: { creationDate: "2024-05-01T10:00:00Z", mfaAuthenticated: "true" },
      },
    },
    eventTime: new Date(Date.UTC(2024, 4, 1, 10, 0, i % 60)).toISOString(),
    eventSource: "s3.amazonaws.com",
    eventName: ["GetObject", "PutObject", "ConsoleLogin"][i % 3],
    awsRegion: "eu-west-1",
    sourceIPAddress: `203.0.113.${i % 250}`,
    userAgent: 'aws-cli/2.13.5 Python/3.11.4 Linux/5.15.0 "quoted" \\ back\\slash é 😀',
    requestParameters: { bucketName: `bucket-${i}`, key: `logs/${i}.json.gz` },
    responseElements: null,
    eventID: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
    readOnly: i % 2 === 0,
    resources: [{ type: "AWS::S3::Object", ARN: `arn:aws:s3:::bucket-${i}/logs/${i}` }],
    recipientAccountId: account,
  };
}

interface Collected {
  entries: DecodedRecord[];
  error?: unknown;
}

async function collect(
  input: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  object = "test-object",
  options: Parameters<typeof decodeRecords>[2] = {},
): Promise<Collected> {
  const entries: DecodedRecord[] = [];
  try {
    for await (const batch of decodeRecords(input, object, options)) entries.push(...batch);
  } catch (error) {
    return { entries, error };
  }
  return { entries };
}

/** Decodes `data` cut at the given positions with the synchronous decoder. */
function decodeSplit(data: Uint8Array, cuts: number[]): Collected {
  const decoder = new ObjectDecoder("test-object");
  const entries: DecodedRecord[] = [];
  let from = 0;
  try {
    for (const cut of [...cuts, data.length]) {
      decoder.push(data.subarray(from, cut), entries);
      from = cut;
    }
    decoder.end(entries);
  } catch (error) {
    return { entries, error: (error as Error).message };
  }
  return { entries };
}

/**
 * Runs `body` (JavaScript, with `decodeRecords` and `report(value)` in scope) in a child Deno
 * process and returns what it reported.
 */
async function inChildProcess<T>(body: string): Promise<T> {
  const url = new URL("../core/decode.ts", import.meta.url).href;
  const code = `const { decodeRecords } = await import(${JSON.stringify(url)});
    const report = (value) => console.log(JSON.stringify(value));
    ${body}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-config", "--no-lock", "--ext=js", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(code));
  await writer.close();
  const { success, stdout, stderr } = await child.output();
  const decoder = new TextDecoder();
  assert.ok(success, decoder.decode(stderr));
  return JSON.parse(decoder.decode(stdout));
}

function records(entries: DecodedRecord[]): unknown[] {
  return entries.map((e) => e.record ?? { error: e.error });
}

function assertDecodeError(error: unknown, pattern: RegExp): ObjectDecodeError {
  assert.ok(error instanceof ObjectDecodeError, `expected an ObjectDecodeError, got ${error}`);
  assert.match(error.message, pattern);
  assert.match(error.message, /^Cannot decode test-object: .* at byte \d+$/);
  return error;
}

/** Byte offset of `needle` in `text` once encoded as UTF-8. */
function byteOffset(text: string, needle: string, from = 0): number {
  return bytes(text.slice(0, text.indexOf(needle, from))).length;
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

Deno.test("decodeRecords() decodes the Records of a wrapper and ignores its other keys", async () => {
  const text = JSON.stringify({
    before: { Records: "not these", list: [1, 2] },
    Records: [cloudTrailRecord(1), cloudTrailRecord(2)],
    after: ["x", { Records: [] }],
  });
  const { entries, error } = await collect(streamOf(bytes(text), 50));
  assert.deepEqual(error, undefined);
  assert.deepEqual(records(entries), [cloudTrailRecord(1), cloudTrailRecord(2)]);
  assert.deepEqual(entries[0].offset, byteOffset(text, JSON.stringify(cloudTrailRecord(1))));
  assert.deepEqual(entries[1].offset, byteOffset(text, JSON.stringify(cloudTrailRecord(2))));
});

Deno.test("decodeRecords() decodes a bare array of records with byte offsets", async () => {
  const text = `[ {"name":"é😀"} ,\n{"name":"b"}]`;
  const { entries, error } = await collect(streamOf(bytes(text), 3));
  assert.deepEqual(error, undefined);
  assert.deepEqual(entries, [
    { record: { name: "é😀" }, offset: 2 },
    { record: { name: "b" }, offset: byteOffset(text, '{"name":"b"}') },
  ]);
});

Deno.test("decodeRecords() decodes JSON Lines", async () => {
  const lines = [cloudTrailRecord(1), cloudTrailRecord(2), cloudTrailRecord(3)];
  const text = lines.map((r) => JSON.stringify(r)).join("\r\n") + "\n";
  const { entries, error } = await collect(streamOf(bytes(text), 100));
  assert.deepEqual(error, undefined);
  assert.deepEqual(records(entries), lines);
  assert.deepEqual(entries[1].offset, bytes(JSON.stringify(lines[0]) + "\r\n").length);
});

Deno.test("decodeRecords() decodes a single record object", async () => {
  const { entries, error } = await collect(streamOf(bytes(JSON.stringify(cloudTrailRecord(7)))));
  assert.deepEqual(error, undefined);
  assert.deepEqual(entries, [{ record: cloudTrailRecord(7), offset: 0 }]);
});

Deno.test("decodeRecords() treats an object with Records only below depth 1 as a record", async () => {
  const record = { eventName: "X", nested: { Records: [1, 2] }, value: "Records" };
  const { entries } = await collect(streamOf(bytes(JSON.stringify(record))));
  assert.deepEqual(entries, [{ record, offset: 0 }]);
});

Deno.test("decodeRecords() decodes several concatenated top-level objects", async () => {
  const text = `{"a":1}{"b":2}  {"Records":[{"c":3}]}{"d":{"e":[]}}`;
  const { entries, error } = await collect(streamOf(bytes(text), 4));
  assert.deepEqual(error, undefined);
  assert.deepEqual(records(entries), [{ a: 1 }, { b: 2 }, { c: 3 }, { d: { e: [] } }]);
  assert.deepEqual(entries.map((e) => e.offset), [
    0,
    7,
    byteOffset(text, '{"c"'),
    byteOffset(text, '{"d"'),
  ]);
});

Deno.test("decodeRecords() accepts a leading UTF-8 BOM and whitespace", async () => {
  const text = `\uFEFF \n\t {"Records":[{"a":1}]}\n`;
  const { entries, error } = await collect(streamOf(bytes(text), 1));
  assert.deepEqual(error, undefined);
  assert.deepEqual(entries, [{ record: { a: 1 }, offset: byteOffset(text, '{"a"') }]);
});

Deno.test("decodeRecords() yields nothing for empty or whitespace-only input", async () => {
  for (const input of [new Uint8Array(0), bytes(" \n\t\r\n "), gzip(""), gzip("  \n")]) {
    const batches: DecodedRecord[][] = [];
    for await (const batch of decodeRecords(streamOf(input), "test-object")) batches.push(batch);
    assert.deepEqual(batches, []);
  }
});

Deno.test("decodeRecords() accepts an async iterable as input", async () => {
  async function* chunks() {
    yield bytes('{"Records":[{"a"');
    yield bytes(":1}]}");
  }
  const { entries } = await collect(chunks());
  assert.deepEqual(entries, [{ record: { a: 1 }, offset: 12 }]);
});

// ---------------------------------------------------------------------------------------------
// Gzip
// ---------------------------------------------------------------------------------------------

Deno.test("decodeRecords() yields each record of a multi-member gzip", async () => {
  const first = JSON.stringify({ Records: [cloudTrailRecord(1), cloudTrailRecord(2)] });
  const second = JSON.stringify(cloudTrailRecord(3)) + "\n" + JSON.stringify(cloudTrailRecord(4));
  const data = concat(gzip(first), gzip(""), gzip(second));
  const { entries, error } = await collect(streamOf(data, 37));
  assert.deepEqual(error, undefined);
  assert.deepEqual(records(entries), [1, 2, 3, 4].map(cloudTrailRecord));
  assert.deepEqual(entries[2].offset, bytes(first).length);
});

Deno.test("decodeRecords() detects gzip by magic bytes, not by name", async () => {
  const text = JSON.stringify({ Records: [{ a: 1 }] });
  const zipped = await collect(streamOf(gzip(text)), "logs/object.json");
  assert.deepEqual(zipped.entries, [{ record: { a: 1 }, offset: 12 }]);
  const plain = await collect(streamOf(bytes(text)), "logs/object.json.gz");
  assert.deepEqual(plain.entries, [{ record: { a: 1 }, offset: 12 }]);
});

Deno.test("decodeRecords() reads gzip headers with extra field, name, comment and CRC", () => {
  const data = bytes(JSON.stringify({ Records: [{ a: 1 }, { b: "é" }] }));
  const head = concat(
    new Uint8Array([0x1f, 0x8b, 8, 0x1e, 0, 0, 0, 0, 0, 3, 4, 0, 1, 2, 3, 4]),
    bytes("CloudTrail_eu-west-1.json\0a comment\0"),
  );
  const headerCrc = crc32(head) & 0xffff;
  const trailer = new Uint8Array(8);
  new DataView(trailer.buffer).setUint32(0, crc32(data), true);
  new DataView(trailer.buffer).setUint32(4, data.length, true);
  const member = concat(
    head,
    new Uint8Array([headerCrc & 0xff, headerCrc >> 8]),
    new Uint8Array(deflateRawSync(data)),
    trailer,
  );
  const both = concat(member, member);
  assert.deepEqual(new Uint8Array(gunzipSync(both)), concat(data, data));
  const expected = decodeSplit(concat(data, data), []);
  assert.equal(expected.entries.length, 4);
  assert.deepEqual(decodeSplit(both, []), expected);
  assert.deepEqual(decodeSplit(both, Array.from({ length: both.length }, (_, i) => i)), expected);
});

Deno.test("decodeRecords() throws for a truncated gzip after the records before the cut", async () => {
  const all = Array.from({ length: 400 }, (_, i) => cloudTrailRecord(i));
  const data = gzip(JSON.stringify({ Records: all }));
  const cut = data.subarray(0, Math.floor(data.length / 2));
  const { entries, error } = await collect(streamOf(cut, 1000));
  const failure = assertDecodeError(error, /gzip stream truncated at byte \d+/);
  assert.deepEqual(failure.offset, cut.length);
  assert.deepEqual(failure.object, "test-object");
  assert.ok(entries.length > 10 && entries.length < 400, `got ${entries.length} records`);
  assert.deepEqual(records(entries), all.slice(0, entries.length));
});

Deno.test("decodeRecords() throws for garbage after the last gzip member", async () => {
  const member = gzip(JSON.stringify({ Records: [{ a: 1 }, { b: 2 }] }));
  for (const trailer of [bytes("GARBAGE"), new Uint8Array(4), new Uint8Array([0x1f, 0x00])]) {
    const { entries, error } = await collect(streamOf(concat(member, trailer), 5));
    const failure = assertDecodeError(error, /^.*trailing garbage after gzip member 1 at byte/);
    assert.deepEqual(failure.offset, member.length);
    assert.deepEqual(records(entries), [{ a: 1 }, { b: 2 }]);
  }
});

Deno.test("decodeRecords() throws for a gzip member whose CRC does not match", async () => {
  const data = gzip(JSON.stringify({ Records: [{ a: 1 }] }));
  data[data.length - 8] ^= 0xff;
  const { error } = await collect(streamOf(data));
  assertDecodeError(error, /gzip CRC mismatch/);
});

Deno.test("decodeRecords() throws for non-gzip binary data", async () => {
  const binary = new Uint8Array(4096);
  for (let i = 0; i < binary.length; i++) binary[i] = (i * 7919 + 13) & 0xff;
  binary[0] = 0x50; // "PK…"-like: not gzip, not JSON
  const { entries, error } = await collect(streamOf(binary));
  const failure = assertDecodeError(error, /unexpected 'P' where a value must start at byte 0/);
  assert.deepEqual(failure.offset, 0);
  assert.deepEqual(entries, []);
});

Deno.test("decodeRecords() throws when a gzip bomb exceeds maxObjectBytes", async () => {
  const bomb = gzip(concat(bytes('{"Records":['), new Uint8Array(20 * MiB).fill(0x20)));
  assert.ok(bomb.length < 64 * 1024, `bomb is ${bomb.length} bytes`);
  const decoder = new ObjectDecoder("test-object", { maxObjectBytes: 10 * MiB });
  let failure: unknown;
  try {
    for (let at = 0; at < bomb.length; at += 1024) decoder.push(bomb.subarray(at, at + 1024));
  } catch (error) {
    failure = error;
  }
  assertDecodeError(failure, /decompressed size exceeds 10485760 bytes at byte 10485760/);
  assert.deepEqual(decoder.size, 10 * MiB);
  const { error } = await collect(streamOf(bomb), "test-object", { maxObjectBytes: 10 * MiB });
  assertDecodeError(error, /decompressed size exceeds 10485760 bytes/);
});

// ---------------------------------------------------------------------------------------------
// Invalid JSON and per-record errors
// ---------------------------------------------------------------------------------------------

Deno.test("decodeRecords() handles invalid JSON at the start of an object", async () => {
  // A broken first record is confined to that record.
  const broken = `{"Records":[{"a":tru},{"b":2}]}`;
  const first = await collect(streamOf(bytes(broken), 7));
  assert.deepEqual(first.error, undefined);
  assert.deepEqual(first.entries.length, 2);
  assert.match(first.entries[0].error ?? "", /^invalid JSON: /);
  assert.deepEqual(first.entries[0].offset, 12);
  assert.deepEqual(first.entries[1], { record: { b: 2 }, offset: 22 });
  // Garbage before any value fails the object at once.
  const garbage = await collect(streamOf(bytes(`xx{"Records":[{"a":1}]}`)));
  assertDecodeError(garbage.error, /unexpected 'x' where a value must start at byte 0/);
  assert.deepEqual(garbage.entries, []);
});

Deno.test("decodeRecords() handles invalid JSON in the middle of an object", async () => {
  const text = `{"Records":[{"a":1},{"b":[1,2,]},{"c":3}]}`;
  const { entries, error } = await collect(streamOf(bytes(text), 5));
  assert.deepEqual(error, undefined);
  assert.deepEqual(entries[0], { record: { a: 1 }, offset: 12 });
  assert.match(entries[1].error ?? "", /^invalid JSON: /);
  assert.deepEqual(entries[1].offset, 20);
  assert.deepEqual(entries[2], { record: { c: 3 }, offset: text.indexOf('{"c":3}') });
  // A broken separator between records is structural.
  const missing = await collect(streamOf(bytes(`[{"a":1} {"b":2}]`)));
  assertDecodeError(missing.error, /expected ',' or '\]' after a record, got '\{' at byte 9/);
  assert.deepEqual(records(missing.entries), [{ a: 1 }]);
  // So is a bracket that closes the wrong thing.
  const mismatched = await collect(streamOf(bytes(`[{"a":1},{"b":[1}},{"c":3}]`)));
  assertDecodeError(mismatched.error, /mismatched '\}' at byte 16/);
  assert.deepEqual(records(mismatched.entries), [{ a: 1 }]);
});

Deno.test("decodeRecords() handles invalid JSON at the end of an object", async () => {
  // A broken last record is confined to that record.
  const last = await collect(streamOf(bytes(`{"Records":[{"a":1},{"b":2,}]}`)));
  assert.deepEqual(last.error, undefined);
  assert.deepEqual(last.entries[0], { record: { a: 1 }, offset: 12 });
  assert.match(last.entries[1].error ?? "", /^invalid JSON: /);
  // An object cut short (unbalanced brackets) fails after its complete records.
  const cut = `{"Records":[{"a":1},{"b":2},{"c":`;
  const unbalanced = await collect(streamOf(bytes(cut), 4));
  assertDecodeError(unbalanced.error, /unexpected end of input \(the value opened at byte 28/);
  assert.deepEqual((unbalanced.error as ObjectDecodeError).offset, bytes(cut).length);
  assert.deepEqual(records(unbalanced.entries), [{ a: 1 }, { b: 2 }]);
  // So does an unterminated string or an unclosed array.
  const unterminated = await collect(streamOf(bytes(`[{"a":1},{"b":"abc`)));
  assertDecodeError(unterminated.error, /a string in the value opened at byte 9/);
  const unclosed = await collect(streamOf(bytes(`{"Records":[{"a":1}`)));
  assertDecodeError(unclosed.error, /the array opened at byte 11 is not closed/);
  assert.deepEqual(records(unclosed.entries), [{ a: 1 }]);
  // And trailing garbage after the last value.
  const trailing = await collect(streamOf(bytes(`{"Records":[{"a":1}]}\n\x00`)));
  assertDecodeError(trailing.error, /unexpected byte 0x00 where a value must start at byte 22/);
  assert.deepEqual(records(trailing.entries), [{ a: 1 }]);
});

Deno.test("decodeRecords() throws when Records is not an array", async () => {
  for (const value of ["{}", "null", '"x"', "5"]) {
    const { entries, error } = await collect(streamOf(bytes(`{"Records": ${value}}`)));
    assertDecodeError(error, /"Records" is not an array .* at byte 12/);
    assert.deepEqual(entries, []);
  }
});

Deno.test("decodeRecords() reports records that are not objects and goes on", async () => {
  const text = `{"Records":[1, "s", null, true, [1, {"a": 2}], -2.5e3, {"ok": 1}]}\n7`;
  const { entries, error } = await collect(streamOf(bytes(text), 3));
  assert.deepEqual(error, undefined);
  const at = (needle: string) => text.indexOf(needle);
  assert.deepEqual(entries, [
    { error: "record is not an object (got a number)", offset: at("1,") },
    { error: "record is not an object (got a string)", offset: at('"s"') },
    { error: "record is not an object (got null)", offset: at("null") },
    { error: "record is not an object (got a boolean)", offset: at("true") },
    { error: "record is not an object (got an array)", offset: at("[1, {") },
    { error: "record is not an object (got a number)", offset: at("-2.5e3") },
    { record: { ok: 1 }, offset: at('{"ok"') },
    { error: "record is not an object (got a number)", offset: text.length - 1 },
  ]);
});

Deno.test("decodeRecords() skips a record over maxRecordBytes and decodes the next", async () => {
  const big = { pad: "x".repeat(300), nested: { s: 'a\\"b'.repeat(20) } };
  const text = JSON.stringify({ Records: [{ a: 1 }, big, { b: 2 }] });
  for (const size of [7, 64, 10_000]) {
    const { entries, error } = await collect(streamOf(bytes(text), size), "test-object", {
      maxRecordBytes: 200,
    });
    assert.deepEqual(error, undefined);
    assert.deepEqual(entries, [
      { record: { a: 1 }, offset: 12 },
      { error: "record exceeds 200 bytes", offset: 20 },
      { record: { b: 2 }, offset: text.lastIndexOf('{"b":2}') },
    ]);
  }
});

Deno.test("decodeRecords() skips a 100 MB string record without buffering it", async () => {
  // Run in a child process: RSS is per process, and `deno test --parallel` shares one.
  const result = await inChildProcess<{ entries: DecodedRecord[]; growth: number; head: number }>(`
    const filler = new Uint8Array(64 * 1024).fill(0x78);
    const head = new TextEncoder().encode('{"Records":[{"eventName":"Big","data":"');
    async function* input() {
      yield head;
      for (let i = 0; i < 1600; i++) yield filler; // 100 MiB of "x"
      yield new TextEncoder().encode('"},{"eventName":"Next"}]}');
    }
    const before = Deno.memoryUsage().rss;
    let peak = before;
    const entries = [];
    for await (const batch of decodeRecords(input(), "test-object")) {
      entries.push(...batch);
      peak = Math.max(peak, Deno.memoryUsage().rss);
    }
    peak = Math.max(peak, Deno.memoryUsage().rss);
    report({ entries, growth: peak - before, head: head.length });
  `);
  assert.deepEqual(result.entries, [
    { error: `record exceeds ${defaults.maxRecordBytes} bytes`, offset: 12 },
    { record: { eventName: "Next" }, offset: result.head + 100 * MiB + 3 },
  ]);
  assert.ok(result.growth < 150 * MiB, `RSS grew by ${(result.growth / MiB).toFixed(0)} MiB`);
});

Deno.test("decodeRecords() reports nesting deeper than maxDepth without recursion", async () => {
  const depth = 100_000;
  const deep = '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
  const text = `{"Records":[{"x":1},${deep},{"y":2}]}\n${"[".repeat(depth)}${"]".repeat(depth)}`;
  const { entries, error } = await collect(streamOf(bytes(text)));
  assert.deepEqual(error, undefined);
  assert.deepEqual(entries, [
    { record: { x: 1 }, offset: 12 },
    { error: "record nesting exceeds 500 levels", offset: 20 },
    { record: { y: 2 }, offset: 20 + deep.length + 1 },
    { error: "record is not an object (got an array)", offset: text.length - 2 * depth + 1 },
  ]);
  // Exactly maxDepth levels is fine; one more is not.
  const ten = '{"a":'.repeat(9) + "{}" + "}".repeat(9);
  const limited = await collect(streamOf(bytes(`${ten}{"b":${ten}}`)), "test-object", {
    maxDepth: 10,
  });
  assert.deepEqual(limited.entries[0].record, JSON.parse(ten));
  assert.deepEqual(limited.entries[1], {
    error: "record nesting exceeds 10 levels",
    offset: ten.length,
  });
});

Deno.test("decodeRecords() does not let __proto__ keys pollute Object.prototype", async () => {
  const text =
    `{"Records":[{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":1}},` +
    `"prototype":{"polluted":2},"eventName":"X"}]}`;
  const { entries } = await collect(streamOf(bytes(text), 9));
  const record = entries[0].record!;
  assert.deepEqual(Object.getPrototypeOf(record), Object.prototype);
  assert.ok(Object.hasOwn(record, "__proto__"));
  assert.deepEqual((record as Record<string, unknown>).polluted, undefined);
  assert.deepEqual(({} as Record<string, unknown>).polluted, undefined);
  assert.deepEqual(Object.prototype.hasOwnProperty.call(Object.prototype, "polluted"), false);
  assert.deepEqual(record.eventName, "X");
});

// ---------------------------------------------------------------------------------------------
// Chunk boundaries
// ---------------------------------------------------------------------------------------------

const SAMPLE =
  `\uFEFF{"before":{"Records":"no","s":"a\\\\\\"b"},"Records" :\t[{"a":"é😀\\\\","b":[1,{}]},` +
  `7,{"Recor":"ds","n":null},{"c":"\\u0041\\"}"}],"after":[{"x":"]"}]}\n` +
  `{"d":1}{"Records":[]}[{"e":"Records"},"str"]\n{"f":{"Records":[1]}}`;

Deno.test("decodeRecords() gives the same result whatever the chunk boundaries", () => {
  const data = bytes(SAMPLE);
  const whole = decodeSplit(data, []);
  assert.deepEqual(whole.error, undefined);
  assert.deepEqual(records(whole.entries), [
    { a: "é😀\\", b: [1, {}] },
    { error: "record is not an object (got a number)" },
    { Recor: "ds", n: null },
    { c: 'A"}' },
    { d: 1 },
    { e: "Records" },
    { error: "record is not an object (got a string)" },
    { f: { Records: [1] } },
  ]);
  for (let cut = 0; cut <= data.length; cut++) {
    assert.deepEqual(decodeSplit(data, [cut]), whole, `cut at ${cut}`);
  }
  assert.deepEqual(decodeSplit(data, Array.from({ length: data.length }, (_, i) => i)), whole);
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let round = 0; round < 200; round++) {
    const cuts = Array.from(
      { length: 1 + Math.floor(random() * 8) },
      () => Math.floor(random() * data.length),
    ).sort((a, b) => a - b);
    assert.deepEqual(decodeSplit(data, cuts), whole, `cuts ${cuts}`);
  }
});

Deno.test("decodeRecords() finds the end of long strings at every alignment, escapes included", () => {
  const escapes = ['\\"', "\\\\", "\\u0022", "é", "😀", "\\n"];
  const values: string[] = [];
  for (let length = 0; length <= 40; length++) {
    for (let at = 0; at <= length; at += 3) {
      const escape = escapes[(length + at) % escapes.length];
      values.push(`${"x".repeat(at)}${escape}${"y".repeat(length - at)}`);
    }
  }
  const lines: string[] = [];
  values.forEach((value, k) => lines.push(`${" ".repeat(k % 4)}{"v":"${value}","k":${k}}`));
  const data = bytes(`[${lines.join(",")}]`);
  const expected = JSON.parse(`[${lines.join(",")}]`);
  const whole = decodeSplit(data, []);
  assert.deepEqual(whole.error, undefined);
  assert.deepEqual(records(whole.entries), expected);
  // Chunks that start at every offset modulo 4 and end inside strings and escapes.
  for (const step of [5, 6, 7, 64, 101]) {
    for (let start = 1; start <= 4; start++) {
      const cuts: number[] = [];
      for (let cut = start; cut < data.length; cut += step) cuts.push(cut);
      assert.deepEqual(records(decodeSplit(data, cuts).entries), expected, `step ${step}+${start}`);
    }
  }
});

Deno.test("decodeRecords() gives the same result whatever the gzip chunk boundaries", () => {
  const plain = bytes(SAMPLE);
  const half = plain.length >> 1;
  const data = concat(gzip(plain.subarray(0, half)), gzip(plain.subarray(half)));
  const whole = decodeSplit(plain, []);
  for (let cut = 0; cut <= data.length; cut++) {
    assert.deepEqual(decodeSplit(data, [cut]), whole, `cut at ${cut}`);
  }
  assert.deepEqual(decodeSplit(data, Array.from({ length: data.length }, (_, i) => i)), whole);
});

Deno.test("decodeRecords() decodes realistic records identically in random chunk sizes", async () => {
  const all = Array.from({ length: 300 }, (_, i) => cloudTrailRecord(i));
  const data = gzip(JSON.stringify({ Records: all }));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(gunzipSync(data))).Records.length, 300);
  for (const size of [1, 13, 512, 4096, 1 << 20]) {
    const { entries, error } = await collect(streamOf(data, size));
    assert.deepEqual(error, undefined);
    assert.deepEqual(records(entries), all);
  }
});

// ---------------------------------------------------------------------------------------------
// Synchronous API and bounded memory
// ---------------------------------------------------------------------------------------------

Deno.test("ObjectDecoder keeps the records decoded before a failure in out", () => {
  const decoder = new ObjectDecoder("test-object");
  const out: DecodedRecord[] = [];
  let failure: unknown;
  try {
    decoder.push(bytes(`[{"a":1},{"b":2}] }`), out);
  } catch (error) {
    failure = error;
  }
  assertDecodeError(failure, /unexpected '\}' where a value must start at byte 18/);
  assert.deepEqual(records(out), [{ a: 1 }, { b: 2 }]);
  let again: unknown;
  try {
    decoder.end();
  } catch (error) {
    again = error;
  }
  assert.deepEqual(again, failure);
});

Deno.test("RecordSplitter splits records pushed piece by piece", () => {
  const splitter = new RecordSplitter("test-object");
  const text = bytes(`{"Records":[{"a":1},{"b":2}]}`);
  assert.deepEqual(splitter.push(text.subarray(0, 20)), [{ record: { a: 1 }, offset: 12 }]);
  assert.deepEqual(splitter.push(text.subarray(20)), [{ record: { b: 2 }, offset: 20 }]);
  assert.deepEqual(splitter.end(), []);
  assert.deepEqual(splitter.offset, text.length);
});

Deno.test("decodeRecords() can be stopped early", async () => {
  const data = gzip(JSON.stringify({ Records: Array.from({ length: 2000 }, (_, i) => ({ i })) }));
  let seen = 0;
  for await (const batch of decodeRecords(streamOf(data, 256), "test-object")) {
    seen += batch.length;
    if (seen > 0) break;
  }
  assert.ok(seen > 0);
});

Deno.test("decodeRecords() decodes a 1 GB stream with bounded memory", async () => {
  // A 1 MiB block of records (each followed by ",", padded with spaces) repeated 1024 times and
  // fed in 64 KiB views of that one block, so only the decoder's own memory can grow. Run in a
  // child process: RSS is per process, and \`deno test --parallel\` shares one.
  const lines = Array.from({ length: 700 }, (_, i) => JSON.stringify(cloudTrailRecord(i)) + ",");
  const result = await inChildProcess<
    { count: number; perBlock: number; last: DecodedRecord; growth: number }
  >(`
    const lines = ${JSON.stringify(lines)};
    const chunk = 64 * 1024;
    const block = new Uint8Array(16 * chunk).fill(0x20);
    let used = 0;
    let perBlock = 0;
    for (const line of lines) {
      const encoded = new TextEncoder().encode(line);
      if (used + encoded.length > block.length) break;
      block.set(encoded, used);
      used += encoded.length;
      perBlock++;
    }
    async function* input() {
      yield new TextEncoder().encode('{"Records":[');
      for (let r = 0; r < 1024; r++) {
        for (let at = 0; at < block.length; at += chunk) yield block.subarray(at, at + chunk);
      }
      yield new TextEncoder().encode('{"last":true}]}');
    }
    const before = Deno.memoryUsage().rss;
    let peak = before;
    let count = 0;
    let batches = 0;
    let last;
    for await (const batch of decodeRecords(input(), "test-object")) {
      count += batch.length;
      last = batch[batch.length - 1];
      if (++batches % 64 === 0) peak = Math.max(peak, Deno.memoryUsage().rss);
    }
    peak = Math.max(peak, Deno.memoryUsage().rss);
    report({ count, perBlock, last, growth: peak - before });
  `);
  assert.ok(result.perBlock > 400, `${result.perBlock} records per block`);
  assert.equal(result.count, result.perBlock * 1024 + 1);
  assert.deepEqual(result.last, { record: { last: true }, offset: 12 + 1024 * MiB });
  assert.ok(result.growth < 200 * MiB, `RSS grew by ${(result.growth / MiB).toFixed(0)} MiB`);
});

Deno.test("decodeRecords() rejects with ObjectDecodeError from the async generator", async () => {
  await assert.rejects(async () => {
    for await (const _ of decodeRecords(streamOf(bytes("{")), "test-object")) {
      // nothing to yield
    }
  }, ObjectDecodeError);
});

// ---------------------------------------------------------------------------------------------
// Deferred payloads
// ---------------------------------------------------------------------------------------------

/** Splits `text` fed in chunks of `size` bytes, deferring the pipeline's payloads. */
function splitDeferred(text: string, size: number): DecodedRecord[] {
  const splitter = new RecordSplitter("deferred.json", { defer: DEFERRED_PAYLOADS });
  const data = bytes(text);
  const out: DecodedRecord[] = [];
  for (let at = 0; at < data.length; at += size) splitter.push(data.subarray(at, at + size), out);
  return splitter.end(out);
}

Deno.test("RecordSplitter defers top-level payloads and materialize() restores them exactly", () => {
  const records: Record<string, unknown>[] = [
    ...Array.from({ length: 40 }, (_, i) => cloudTrailRecord(i)),
    // Only depth-1 keys are deferred; a value spelled like a key is not a key.
    {
      eventName: "requestParameters",
      nested: { requestParameters: { deep: [1, 2] }, responseElements: "x" },
      requestParameters: { text: '}{"],[\\', list: [{ a: null }, [], {}], "é😀": "ünï" },
      responseElements: [{ ok: true }],
    },
    // Empty, null and scalar payloads are parsed with the record.
    { eventName: "Empty", requestParameters: {}, responseElements: [] },
    { eventName: "Null", requestParameters: null, responseElements: "text" },
    { eventName: "Number", requestParameters: 12, responseElements: { "": 0 } },
  ];
  const text = JSON.stringify({ Records: records });
  for (const size of [1, 2, 5, 17, 100, 4096, 1 << 20]) {
    const out = splitDeferred(text, size);
    assert.equal(out.length, records.length, `chunks of ${size}`);
    const deferred = out.filter((item) => item.record && hasDeferred(item.record)).length;
    // The 40 records with a requestParameters object, the nested case and `{"": 0}`.
    assert.equal(deferred, 42, `chunks of ${size}`);
    out.forEach((item, i) => {
      assert.ok(item.record, item.error);
      for (const key of DEFERRED_PAYLOADS) {
        const value = records[i][key];
        const cut = typeof value === "object" && value !== null &&
          JSON.stringify(value).length >= 4;
        assert.deepEqual(
          item.record[key],
          cut ? null : value,
          `record ${i} ${key} before materialize()`,
        );
      }
      materialize(item.record);
      assert.equal(hasDeferred(item.record), false);
      assert.deepEqual(item.record, records[i], `record ${i}, chunks of ${size}`);
    });
  }
});

Deno.test("RecordSplitter defers payloads of JSON Lines records, not of a wrapper's own keys", () => {
  const a = { eventName: "A", requestParameters: { bucketName: "a" } };
  const b = { eventName: "B", responseElements: { status: "ok" } };
  const lines = splitDeferred(`${JSON.stringify(a)}\n${JSON.stringify(b)}\n`, 3);
  assert.deepEqual(lines.map((item) => item.record && hasDeferred(item.record)), [true, true]);
  lines.forEach((item) => materialize(item.record!));
  assert.deepEqual(lines.map((item) => item.record), [a, b]);
  // A wrapper whose other keys come first: only the records' payloads are deferred.
  const wrapped = splitDeferred(
    `{"requestParameters":{"not":"a record"},"Records":[${JSON.stringify(a)}]}`,
    4,
  );
  assert.equal(wrapped.length, 1);
  materialize(wrapped[0].record!);
  assert.deepEqual(wrapped[0].record, a);
});

Deno.test("materialize() keeps the last value of a payload key given twice, as JSON.parse does", () => {
  const text = '{"Records":[{"requestParameters":{"a":1},"requestParameters":{"b":2}},' +
    '{"requestParameters":{"a":1},"requestParameters":"text"}]}';
  const out = splitDeferred(text, 7);
  out.forEach((item) => materialize(item.record!));
  assert.deepEqual(out.map((item) => item.record), JSON.parse(text).Records);
});

Deno.test("materialize() names the payload that is not valid JSON", () => {
  const [item] = splitDeferred(
    '{"Records":[{"eventName":"Bad","requestParameters":{"a": tru},"responseElements":{"b":1}}]}',
    64,
  );
  assert.ok(item.record, "the rest of the record is valid: it decodes");
  assert.throws(
    () => materialize(item.record!),
    (error) =>
      error instanceof RecordError && /^requestParameters: invalid JSON/.test(error.message),
  );
});

Deno.test("decodeRecords() without defer parses payloads with the record", async () => {
  const text = JSON.stringify({ Records: [cloudTrailRecord(1)] });
  const { entries: [item] } = await collect(streamOf(bytes(text)), "plain.json");
  assert.equal(hasDeferred(item.record!), false);
  assert.deepEqual(item.record, cloudTrailRecord(1));
});
