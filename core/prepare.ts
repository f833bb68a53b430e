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
import { errorMessage } from "./errors.ts";
import type { AlertDraft, CloudTrailRecord, NormalizedEvent } from "./types.ts";

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
    error?: undefined;
  };

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
    for (const [i, detector] of this.#matchers) {
      try {
        const found = detector.match!(event);
        if (found) { for (const draft of found) (drafts ??= []).push([i, draft]); }
      } catch (error) {
        failure = `detector ${detector.name} failed: ${errorMessage(error)}`;
      }
    }
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
 * costs more than parsing the record did, so events travel as one JSON text of positional rows
 * (`raw` left behind: stateful detectors never read it), which the main thread parses natively.
 */
export interface PackedBatch {
  /** JSON array of event rows: `[index, time, failure, ...PACKED_FIELDS]`. */
  rows: string;
  /** Record failures: `[index, offset, error]`. */
  errors: [number, number, string][];
  /** Stateless alerts: `[position of the event in rows, detector index, draft]`. */
  drafts: [number, number, AlertDraft][];
}

/** The string fields of a packed event, in order. */
const PACKED_FIELDS = [
  "timestamp",
  "event_id",
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
  "insight",
  "country",
  "city",
  "lat",
  "lon",
  "custom",
] as const satisfies readonly (keyof NormalizedEvent)[];

const NO_RAW: CloudTrailRecord = Object.freeze({}) as CloudTrailRecord;

/** Packs prepared records for the trip from a worker to the main thread. */
export function packPrepared(items: readonly Prepared[]): PackedBatch {
  const rows: unknown[] = [];
  const errors: [number, number, string][] = [];
  const drafts: [number, number, AlertDraft][] = [];
  for (const item of items) {
    if (item.error !== undefined) {
      errors.push([item.index, item.offset, item.error]);
      continue;
    }
    const e = item.event;
    if (item.drafts) {
      for (const [detector, draft] of item.drafts) drafts.push([rows.length, detector, draft]);
    }
    const row: unknown[] = [item.index, e.time, item.failure ?? null];
    for (const field of PACKED_FIELDS) row.push(e[field] ?? null);
    rows.push(row);
  }
  return { rows: JSON.stringify(rows), errors, drafts };
}

/** Unpacks a {@link PackedBatch} into prepared records (in record order; `raw` is empty). */
export function unpackPrepared(batch: PackedBatch): Prepared[] {
  const rows = JSON.parse(batch.rows) as unknown[][];
  const out: Prepared[] = [];
  let e = 0;
  const take = (r: unknown[], i: number) => (r[i] === null ? undefined : r[i]);
  const byPosition = new Map<number, [number, AlertDraft][]>();
  for (const [position, detector, draft] of batch.drafts) {
    const list = byPosition.get(position);
    if (list) list.push([detector, draft]);
    else byPosition.set(position, [[detector, draft]]);
  }
  const pushEvent = (position: number) => {
    const r = rows[position];
    const event: NormalizedEvent = {
      timestamp: r[3] as string,
      time: r[1] as number,
      event_id: r[4] as string,
      event_name: r[5] as string,
      event_source: r[6] as string,
      event_type: take(r, 7) as string | undefined,
      username: r[8] as string,
      user_type: take(r, 9) as string | undefined,
      session_name: take(r, 10) as string | undefined,
      user_arn: take(r, 11) as string | undefined,
      access_key_id: take(r, 12) as string | undefined,
      ip: take(r, 13) as string | undefined,
      source_host: take(r, 14) as string | undefined,
      invoked_by: take(r, 15) as string | undefined,
      region: take(r, 16) as string | undefined,
      account_id: take(r, 17) as string | undefined,
      agent: take(r, 18) as string | undefined,
      outcome: r[19] as NormalizedEvent["outcome"],
      error_code: take(r, 20) as string | undefined,
      mfa_used: take(r, 21) as string | undefined,
      insight: take(r, 22) as boolean | undefined,
      country: take(r, 23) as string | undefined,
      city: take(r, 24) as string | undefined,
      lat: take(r, 25) as number | undefined,
      lon: take(r, 26) as number | undefined,
      custom: take(r, 27) as Record<string, unknown> | undefined,
      raw: NO_RAW,
    };
    out.push({
      index: r[0] as number,
      event,
      drafts: byPosition.get(position),
      failure: take(r, 2) as string | undefined,
    });
  };
  // Merge events and errors back into record order.
  let x = 0;
  while (e < rows.length || x < batch.errors.length) {
    const nextEvent = e < rows.length ? rows[e][0] as number : Infinity;
    const nextError = x < batch.errors.length ? batch.errors[x][0] : Infinity;
    if (nextEvent < nextError) pushEvent(e++);
    else {
      const [index, offset, error] = batch.errors[x++];
      out.push({ index, error, offset });
    }
  }
  return out;
}
