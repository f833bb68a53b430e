/**
 * Streaming decode: bytes → CloudTrail records, one batch at a time, with bounded memory.
 *
 * The pipeline is `ObjectDecoder` = optional {@link GzipDecoder} (detected by the magic bytes
 * `1f 8b`, never by name) → {@link RecordSplitter} (a byte scanner that cuts each record out of
 * `{"Records":[…]}`, a bare array, JSON Lines or concatenated objects and parses it with
 * `JSON.parse`). Everything is synchronous so it can run inside a Worker; {@link decodeRecords} is a
 * thin async wrapper over {@link ObjectDecoder}.
 *
 * With `defer`, the object or array values of chosen top-level keys of each record (the pipeline
 * defers {@link DEFERRED_PAYLOADS}) are cut out before `JSON.parse` and kept as text for
 * {@link materialize}: most events never need them, and they are half of what parsing builds.
 *
 * Memory stays bounded: at most one record (capped by `maxRecordBytes`), one input chunk and one
 * decompressed output buffer are held at a time. Nothing recurses, so nesting depth costs no stack.
 *
 * @module
 */

import { constants, crc32, createInflateRaw } from "node:zlib";
import { errorMessage, ObjectDecodeError, RecordError, SourceReadError } from "./errors.ts";
import type { CloudTrailRecord } from "./types.ts";

/** Limits applied while decoding one object. */
export interface DecodeOptions {
  /** Cap on decompressed bytes per object. */
  maxObjectBytes: number;
  /** Cap on the bytes of one record. */
  maxRecordBytes: number;
  /** Cap on the nesting depth of one record. */
  maxDepth: number;
  /**
   * Top-level keys of a record whose object or array value is not parsed with the record but
   * kept as text until something reads it ({@link materialize}); the record holds `null` there
   * meanwhile. None by default.
   */
  defer?: readonly string[];
}

/** Default limits: 2 GiB per object, 4 MiB per record, 500 levels. */
export const defaults = {
  maxObjectBytes: 2 * 1024 ** 3,
  maxRecordBytes: 4 * 1024 ** 2,
  maxDepth: 500,
} satisfies DecodeOptions;

/**
 * The parts of a CloudTrail record that only some rules and custom mappings read, and that take
 * about half of `JSON.parse`'s work on a typical record: the pipeline parses them when something
 * needs them ({@link DecodeOptions.defer}). `tlsDetails` (~150 bytes on most API calls) takes
 * another 3–4% off decoding.
 */
export const DEFERRED_PAYLOADS: readonly string[] = [
  "requestParameters",
  "responseElements",
  "tlsDetails",
];

/** Where a record keeps its deferred payloads: `[key, text, key, text, …]`. */
const DEFERRED: unique symbol = Symbol("deferred payloads");
type Deferred = string[];

/**
 * Parses the payloads that were deferred when `record` was decoded and puts them in place; does
 * nothing for a record without any. Throws a {@link RecordError} naming the key when one is not
 * valid JSON.
 *
 * @example
 * ```ts
 * import { materialize, RecordSplitter } from "./decode.ts";
 * const splitter = new RecordSplitter("example.json", { defer: ["requestParameters"] });
 * const [{ record }] = splitter.push(new TextEncoder().encode(
 *   '{"Records":[{"eventName":"RunInstances","requestParameters":{"instanceType":"t3.micro"}}]}',
 * ));
 * record!.requestParameters; // null until materialized
 * materialize(record!);
 * record!.requestParameters; // { instanceType: "t3.micro" }
 * ```
 */
export function materialize(record: CloudTrailRecord): void {
  const deferred = (record as { [DEFERRED]?: Deferred })[DEFERRED];
  if (deferred === undefined) return;
  // The symbol was the last property added: deleting it keeps the object's fast shape.
  delete (record as { [DEFERRED]?: Deferred })[DEFERRED];
  // Last first: a key given twice keeps its last value, as with JSON.parse.
  for (let k = deferred.length - 2; k >= 0; k -= 2) {
    const key = deferred[k];
    if (record[key] !== null) continue;
    try {
      record[key] = JSON.parse(deferred[k + 1]);
    } catch (error) {
      throw new RecordError(`${key}: invalid JSON: ${(error as Error).message}`);
    }
  }
}

/** Whether `record` has payloads that {@link materialize} has not parsed yet. */
export function hasDeferred(record: CloudTrailRecord): boolean {
  return (record as { [DEFERRED]?: Deferred })[DEFERRED] !== undefined;
}

/** One decoded record, or a failure confined to one record. `offset` is where it starts. */
export type DecodedRecord =
  | { record: CloudTrailRecord; offset: number; error?: undefined }
  | { error: string; offset: number; record?: undefined };

/** Whether `bytes` starts with the gzip magic bytes `1f 8b`. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

// ---------------------------------------------------------------------------------------------
// Record splitter
// ---------------------------------------------------------------------------------------------

// Parser states between and inside values.
const S_TOP = 0; // between top-level values
const S_ARRAY_FIRST = 1; // after the `[` of a records array
const S_ARRAY_NEXT = 2; // after a `,` in a records array
const S_ARRAY_AFTER = 3; // after an element of a records array
const S_VALUE = 4; // inside a value (scanned by #scan)
const S_TOKEN = 5; // inside a number or literal
const S_KEY_COLON = 6; // after a depth-1 `"Records"` string of a top-level object
const S_RECORDS_VALUE = 7; // after `"Records":`

// What the value being scanned is.
const K_RECORD = 0; // an object element of a records array
const K_CANDIDATE = 1; // a top-level object: a record, unless it turns out to hold `Records`
const K_OTHER = 2; // an array or string where a record was expected
const K_SKIP = 3; // the rest of a wrapper object after its `Records` array

// What #scan stopped at.
const R_MORE = 0; // the chunk ended inside the value
const R_END = 1; // the value ended
const R_KEY = 2; // a depth-1 `"Records"` string ended in a top-level object

/** Flush the batch of complete records once its text reaches this many bytes. */
const BATCH_BYTES = 512 * 1024;
/** Longest number or literal kept verbatim for the error message. */
const TOKEN_MAX = 64;
/** Nesting levels whose bracket types are checked (deeper records are errors anyway). */
const STACK_MAX = 1 << 20;

const BOM = [0xef, 0xbb, 0xbf];
const NULL_BYTES = new Uint8Array([0x6e, 0x75, 0x6c, 0x6c]); // null
const RECORDS_KEY = [0x52, 0x65, 0x63, 0x6f, 0x72, 0x64, 0x73]; // Records

/** Bytes that can start a number or literal, and bytes that can continue one. */
const TOKEN_START = new Uint8Array(256);
const TOKEN_PART = new Uint8Array(256);
for (const c of "-0123456789tfn") TOKEN_START[c.charCodeAt(0)] = 1;
for (let c = 0; c < 256; c++) {
  const ch = String.fromCharCode(c);
  if (/[0-9A-Za-z+.\-]/.test(ch)) TOKEN_PART[c] = 1;
}

/** A record entry whose `record` is filled in when its batch is parsed. */
type Slot = { record: CloudTrailRecord; offset: number };
const UNPARSED = Object.freeze({}) as CloudTrailRecord;

function describeByte(c: number): string {
  return c > 0x20 && c < 0x7f
    ? `'${String.fromCharCode(c)}'`
    : `byte 0x${c.toString(16).padStart(2, "0")}`;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  const t = typeof value;
  return t === "object" ? "an object" : `a ${t}`;
}

/**
 * Splits decompressed JSON bytes into records, synchronously, one chunk at a time.
 *
 * Accepts `{"Records":[…]}` (other top-level keys ignored), a bare array of records, JSON Lines,
 * a single record object and several concatenated objects, with an optional UTF-8 BOM. A
 * top-level object is a wrapper iff it has a `Records` key at depth 1.
 *
 * Records are appended to the `out` array in stream order. Problems confined to one record
 * (invalid JSON, not an object, over `maxRecordBytes`, deeper than `maxDepth`) become
 * `{error, offset}` entries; structural problems throw {@link ObjectDecodeError}, after `out`
 * received every record decoded before the failure. Pass your own `out` to keep them.
 *
 * @example Split a stream fed in pieces
 * ```ts
 * import assert from "node:assert/strict";
 * import { RecordSplitter } from "./decode.ts";
 *
 * const splitter = new RecordSplitter("example.json");
 * const bytes = new TextEncoder().encode('{"Records":[{"eventName":"A"},{"eventName":"B"}]}');
 * const first = splitter.push(bytes.subarray(0, 30));
 * assert.deepEqual(first, [{ record: { eventName: "A" }, offset: 12 }]);
 * const rest = splitter.push(bytes.subarray(30));
 * splitter.end(rest);
 * assert.deepEqual(rest, [{ record: { eventName: "B" }, offset: 30 }]);
 * ```
 */
export class RecordSplitter {
  readonly #object: string;
  readonly #maxRecordBytes: number;
  readonly #maxDepth: number;
  readonly #decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  #state = S_TOP;
  /** Absolute offset of the current chunk's first byte. */
  #base = 0;
  /** The current chunk, for #scan to read four bytes at a time. */
  #view: DataView | undefined;
  #bomAt = 0;
  #inArray = false;
  #wrapper = false;
  #arrayStart = 0;

  // The value being scanned.
  #kind = K_RECORD;
  #valueStart = 0;
  #segStart = 0;
  #oversize = false;
  #tooDeep = false;
  #depth = 0;
  #inStr = false;
  #esc = false;
  #strStart = 0;
  #other = "";
  #scanResult = R_MORE;
  readonly #stack: Uint8Array;
  #carry = new Uint8Array(0);
  #carryLen = 0;
  #token = "";
  #tokenLen = 0;

  // Complete records waiting for one JSON.parse: `[rec,rec,…]` in #scratch.
  #scratch = new Uint8Array(64 * 1024);
  #scratchLen = 0;
  /**
   * Records queued: their spans in #scratch (two numbers each), their slots in #out and their
   * deferred payloads (key index, start, end in #payloads, or undefined). The arrays are reused
   * from batch to batch: truncating them would free and regrow their stores every batch.
   */
  #queued = 0;
  readonly #spans: number[] = [];
  readonly #slots: number[] = [];
  readonly #slotDeferred: (number[] | undefined)[] = [];
  /** The deferred payloads of the queued records, one after the other. */
  #payloads = new Uint8Array(64 * 1024);
  #payloadsLen = 0;
  #out: DecodedRecord[] = [];

  // Deferred payloads (DecodeOptions.defer): the keys, their bytes, key indexes by byte length.
  readonly #deferKeys: readonly string[];
  readonly #deferBytes: Uint8Array[];
  readonly #deferByLength: number[][] = [];
  /** 1 for the bytes a deferred key starts with. */
  readonly #deferFirst = new Uint8Array(256);
  /** Of the record being scanned: the deferred key whose value may come next, or -1. */
  #pendingKey = -1;
  /** The deferred key whose value is being scanned (-1: none), and where that value starts. */
  #openKey = -1;
  #openAt = 0;
  /** The record's deferred values: key index, start, end (absolute offsets). */
  readonly #deferSpans: number[] = [];
  /** Numbers in use in #deferSpans (reset by count: truncating the array would free its store). */
  #deferCount = 0;

  /** The last bytes of the stream before the current chunk (for keys split across chunks). */
  readonly #tail: Uint8Array;
  #tailLen = 0;
  #failure: Error | undefined;

  /** Creates a splitter for `object` (named in errors) with the given limits. */
  constructor(object: string, options: Partial<DecodeOptions> = {}) {
    const opts = { ...defaults, ...options };
    this.#object = object;
    this.#maxRecordBytes = opts.maxRecordBytes;
    this.#maxDepth = opts.maxDepth;
    this.#stack = new Uint8Array(Math.max(1, Math.min(opts.maxDepth + 1, STACK_MAX)));
    this.#deferKeys = [...opts.defer ?? []];
    const encoder = new TextEncoder();
    this.#deferBytes = this.#deferKeys.map((key) => encoder.encode(key));
    this.#deferBytes.forEach((bytes, i) => {
      (this.#deferByLength[bytes.length] ??= []).push(i);
      if (bytes.length > 0) this.#deferFirst[bytes[0]] = 1;
    });
    const longest = Math.max(0, ...this.#deferBytes.map((bytes) => bytes.length));
    this.#tail = new Uint8Array(Math.max(16, longest + 2));
  }

  /** Bytes consumed so far (the decompressed offset of the next byte). */
  get offset(): number {
    return this.#base;
  }

  /**
   * Feeds the next chunk. The splitter keeps no reference to `chunk`, so the caller may reuse
   * it. Returns `out` with the records completed by this chunk appended.
   */
  push(chunk: Uint8Array, out: DecodedRecord[] = []): DecodedRecord[] {
    if (this.#failure) throw this.#failure;
    if (chunk.length === 0) return out;
    this.#out = out;
    try {
      this.#run(chunk);
      this.#flush();
    } catch (error) {
      this.#abort(error);
    }
    return out;
  }

  /** Signals the end of the input; throws if it ends inside a value or an array. */
  end(out: DecodedRecord[] = []): DecodedRecord[] {
    if (this.#failure) throw this.#failure;
    this.#out = out;
    try {
      if (this.#state === S_TOKEN) this.#endToken();
      const end = this.#base;
      switch (this.#state) {
        case S_TOP:
          if (this.#bomAt === 1 || this.#bomAt === 2) this.#fail(end, "truncated byte order mark");
          break;
        case S_VALUE:
        case S_KEY_COLON:
          this.#fail(
            end,
            `unexpected end of input (${
              this.#inStr ? "a string in " : ""
            }the value opened at byte ${this.#valueStart} is not closed)`,
          );
          break;
        case S_RECORDS_VALUE:
          this.#fail(end, 'unexpected end of input after "Records":');
          break;
        default:
          this.#fail(
            end,
            `unexpected end of input (the array opened at byte ${this.#arrayStart} is not closed)`,
          );
      }
      this.#flush();
      this.#failure = new Error("RecordSplitter.end() was already called");
    } catch (error) {
      this.#abort(error);
    }
    return out;
  }

  #abort(error: unknown): never {
    if (!this.#failure) {
      try {
        this.#flush();
      } catch {
        // keep the original error
      }
      this.#failure = error instanceof Error ? error : new Error(String(error));
    }
    throw this.#failure;
  }

  #fail(offset: number, reason: string): never {
    throw new ObjectDecodeError(this.#object, offset, reason);
  }

  #run(b: Uint8Array): void {
    const n = b.length;
    const base = this.#base;
    this.#view = n >= 16 ? new DataView(b.buffer, b.byteOffset, n) : undefined;
    let i = 0;
    this.#segStart = 0;
    scan: while (i < n) {
      const state = this.#state;
      if (state === S_VALUE) {
        i = this.#scan(b, i, n);
        const r = this.#scanResult;
        if (r === R_END) this.#endValue(b, i);
        else if (r === R_KEY) this.#state = S_KEY_COLON;
        continue;
      }
      if (state === S_TOKEN) {
        let c = b[i];
        while (TOKEN_PART[c] === 1) {
          if (this.#tokenLen < TOKEN_MAX) this.#token += String.fromCharCode(c);
          this.#tokenLen++;
          if (++i === n) break scan;
          c = b[i];
        }
        this.#endToken();
        continue;
      }
      let c = b[i];
      if (state === S_TOP && base + i < 3 && this.#bomAt === base + i) {
        if (c === BOM[this.#bomAt]) {
          this.#bomAt++;
          i++;
          continue;
        }
        if (this.#bomAt > 0) this.#fail(base + i, "truncated byte order mark");
        this.#bomAt = 3;
      }
      while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
        if (++i === n) break scan;
        c = b[i];
      }
      switch (state) {
        case S_TOP:
          if (c === 0x7b) this.#startValue(K_CANDIDATE, i, c);
          else if (c === 0x5b) {
            this.#inArray = true;
            this.#wrapper = false;
            this.#arrayStart = base + i;
            this.#state = S_ARRAY_FIRST;
          } else this.#startElement(i, c);
          i++;
          break;
        case S_ARRAY_FIRST:
          if (c === 0x5d) this.#closeArray(i);
          else this.#startElement(i, c);
          i++;
          break;
        case S_ARRAY_NEXT:
          this.#startElement(i, c);
          i++;
          break;
        case S_ARRAY_AFTER:
          if (c === 0x2c) this.#state = S_ARRAY_NEXT;
          else if (c === 0x5d) this.#closeArray(i);
          else this.#fail(base + i, `expected ',' or ']' after a record, got ${describeByte(c)}`);
          i++;
          break;
        case S_KEY_COLON:
          if (c === 0x3a) {
            // `"Records":` at depth 1: this object is a wrapper, not a record.
            this.#carryLen = 0;
            this.#oversize = false;
            this.#deferCount = 0;
            this.#openKey = -1;
            this.#pendingKey = -1;
            this.#state = S_RECORDS_VALUE;
            i++;
          } else this.#state = S_VALUE; // it was a value; rescan this byte as part of the object
          break;
        case S_RECORDS_VALUE:
          if (c !== 0x5b) {
            this.#fail(base + i, `"Records" is not an array (got ${describeByte(c)})`);
          }
          this.#inArray = true;
          this.#wrapper = true;
          this.#arrayStart = base + i;
          this.#state = S_ARRAY_FIRST;
          i++;
          break;
      }
    }
    // The chunk ended: keep what a record needs, and the last bytes for key checks.
    if (
      (this.#state === S_VALUE || this.#state === S_KEY_COLON) &&
      (this.#kind === K_RECORD || this.#kind === K_CANDIDATE) && !this.#oversize
    ) {
      const len = n - this.#segStart;
      if (this.#carryLen + len > this.#maxRecordBytes) {
        this.#oversize = true;
        this.#carryLen = 0;
        if (this.#carry.length > 1024 * 1024) this.#carry = new Uint8Array(0);
      } else {
        if (this.#carryLen + len > this.#carry.length) {
          const grown = new Uint8Array(
            Math.max(this.#carryLen + len, this.#carry.length * 2, 4096),
          );
          grown.set(this.#carry.subarray(0, this.#carryLen));
          this.#carry = grown;
        }
        this.#carry.set(b.subarray(this.#segStart, n), this.#carryLen);
        this.#carryLen += len;
      }
    }
    const tail = this.#tail;
    if (n >= tail.length) {
      tail.set(b.subarray(n - tail.length));
      this.#tailLen = tail.length;
    } else {
      const keep = Math.min(this.#tailLen, tail.length - n);
      tail.copyWithin(0, this.#tailLen - keep, this.#tailLen);
      tail.set(b, keep);
      this.#tailLen = keep + n;
    }
    this.#base = base + n;
  }

  /** Starts a value at `b[i]`, whose first byte `c` is `{`, `[` or `"`. */
  #startValue(kind: number, i: number, c: number): void {
    this.#kind = kind;
    this.#valueStart = this.#base + i;
    this.#segStart = i;
    this.#oversize = false;
    this.#tooDeep = false;
    this.#carryLen = 0;
    this.#esc = false;
    this.#pendingKey = -1;
    this.#openKey = -1;
    this.#deferCount = 0;
    if (c === 0x22) {
      this.#inStr = true;
      this.#depth = 0;
    } else {
      this.#inStr = false;
      this.#stack[0] = c;
      this.#depth = 1;
      if (this.#maxDepth < 1) this.#tooDeep = true;
    }
    this.#state = S_VALUE;
  }

  /** Starts whatever stands where a record must start. */
  #startElement(i: number, c: number): void {
    if (c === 0x7b) {
      this.#startValue(this.#inArray ? K_RECORD : K_CANDIDATE, i, c);
    } else if (c === 0x5b || c === 0x22) {
      this.#other = c === 0x22 ? "a string" : "an array";
      this.#startValue(K_OTHER, i, c);
    } else if (TOKEN_START[c] === 1) {
      this.#valueStart = this.#base + i;
      this.#token = String.fromCharCode(c);
      this.#tokenLen = 1;
      this.#state = S_TOKEN;
    } else {
      this.#fail(
        this.#base + i,
        this.#inArray && c === 0x5d
          ? "expected a record after ','"
          : `unexpected ${describeByte(c)} where a value must start`,
      );
    }
  }

  #closeArray(i: number): void {
    this.#inArray = false;
    if (this.#wrapper) {
      // Skip the rest of the wrapper object (other keys are ignored).
      this.#wrapper = false;
      this.#startValue(K_SKIP, i, 0x7b);
      this.#valueStart = this.#arrayStart;
    } else this.#state = S_TOP;
  }

  #endToken(): void {
    const text = this.#token;
    let reason: string;
    if (this.#tokenLen > TOKEN_MAX) reason = `invalid JSON: unexpected token "${text}…"`;
    else {
      try {
        reason = `record is not an object (got ${typeName(JSON.parse(text))})`;
      } catch (error) {
        reason = `invalid JSON: ${(error as Error).message}`;
      }
    }
    this.#out.push({ error: reason, offset: this.#valueStart });
    this.#token = "";
    this.#state = this.#inArray ? S_ARRAY_AFTER : S_TOP;
  }

  /** The value that #scan finished just before `b[e]`. */
  #endValue(b: Uint8Array, e: number): void {
    const kind = this.#kind;
    const offset = this.#valueStart;
    if (kind === K_RECORD || kind === K_CANDIDATE) {
      if (this.#tooDeep) {
        this.#out.push({ error: `record nesting exceeds ${this.#maxDepth} levels`, offset });
      } else if (this.#oversize || this.#base + e - offset > this.#maxRecordBytes) {
        this.#out.push({ error: `record exceeds ${this.#maxRecordBytes} bytes`, offset });
      } else this.#addToBatch(b, this.#segStart, e, offset);
      this.#carryLen = 0;
      this.#state = kind === K_RECORD ? S_ARRAY_AFTER : S_TOP;
    } else if (kind === K_OTHER) {
      this.#out.push({ error: `record is not an object (got ${this.#other})`, offset });
      this.#state = this.#inArray ? S_ARRAY_AFTER : S_TOP;
    } else this.#state = S_TOP;
  }

  /**
   * The hot loop: scans the value in progress from `b[i]`, tracking strings, escapes and
   * bracket depth. Returns the index after the value's end, or `n` when the chunk ends first.
   */
  #scan(b: Uint8Array, i: number, n: number): number {
    const stack = this.#stack;
    const cap = stack.length;
    const maxDepth = this.#maxDepth;
    const keyCheck = this.#kind === K_CANDIDATE;
    const deferring = this.#deferKeys.length > 0 && (keyCheck || this.#kind === K_RECORD);
    const trackKeys = keyCheck || deferring;
    let depth = this.#depth;
    let inStr = this.#inStr;
    let tooDeep = this.#tooDeep;
    let result = R_MORE;
    // Read on every call: a load first reached late (a chunk that ends inside a string) had no
    // type feedback, and cost the optimized loop a deoptimization.
    const esc = this.#esc;
    if (inStr && esc) {
      this.#esc = false;
      i++;
    }
    const view = this.#view;
    outer: for (;;) {
      if (inStr) {
        // To the closing quote, skipping escapes: four bytes at a time while none of them is a
        // quote or a backslash.
        const end4 = n - 4;
        while (i < n) {
          let c = -1;
          if (view !== undefined) {
            while (i <= end4) {
              const v = view.getUint32(i, true);
              const q = v ^ 0x22222222;
              const e = v ^ 0x5c5c5c5c;
              const hit = (((q - 0x01010101) & ~q) | ((e - 0x01010101) & ~e)) & 0x80808080;
              if (hit !== 0) {
                // The lowest flagged byte is the first quote or backslash (little-endian).
                i += (31 - Math.clz32(hit & -hit)) >> 3;
                c = b[i];
                break;
              }
              i += 4;
            }
          }
          if (c < 0) { while (i < n && (c = b[i]) !== 0x22 && c !== 0x5c) i++; }
          if (i >= n || c === 0x22) break;
          i += 2; // a backslash and the byte it escapes
        }
        if (i >= n) {
          this.#esc = i > n;
          i = n;
          break;
        }
        inStr = false;
        i++;
        if (depth <= 1) {
          if (depth === 0) {
            result = R_END;
            break;
          }
          if (deferring) {
            // Most strings are told apart by their first byte, without a call.
            const first = this.#strStart + 1 - this.#base;
            this.#pendingKey = first >= 0 && first < i && this.#deferFirst[b[first]] === 0
              ? -1
              : this.#deferKeyAt(b, i);
          }
          if (keyCheck && this.#isRecordsKey(b, i)) {
            result = R_KEY;
            break;
          }
        }
      }
      while (i < n) {
        const c = b[i++];
        if (c === 0x22) {
          inStr = true;
          if (trackKeys && depth === 1) this.#strStart = this.#base + i - 1;
          continue outer;
        }
        const k = c | 0x20;
        if (k === 0x7b) {
          // The object or array value of a deferred key starts.
          if (depth === 1 && this.#pendingKey >= 0) {
            this.#openKey = this.#pendingKey;
            this.#openAt = this.#base + i - 1;
            this.#pendingKey = -1;
          }
          if (depth < cap) stack[depth] = c;
          if (++depth > maxDepth) tooDeep = true;
        } else if (k === 0x7d) {
          --depth;
          if (depth < cap && stack[depth] !== c - 2) {
            this.#fail(this.#base + i - 1, `mismatched ${describeByte(c)}`);
          }
          if (depth === 1 && this.#openKey >= 0) {
            // Shorter than `null` (an empty `{}` or `[]`): parsed with the record.
            if (this.#base + i - this.#openAt >= NULL_BYTES.length) {
              const spans = this.#deferSpans;
              spans[this.#deferCount++] = this.#openKey;
              spans[this.#deferCount++] = this.#openAt;
              spans[this.#deferCount++] = this.#base + i;
            }
            this.#openKey = -1;
          }
          if (depth === 0) {
            result = R_END;
            break outer;
          }
        }
      }
      break;
    }
    this.#depth = depth;
    this.#inStr = inStr;
    this.#tooDeep = tooDeep;
    this.#scanResult = result;
    return i;
  }

  /** Whether the string that closed just before `b[i]` is `"Records"` (it may span chunks). */
  #isRecordsKey(b: Uint8Array, i: number): boolean {
    const close = this.#base + i - 1;
    const start = this.#strStart;
    if (close - start !== 8) return false;
    for (let k = 0; k < 7; k++) {
      if (this.#byteAt(b, start + 1 + k) !== RECORDS_KEY[k]) return false;
    }
    return true;
  }

  /**
   * The index of the deferred key equal to the string that closed just before `b[i]`, or -1
   * (also when its bytes are no longer at hand: the value is then parsed with the record).
   */
  #deferKeyAt(b: Uint8Array, i: number): number {
    const start = this.#strStart;
    const found = this.#deferByLength[this.#base + i - 2 - start];
    if (found === undefined) return -1;
    next: for (const d of found) {
      const key = this.#deferBytes[d];
      for (let k = 0; k < key.length; k++) {
        if (this.#byteAt(b, start + 1 + k) !== key[k]) continue next;
      }
      return d;
    }
    return -1;
  }

  /**
   * The byte at absolute offset `abs`, in `b` or, before it, in the last chunk's tail. One load
   * for both (the same kind of array): a second load site, first reached when a key spans two
   * chunks, would have no type feedback and deoptimize the scan that inlines this.
   */
  #byteAt(b: Uint8Array, abs: number): number {
    const rel = abs - this.#base;
    const tail = this.#tail;
    const tailLen = this.#tailLen;
    return (rel >= 0 ? b : tail)[rel + (rel >= 0 ? 0 : tailLen)];
  }

  /** Queues a complete record (`#carry` + `b[s:e]`) for the next batched JSON.parse. */
  #addToBatch(b: Uint8Array, s: number, e: number, offset: number): void {
    const carryLen = this.#carryLen;
    const len = carryLen + e - s;
    let at = this.#scratchLen;
    if (at + len + 2 > this.#scratch.length) {
      const grown = new Uint8Array(Math.max(at + len + 2, this.#scratch.length * 2));
      grown.set(this.#scratch.subarray(0, at));
      this.#scratch = grown;
    }
    const scratch = this.#scratch;
    scratch[at++] = at === 1 ? 0x5b : 0x2c;
    const start = at;
    if (carryLen > 0) {
      scratch.set(this.#carry.subarray(0, carryLen), at);
      at += carryLen;
    }
    scratch.set(b.subarray(s, e), at);
    at += e - s;
    let deferred: number[] | undefined;
    const spans = this.#deferSpans;
    const count = this.#deferCount;
    if (count > 0) {
      // Move the deferred values to #payloads (each leaves `null`).
      deferred = [];
      const shift = start - offset; // absolute offset → index in scratch
      let write = shift + spans[1];
      for (let k = 0; k < count; k += 3) {
        const from = shift + spans[k + 1];
        const to = shift + spans[k + 2];
        let p = this.#payloadsLen;
        if (p + to - from > this.#payloads.length) {
          const grown = new Uint8Array(Math.max(p + to - from, this.#payloads.length * 2));
          grown.set(this.#payloads.subarray(0, p));
          this.#payloads = grown;
        }
        this.#payloads.set(scratch.subarray(from, to), p);
        deferred.push(spans[k], p, p += to - from);
        this.#payloadsLen = p;
        scratch.set(NULL_BYTES, write);
        write += NULL_BYTES.length;
        const until = k + 3 < count ? shift + spans[k + 4] : at;
        scratch.copyWithin(write, to, until);
        write += until - to;
      }
      at = write;
      this.#deferCount = 0;
    }
    this.#scratchLen = at;
    const q = this.#queued++;
    this.#spans[2 * q] = start;
    this.#spans[2 * q + 1] = at;
    this.#slotDeferred[q] = deferred;
    this.#slots[q] = this.#out.length;
    this.#out.push({ record: UNPARSED, offset });
    if (at >= BATCH_BYTES) this.#flush();
  }

  /** The deferred payloads of the queued records as texts (empties #payloads). */
  #deferredTexts(): (Deferred | undefined)[] {
    const slots = this.#slotDeferred;
    const count = this.#queued;
    const out: (Deferred | undefined)[] = new Array(count);
    const length = this.#payloadsLen;
    if (length > 0) {
      const bytes = this.#payloads;
      // One decode for the batch; its offsets are the byte offsets when it is all ASCII.
      const all = this.#decoder.decode(bytes.subarray(0, length));
      const ascii = all.length === length;
      for (let k = 0; k < count; k++) {
        const spans = slots[k];
        if (spans === undefined) continue;
        const texts: Deferred = [];
        for (let j = 0; j < spans.length; j += 3) {
          const from = spans[j + 1];
          const to = spans[j + 2];
          texts.push(
            this.#deferKeys[spans[j]],
            ascii ? all.slice(from, to) : this.#decoder.decode(bytes.subarray(from, to)),
          );
        }
        out[k] = texts;
      }
      this.#payloadsLen = 0;
      if (bytes.length > 4 * BATCH_BYTES) this.#payloads = new Uint8Array(64 * 1024);
    }
    slots.fill(undefined, 0, count);
    return out;
  }

  /** Parses the queued records with one JSON.parse, or one by one if that fails. */
  #flush(): void {
    const slots = this.#slots;
    const count = this.#queued;
    if (count === 0) return;
    const out = this.#out as Slot[];
    const scratch = this.#scratch;
    const decoder = this.#decoder;
    scratch[this.#scratchLen] = 0x5d;
    let parsed: unknown;
    try {
      parsed = JSON.parse(decoder.decode(scratch.subarray(0, this.#scratchLen + 1)));
    } catch {
      parsed = undefined;
    }
    const deferred = this.#deferredTexts();
    if (Array.isArray(parsed) && parsed.length === count) {
      for (let k = 0; k < count; k++) {
        const record = parsed[k];
        if (deferred[k] !== undefined) record[DEFERRED] = deferred[k];
        out[slots[k]].record = record;
      }
    } else {
      const spans = this.#spans;
      for (let k = 0; k < count; k++) {
        const slot = out[slots[k]];
        try {
          slot.record = JSON.parse(
            decoder.decode(scratch.subarray(spans[2 * k], spans[2 * k + 1])),
          );
          if (deferred[k] !== undefined) {
            (slot.record as { [DEFERRED]?: Deferred })[DEFERRED] = deferred[k];
          }
        } catch (error) {
          this.#out[slots[k]] = {
            error: `invalid JSON: ${(error as Error).message}`,
            offset: slot.offset,
          };
        }
      }
    }
    this.#scratchLen = 0;
    this.#queued = 0;
    if (scratch.length > 4 * BATCH_BYTES) this.#scratch = new Uint8Array(64 * 1024);
  }
}

// ---------------------------------------------------------------------------------------------
// Gzip
// ---------------------------------------------------------------------------------------------

/** The synchronous native handle behind node:zlib streams (the same shape as Node's binding). */
interface ZlibHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOff: number,
    inLen: number,
    output: Uint8Array,
    outOff: number,
    outLen: number,
    writeState: Uint32Array,
  ): void;
  reset(): void;
  onerror: (message: string, errno: number) => void;
}

interface ZlibInternals {
  _handle?: ZlibHandle;
  _writeState?: Uint32Array;
  close(): void;
}

const G_HEADER = 0;
const G_BODY = 1;
const G_TRAILER = 2;
const G_DONE = 3;
const HEADER_MAX = 256 * 1024;

/** Length of the gzip member header in `h[0:len]`, or -1 if more bytes are needed. */
function gzipHeaderLength(h: Uint8Array, len: number): number {
  if (len < 10) return -1;
  if (h[2] !== 8) throw new TypeError(`unknown gzip compression method ${h[2]}`);
  const flags = h[3];
  if (flags & 0xe0) throw new TypeError("reserved gzip header flags set");
  let p = 10;
  if (flags & 4) {
    if (len < p + 2) return -1;
    p += 2 + (h[p] | (h[p + 1] << 8));
    if (len < p) return -1;
  }
  for (const flag of [8, 16]) {
    if (flags & flag) {
      const zero = h.subarray(0, len).indexOf(0, p);
      if (zero < 0) return -1;
      p = zero + 1;
    }
  }
  if (flags & 2) p += 2;
  return len < p ? -1 : p;
}

/**
 * Streaming, synchronous gunzip of one object, for multi-member gzip (`cat a.gz b.gz`).
 *
 * Parses each member's header and trailer itself and inflates the deflate data with node:zlib's
 * native raw-inflate handle, so it knows exactly where each member ends: bytes after a member
 * must be another member (`1f 8b`) or the end, anything else throws "trailing garbage". The CRC32
 * and length of every member are checked. Decompressed bytes go to `onData` in views of one
 * reused buffer: consume or copy them before returning.
 *
 * @example Gunzip two concatenated members
 * ```ts
 * import assert from "node:assert/strict";
 * import { gzipSync } from "node:zlib";
 * import { GzipDecoder } from "./decode.ts";
 *
 * const both = new Uint8Array([...gzipSync("hello "), ...gzipSync("world")]);
 * let text = "";
 * const gunzip = new GzipDecoder("example.gz", (bytes) => text += new TextDecoder().decode(bytes));
 * gunzip.push(both);
 * gunzip.end();
 * assert.equal(text, "hello world");
 * assert.equal(gunzip.members, 2);
 * ```
 */
export class GzipDecoder {
  readonly #object: string;
  readonly #onData: (bytes: Uint8Array) => void;
  readonly #stream: ZlibInternals;
  readonly #handle: ZlibHandle;
  readonly #writeState: Uint32Array;
  readonly #buffer: Uint8Array;
  #zlibError: string | undefined;
  #state = G_HEADER;
  /** Compressed offset of the current chunk. */
  #base = 0;
  #memberStart = 0;
  #members = 0;
  #header = new Uint8Array(0);
  #headerLen = 0;
  readonly #trailer = new Uint8Array(8);
  #trailerLen = 0;
  #crc = 0;
  #size = 0;
  #closed = false;

  /** Creates a decoder that hands decompressed bytes to `onData`. */
  constructor(object: string, onData: (bytes: Uint8Array) => void, bufferSize = 256 * 1024) {
    this.#object = object;
    this.#onData = onData;
    const stream = createInflateRaw() as unknown as ZlibInternals;
    if (
      typeof stream._handle?.writeSync !== "function" ||
      !(stream._writeState instanceof Uint32Array)
    ) {
      stream.close();
      throw new Error("node:zlib in this runtime has no synchronous inflate handle");
    }
    this.#stream = stream;
    this.#handle = stream._handle;
    this.#writeState = stream._writeState;
    this.#handle.onerror = (message) => {
      this.#zlibError = message || "invalid deflate data";
    };
    this.#buffer = new Uint8Array(bufferSize);
  }

  /** Number of complete members so far. */
  get members(): number {
    return this.#members;
  }

  /** Feeds the next compressed chunk; decompressed bytes go to `onData` before it returns. */
  push(chunk: Uint8Array): void {
    if (this.#state === G_DONE) throw new Error("GzipDecoder is closed");
    const n = chunk.length;
    let i = 0;
    try {
      while (i < n) {
        if (this.#state === G_HEADER) i = this.#readHeader(chunk, i, n);
        else if (this.#state === G_BODY) i = this.#inflate(chunk, i, n);
        else i = this.#readTrailer(chunk, i, n);
      }
    } catch (error) {
      this.close();
      throw error;
    }
    this.#base += n;
  }

  /** Signals the end of the compressed input; throws if the last member is incomplete. */
  end(): void {
    if (this.#state === G_DONE) throw new Error("GzipDecoder is closed");
    const complete = this.#state === G_HEADER && this.#headerLen === 0 && this.#members > 0;
    this.close();
    if (!complete) this.#fail(this.#base, "gzip stream truncated");
  }

  /** Releases the native handle (idempotent). */
  close(): void {
    this.#state = G_DONE;
    if (!this.#closed) {
      this.#closed = true;
      this.#stream.close();
    }
  }

  #fail(offset: number, reason: string): never {
    throw new ObjectDecodeError(this.#object, offset, reason);
  }

  #readHeader(chunk: Uint8Array, i: number, n: number): number {
    if (this.#headerLen === 0) this.#memberStart = this.#base + i;
    const before = this.#headerLen;
    const take = Math.min(n - i, 1024, HEADER_MAX - before);
    if (this.#header.length < before + take) {
      const grown = new Uint8Array(Math.min(HEADER_MAX, Math.max(before + take, 2 * before)));
      grown.set(this.#header.subarray(0, before));
      this.#header = grown;
    }
    const h = this.#header;
    h.set(chunk.subarray(i, i + take), before);
    const len = before + take;
    this.#headerLen = len;
    if (h[0] !== 0x1f || (len > 1 && h[1] !== 0x8b)) {
      this.#fail(
        this.#memberStart,
        this.#members > 0
          ? `trailing garbage after gzip member ${this.#members}`
          : "not a gzip stream",
      );
    }
    let headerLength: number;
    try {
      headerLength = gzipHeaderLength(h, len);
    } catch (error) {
      this.#fail(this.#memberStart, (error as Error).message);
    }
    if (headerLength < 0) {
      if (len >= HEADER_MAX) this.#fail(this.#memberStart, "gzip header too long");
      return i + take;
    }
    this.#headerLen = 0;
    this.#state = G_BODY;
    this.#crc = 0;
    this.#size = 0;
    if (this.#members > 0) this.#handle.reset();
    return i + headerLength - before;
  }

  #inflate(chunk: Uint8Array, i: number, n: number): number {
    const handle = this.#handle;
    const ws = this.#writeState;
    const out = this.#buffer;
    const outLen = out.length;
    for (;;) {
      const inLen = n - i;
      try {
        handle.writeSync(constants.Z_NO_FLUSH, chunk, i, inLen, out, 0, outLen, ws);
      } catch (error) {
        this.#zlibError ??= (error as Error).message;
      }
      if (this.#zlibError !== undefined) {
        this.#fail(this.#base + i, `gzip data corrupt (${this.#zlibError})`);
      }
      const availOut = ws[0];
      const availIn = ws[1];
      i += inLen - availIn;
      const produced = outLen - availOut;
      if (produced > 0) {
        const view = out.subarray(0, produced);
        this.#crc = crc32(view, this.#crc);
        this.#size += produced;
        this.#onData(view);
      }
      if (availOut === 0) continue; // the buffer filled up: more output may be pending
      if (availIn > 0) {
        // Output space was left and input remains: the deflate stream has ended.
        this.#state = G_TRAILER;
        this.#trailerLen = 0;
      }
      return i;
    }
  }

  #readTrailer(chunk: Uint8Array, i: number, n: number): number {
    const take = Math.min(8 - this.#trailerLen, n - i);
    this.#trailer.set(chunk.subarray(i, i + take), this.#trailerLen);
    this.#trailerLen += take;
    if (this.#trailerLen < 8) return i + take;
    const view = new DataView(this.#trailer.buffer);
    const at = this.#base + i + take - 8;
    if (view.getUint32(0, true) !== this.#crc >>> 0) {
      this.#fail(at, `gzip CRC mismatch in member ${this.#members + 1}`);
    }
    if (view.getUint32(4, true) !== this.#size % 0x1_0000_0000) {
      this.#fail(at + 4, `gzip length mismatch in member ${this.#members + 1}`);
    }
    this.#members++;
    this.#state = G_HEADER;
    this.#headerLen = 0;
    return i + take;
  }
}

// ---------------------------------------------------------------------------------------------
// Whole object
// ---------------------------------------------------------------------------------------------

/**
 * Decodes one object synchronously: detects gzip by its magic bytes, enforces `maxObjectBytes`
 * on the decompressed size and splits the records with {@link RecordSplitter}. This is what
 * {@link decodeRecords} drives; use it directly inside a Worker.
 *
 * `push` and `end` append to `out` and throw {@link ObjectDecodeError} for an object-level
 * failure, after `out` received every record decoded before it. Call `close()` if you stop
 * before `end()` (it frees the native inflate handle; `end()` and failures do it themselves).
 *
 * @example Decode gzip bytes in one go
 * ```ts
 * import assert from "node:assert/strict";
 * import { gzipSync } from "node:zlib";
 * import { ObjectDecoder } from "./decode.ts";
 *
 * const decoder = new ObjectDecoder("s3://bucket/key.json.gz");
 * const records = decoder.push(gzipSync('{"Records":[{"eventName":"ConsoleLogin"}]}'));
 * decoder.end(records);
 * assert.deepEqual(records, [{ record: { eventName: "ConsoleLogin" }, offset: 12 }]);
 * ```
 */
export class ObjectDecoder {
  readonly #object: string;
  readonly #maxObjectBytes: number;
  readonly #splitter: RecordSplitter;
  #gzip: GzipDecoder | undefined;
  #mode: "unknown" | "plain" | "gzip" = "unknown";
  #head: Uint8Array | undefined;
  #size = 0;
  #out: DecodedRecord[] = [];
  #failure: Error | undefined;
  #ended = false;

  /** Creates a decoder for `object` (named in errors) with the given limits. */
  constructor(object: string, options: Partial<DecodeOptions> = {}) {
    const opts = { ...defaults, ...options };
    this.#object = object;
    this.#maxObjectBytes = opts.maxObjectBytes;
    this.#splitter = new RecordSplitter(object, opts);
  }

  /** Whether the object is gzip (`undefined` until its first two bytes were seen). */
  get gzip(): boolean | undefined {
    return this.#mode === "unknown" ? undefined : this.#mode === "gzip";
  }

  /** Decompressed bytes seen so far. */
  get size(): number {
    return this.#size;
  }

  /** Feeds the next chunk of the object's bytes; returns `out` with the records it completed. */
  push(chunk: Uint8Array, out: DecodedRecord[] = []): DecodedRecord[] {
    this.#check();
    if (chunk.length === 0) return out;
    this.#out = out;
    try {
      if (this.#mode === "unknown") {
        if (this.#head) {
          const joined = new Uint8Array(this.#head.length + chunk.length);
          joined.set(this.#head);
          joined.set(chunk, this.#head.length);
          chunk = joined;
          this.#head = undefined;
        }
        if (chunk.length < 2) {
          this.#head = chunk.slice();
          return out;
        }
        this.#start(isGzip(chunk));
      }
      if (this.#gzip) this.#gzip.push(chunk);
      else this.#feed(chunk);
    } catch (error) {
      this.#abort(error);
    }
    return out;
  }

  /** Signals the end of the object; returns `out` with the last records. */
  end(out: DecodedRecord[] = []): DecodedRecord[] {
    this.#check();
    this.#out = out;
    try {
      if (this.#mode === "unknown") {
        this.#start(false);
        if (this.#head) this.#feed(this.#head);
      }
      this.#gzip?.end();
      this.#splitter.end(out);
      this.#ended = true;
    } catch (error) {
      this.#abort(error);
    }
    return out;
  }

  /** Frees the native inflate handle, if any (idempotent). */
  close(): void {
    this.#gzip?.close();
  }

  #check(): void {
    if (this.#failure) throw this.#failure;
    if (this.#ended) throw new Error("ObjectDecoder.end() was already called");
  }

  #abort(error: unknown): never {
    this.close();
    this.#failure = error instanceof Error ? error : new Error(String(error));
    throw this.#failure;
  }

  #start(gzip: boolean): void {
    this.#mode = gzip ? "gzip" : "plain";
    if (gzip) this.#gzip = new GzipDecoder(this.#object, (bytes) => this.#feed(bytes));
  }

  #feed(bytes: Uint8Array): void {
    const size = this.#size + bytes.length;
    if (size > this.#maxObjectBytes) {
      const allowed = this.#maxObjectBytes - this.#size;
      if (allowed > 0) this.#splitter.push(bytes.subarray(0, allowed), this.#out);
      this.#size = this.#maxObjectBytes;
      throw new ObjectDecodeError(
        this.#object,
        this.#maxObjectBytes,
        `decompressed size exceeds ${this.#maxObjectBytes} bytes`,
      );
    }
    this.#size = size;
    this.#splitter.push(bytes, this.#out);
  }
}

/** decodeRecords() feeds input chunks to the decoder in pieces of at most this many bytes. */
const PIECE_BYTES = 64 * 1024;

/**
 * Decodes an object's bytes into batches of records. Throws {@link ObjectDecodeError} for an
 * object-level failure, after yielding every record decoded before it.
 *
 * Gzip is detected by its magic bytes (multi-member supported). One batch is yielded per input
 * chunk (per 64 KiB of a larger chunk) that completes at least one record. Memory stays bounded
 * by one record plus one chunk.
 *
 * @example Count the records of an object
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeRecords } from "./decode.ts";
 *
 * const body = new TextEncoder().encode('{"Records":[{"eventName":"A"},{"eventName":"B"}]}');
 * const input = ReadableStream.from([body]); // e.g. (await Deno.open(path)).readable
 * let count = 0;
 * for await (const batch of decodeRecords(input, "s3://bucket/key.json")) {
 *   for (const entry of batch) {
 *     if (entry.record) count++;
 *     else console.warn(`skipped the record at byte ${entry.offset}: ${entry.error}`);
 *   }
 * }
 * assert.equal(count, 2);
 * ```
 */
export async function* decodeRecords(
  input: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>,
  object: string,
  options: Partial<DecodeOptions> = {},
): AsyncGenerator<DecodedRecord[]> {
  const decoder = new ObjectDecoder(object, options);
  try {
    for await (const chunk of input as AsyncIterable<Uint8Array>) {
      // Large chunks are fed in pieces so that one batch stays small, whatever the source does.
      for (let at = 0; at < chunk.length; at += PIECE_BYTES) {
        const out: DecodedRecord[] = [];
        let failure: unknown;
        try {
          decoder.push(
            chunk.length <= PIECE_BYTES ? chunk : chunk.subarray(at, at + PIECE_BYTES),
            out,
          );
        } catch (error) {
          failure = error;
        }
        if (out.length > 0) yield out;
        if (failure !== undefined) throw failure;
      }
    }
    const out: DecodedRecord[] = [];
    let failure: unknown;
    try {
      decoder.end(out);
    } catch (error) {
      failure = error;
    }
    if (out.length > 0) yield out;
    if (failure !== undefined) throw failure;
  } finally {
    decoder.close();
  }
}

/**
 * Reads a local file in chunks of `size` bytes into one buffer that is reused: a chunk is valid
 * until the next one is asked for, which is all {@link ObjectDecoder.push} needs (it copies what
 * it keeps). A backfill of big files then leaves no trail of garbage buffers behind it. Errors
 * are {@link SourceReadError}s naming the file (not retryable).
 */
export async function* readFileChunks(
  path: string,
  size = 256 * 1024,
): AsyncGenerator<Uint8Array> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (error) {
    throw new SourceReadError(path, errorMessage(error), false, { cause: error });
  }
  try {
    const buffer = new Uint8Array(size);
    while (true) {
      let n: number | null;
      try {
        n = await file.read(buffer);
      } catch (error) {
        throw new SourceReadError(path, errorMessage(error), false, { cause: error });
      }
      if (n === null) return;
      yield buffer.subarray(0, n);
    }
  } finally {
    file.close();
  }
}
