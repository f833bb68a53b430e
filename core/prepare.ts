/**
 * The stateless half of the pipeline: decoded record → normalized event + the alerts of the
 * stateless checks (`match()`). It runs on the main thread or, with `pipeline.workers`, inside
 * decode workers (core/decode_worker.ts); the stateful half stays on the main thread.
 *
 * @module
 */

import type { Detector } from "../detectors/mod.ts";
import { normalize, type NormalizeOptions } from "../mapping/normalize.ts";
import type { DecodedRecord } from "./decode.ts";
import { hash64 } from "./dedupe.ts";
import { errorMessage } from "./errors.ts";
import type { AlertDraft, CloudTrailRecord, NormalizedEvent } from "./types.ts";

/** What `event.raw` holds once the stateless checks ran (nothing after them reads it). */
const NO_RAW: CloudTrailRecord = Object.freeze({}) as CloudTrailRecord;

/** A record failure, or an event normalized and matched by the stateless checks. */
export type Prepared =
  | { index: number; error: string; offset: number; event?: undefined }
  | {
    /** 1-based position of the record in its object. */
    index: number;
    /** The normalized event. */
    event: NormalizedEvent;
    /** Alerts of the stateless checks, with the index of the detector that raised each. */
    drafts: [number, AlertDraft][] | undefined;
    /** A stateless check that threw on this event (the event is still processed). */
    failure?: string;
    /**
     * The event's dedupe hash when a decode worker computed it: `hashes[2 * slot]` and
     * `hashes[2 * slot + 1]` (see {@link eventHash}).
     */
    hashes?: Uint32Array;
    slot?: number;
    error?: undefined;
  };

/** A prepared record that is an event. */
export type PreparedEvent = Extract<Prepared, { event: NormalizedEvent }>;

/** The 64-bit dedupe hash of an event: of its id and recipient account (see core/dedupe.ts). */
export function eventHash(event: NormalizedEvent): [number, number] {
  return hash64(event.event_id, event.account_id ?? "");
}

/**
 * Prepares the records of one object, numbering them in order.
 *
 * @example Preparing decoded records
 * ```ts
 * import { Preparer } from "./prepare.ts";
 * const preparer = new Preparer([], {});
 * const [item] = preparer.decoded([{ record: { eventTime: "2026-11-20T08:00:00Z", eventName: "ListBuckets" }, offset: 0 }]);
 * item.event?.event_name; // "ListBuckets"
 * ```
 */
export class Preparer {
  readonly #matchers: [number, Detector][];
  readonly #options: NormalizeOptions;
  #index = 0;

  /**
   * Prepares with the stateless checks of `detectors` (their indexes are kept, so drafts name
   * the detector) and the normalize options of the object's source.
   */
  constructor(detectors: readonly Detector[], options: NormalizeOptions) {
    this.#matchers = [];
    detectors.forEach((d, i) => d.match && this.#matchers.push([i, d]));
    this.#options = options;
  }

  /** Records seen so far. */
  get count(): number {
    return this.#index;
  }

  /** Prepares one record. */
  record(record: unknown, offset: number): Prepared {
    const index = ++this.#index;
    if (typeof record !== "object" || record === null || Array.isArray(record)) {
      return { index, error: "record is not an object", offset };
    }
    let event: NormalizedEvent;
    try {
      event = normalize(record as Record<string, unknown>, this.#options);
    } catch (error) {
      return { index, error: errorMessage(error), offset };
    }
    let drafts: [number, AlertDraft][] | undefined;
    let failure: string | undefined;
    const matchers = this.#matchers;
    // Indexed: a for-of with destructuring here allocated for every record.
    for (let m = 0; m < matchers.length; m++) {
      const [i, detector] = matchers[m];
      try {
        const found = detector.match!(event);
        if (found) { for (const draft of found) (drafts ??= []).push([i, draft]); }
      } catch (error) {
        failure = `detector ${detector.name} failed: ${errorMessage(error)}`;
      }
    }
    // Only the stateless checks read the record: let it go now rather than after the stateful half.
    event.raw = NO_RAW;
    return { index, event, drafts, failure };
  }

  /** Prepares a batch of decoded records (failures keep their place in the numbering). */
  decoded(items: readonly DecodedRecord[]): Prepared[] {
    const out: Prepared[] = new Array(items.length);
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      out[i] = item.error !== undefined
        ? { index: ++this.#index, error: item.error, offset: item.offset }
        : this.record(item.record, item.offset);
    }
    return out;
  }
}

/**
 * A batch of prepared records as a decode worker sends it. Structured cloning of event objects
 * costs more than parsing the record did, so events travel in columns: string fields as indexes
 * into one table of the batch's strings (a user, key, address or agent repeated over the batch is
 * sent and allocated once, rarely twice), numbers in typed arrays (transferred, not copied). `raw`
 * is left behind: stateful detectors never read it.
 */
export interface PackedBatch {
  /** The strings of the batch, each once unless two shared a slot; index 0 stands for "absent". */
  strings: (string | undefined)[];
  /** Per event, {@link STRING_FIELDS}.length indexes into `strings`. */
  codes: Int32Array;
  /** Per event: record index, then flags (bit 0: insight). */
  ints: Int32Array;
  /** Per event: time, lat, lon (NaN: absent). */
  numbers: Float64Array;
  /** Per event: its dedupe hash, two 32-bit halves ({@link eventHash}). */
  hashes: Uint32Array;
  /** The rare per-event extras: `[position, failure, custom]`. */
  extras: [number, string | undefined, Record<string, unknown> | undefined][];
  /** Record failures: `[index, offset, error]`. */
  errors: [number, number, string][];
  /** Stateless alerts: `[position of the event, detector index, draft]`. */
  drafts: [number, number, AlertDraft][];
}

/** The string fields of a packed event, in order. */
export const STRING_FIELDS = [
  "event_id",
  "timestamp",
  "event_name",
  "event_source",
  "event_type",
  "username",
  "user_type",
  "session_name",
  "user_arn",
  "access_key_id",
  "ip",
  "source_host",
  "invoked_by",
  "region",
  "account_id",
  "agent",
  "outcome",
  "error_code",
  "mfa_used",
  "country",
  "city",
] as const satisfies readonly (keyof NormalizedEvent)[];
const F = STRING_FIELDS.length;
/**
 * Fields unique to (nearly) every event, the event id: put in the table without looking them up.
 * (Timestamps are whole seconds: a busy trail repeats each one, so they are looked up.)
 */
const UNIQUE_FIELDS = 1;

/**
 * The batch's strings table, by a cheap hash of each string. JSON.parse returns strings whose
 * hash V8 has not computed yet, and computing it for a `Map` was the largest part of the packing;
 * strings that share a slot only cost one of them sent again. Emptied after each batch.
 */
const SLOTS = 16384;
const slotStrings: (string | undefined)[] = new Array(SLOTS).fill(undefined);
const slotCodes = new Int32Array(SLOTS);

/** The slot of a string: FNV-1a over its characters (48 of them when it is longer than 64). */
function slotOf(value: string): number {
  const len = value.length;
  let h = len;
  if (len <= 64) {
    for (let i = 0; i < len; i++) h = Math.imul(h ^ value.charCodeAt(i), 0x01000193);
  } else {
    // The first 16, the last 16 and 16 spread over the middle.
    for (let i = 0; i < 16; i++) {
      h = Math.imul(h ^ value.charCodeAt(i), 0x01000193);
      h = Math.imul(h ^ value.charCodeAt(len - 1 - i), 0x01000193);
      h = Math.imul(h ^ value.charCodeAt(16 + (((len - 32) * i) >> 4)), 0x01000193);
    }
  }
  return (h ^ (h >>> 15)) & (SLOTS - 1);
}

/**
 * Adds an event's stateless alerts to a packed batch. Its own function: code first reached by
 * the first alert after the packing loop was optimized had no type feedback, and cost that loop
 * a deoptimization in every worker.
 */
function addDrafts(
  drafts: PackedBatch["drafts"],
  k: number,
  found: readonly [number, AlertDraft][],
): void {
  for (const [detector, draft] of found) drafts.push([k, detector, draft]);
}

/** Packs prepared records for the trip from a worker to the main thread. */
export function packPrepared(items: readonly Prepared[]): PackedBatch {
  let n = 0;
  for (const item of items) if (item.error === undefined) n++;
  const strings: (string | undefined)[] = [undefined];
  const used: number[] = [];
  const codes = new Int32Array(n * F);
  const ints = new Int32Array(n * 2);
  const numbers = new Float64Array(n * 3);
  const hashes = new Uint32Array(n * 2);
  const extras: PackedBatch["extras"] = [];
  const errors: [number, number, string][] = [];
  const drafts: [number, number, AlertDraft][] = [];
  // Made before the loop: the first batch's loop is compiled on the stack, and an object literal
  // it had not reached yet cost a deoptimization and a second compile in every worker.
  const batch: PackedBatch = { strings, codes, ints, numbers, hashes, extras, errors, drafts };
  let k = 0;
  for (const item of items) {
    if (item.error !== undefined) {
      errors.push([item.index, item.offset, item.error]);
      continue;
    }
    const e = item.event as unknown as Record<string, unknown>;
    const at = k * F;
    for (let f = 0; f < F; f++) {
      const value = e[STRING_FIELDS[f]] as string | undefined;
      if (value === undefined) continue;
      if (f < UNIQUE_FIELDS) {
        codes[at + f] = strings.push(value) - 1;
        continue;
      }
      const slot = slotOf(value);
      if (slotStrings[slot] === value) codes[at + f] = slotCodes[slot];
      else {
        const code = strings.push(value) - 1;
        if (slotStrings[slot] === undefined) used.push(slot);
        slotStrings[slot] = value;
        slotCodes[slot] = code;
        codes[at + f] = code;
      }
    }
    const event = item.event;
    ints[2 * k] = item.index;
    ints[2 * k + 1] = event.insight ? 1 : 0;
    numbers[3 * k] = event.time;
    numbers[3 * k + 1] = event.lat ?? NaN;
    numbers[3 * k + 2] = event.lon ?? NaN;
    const [h1, h2] = eventHash(event);
    hashes[2 * k] = h1;
    hashes[2 * k + 1] = h2;
    if (item.failure !== undefined || event.custom !== undefined) {
      extras.push([k, item.failure, event.custom]);
    }
    if (item.drafts) addDrafts(drafts, k, item.drafts);
    k++;
  }
  for (const slot of used) slotStrings[slot] = undefined;
  return batch;
}

/** The buffers of a packed batch, to transfer rather than copy. */
export function packedTransfer(batch: PackedBatch): ArrayBuffer[] {
  return [
    batch.codes.buffer,
    batch.ints.buffer,
    batch.numbers.buffer,
    batch.hashes.buffer,
  ] as ArrayBuffer[];
}

/** Approximate bytes a packed batch holds (for back-pressure). */
export function packedSize(batch: PackedBatch): number {
  let size = batch.codes.byteLength + batch.ints.byteLength + batch.numbers.byteLength +
    batch.hashes.byteLength;
  for (let i = 1; i < batch.strings.length; i++) size += 2 * (batch.strings[i] as string).length;
  return size;
}

/** Unpacks a {@link PackedBatch} into prepared records (in record order; `raw` is empty). */
export function unpackPrepared(batch: PackedBatch): Prepared[] {
  const { strings: s, codes: c, ints, numbers, hashes } = batch;
  const n = ints.length / 2;
  const out: Prepared[] = [];
  const extras = new Map<number, [string | undefined, Record<string, unknown> | undefined]>();
  for (const [position, failure, custom] of batch.extras) extras.set(position, [failure, custom]);
  const byPosition = new Map<number, [number, AlertDraft][]>();
  for (const [position, detector, draft] of batch.drafts) {
    const list = byPosition.get(position);
    if (list) list.push([detector, draft]);
    else byPosition.set(position, [[detector, draft]]);
  }
  const pushEvent = (k: number) => {
    const p = k * F;
    const lat = numbers[3 * k + 1];
    const lon = numbers[3 * k + 2];
    const extra = extras.get(k);
    const event: NormalizedEvent = {
      timestamp: s[c[p + 1]] as string,
      time: numbers[3 * k],
      event_id: s[c[p]] as string,
      event_name: s[c[p + 2]] as string,
      event_source: s[c[p + 3]] as string,
      event_type: s[c[p + 4]],
      username: s[c[p + 5]] as string,
      user_type: s[c[p + 6]],
      session_name: s[c[p + 7]],
      user_arn: s[c[p + 8]],
      access_key_id: s[c[p + 9]],
      ip: s[c[p + 10]],
      source_host: s[c[p + 11]],
      invoked_by: s[c[p + 12]],
      region: s[c[p + 13]],
      account_id: s[c[p + 14]],
      agent: s[c[p + 15]],
      outcome: s[c[p + 16]] as NormalizedEvent["outcome"],
      error_code: s[c[p + 17]],
      mfa_used: s[c[p + 18]],
      insight: ints[2 * k + 1] & 1 ? true : undefined,
      country: s[c[p + 19]],
      city: s[c[p + 20]],
      lat: Number.isNaN(lat) ? undefined : lat,
      lon: Number.isNaN(lon) ? undefined : lon,
      custom: extra?.[1],
      raw: NO_RAW,
    };
    out.push({
      index: ints[2 * k],
      event,
      drafts: byPosition.get(k),
      failure: extra?.[0],
      hashes,
      slot: k,
    });
  };
  // Merge events and errors back into record order.
  let e = 0;
  let x = 0;
  while (e < n || x < batch.errors.length) {
    const nextEvent = e < n ? ints[2 * e] : Infinity;
    const nextError = x < batch.errors.length ? batch.errors[x][0] : Infinity;
    if (nextEvent < nextError) pushEvent(e++);
    else {
      const [index, offset, error] = batch.errors[x++];
      out.push({ index, error, offset });
    }
  }
  return out;
}
