/**
 * The `s3` source: CloudTrail log files from an S3 bucket (or an S3-compatible store), read
 * incrementally, never missing an object and never reading one twice.
 *
 * **Layout.** Under `[prefix/]AWSLogs/` it discovers `[o-orgid/]<account>/CloudTrail/<region>/`
 * and `…/CloudTrail-Insight/<region>/` folders with delimiter listings (digests are skipped,
 * `accounts`/`regions` filter them) and lists each folder from its checkpoint with `StartAfter`,
 * paginating every listing. Within a folder, key order is time order (`YYYY/MM/DD/…_<stamp>_…`).
 * Any other layout falls back to a plain paginated listing of `prefix` with a per-key checkpoint.
 *
 * **Checkpoint** (KV, under `["src", <name>, …]`, each value a few bytes):
 * - `["tail", folder]` → the greatest key processed in the folder and its file-name time;
 * - `["seen", folder, key]` → each key processed whose file time lies within `lookback` of the
 *   tail. A pass lists from `tail time − lookback`, so a file delivered late (CloudTrail delivers
 *   regions out of order, up to ~15 min late) is read once, and the seen keys keep the others
 *   from being read again. Keys older than the window are deleted as the tail moves on.
 * - `["failed", key]` → objects that could not be read (released by the pipeline): retried in
 *   later passes with a growing delay (`retryFailedAfter`, doubled up to 6 h) even when the tail
 *   has moved past them, given up (and reported) after 7 days; at most 1,000 are kept.
 * - `["key", key]` → plain layout: each key read (with its ETag); marks of deleted objects go.
 * - `["meta"]` → the resolved `from` time of the first run.
 * Every write is staged in the commit that carries the object's last alerts.
 *
 * **Downloads** stream the body into the decoder. Up to `concurrency` GetObject requests are in
 * flight (the ones ahead are started while the current object is decoded; an unread body is held
 * back by TCP backpressure, not buffered), and objects are handed over in key order.
 *
 * @example One pass over an organization trail
 * ```ts
 * import { resolveConfig } from "../core/config.ts";
 * import { Runtime } from "../core/pipeline.ts";
 * const config = resolveConfig({
 *   sources: {
 *     trail: { type: "s3", bucket: "org-cloudtrail", region: "eu-west-1", from: "7d" },
 *   },
 * }, ".");
 * const runtime = await Runtime.create(config);
 * await runtime.runOnce();
 * await runtime.close();
 * ```
 *
 * @module
 */

import {
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadBucketCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandInput,
  type ListObjectsV2CommandOutput,
  S3Client,
} from "@aws-sdk/client-s3";
import { errorMessage, SourceReadError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import type { Commit } from "../core/state.ts";
import { describe, type OptionsChecker, parseDuration, type RawOptions } from "../core/validate.ts";
import {
  ACCOUNT_DIR,
  floorMinute,
  folderMatches,
  isDigestKey,
  isInsightKey,
  lastSegment,
  layoutRoot,
  LOG_KINDS,
  type LogKind,
  ORG_DIR,
  parseStreamKey,
  startKeyFor,
  type Stream,
} from "./_cloudtrail_keys.ts";
import {
  awsClientConfig,
  awsDefaults,
  type AwsErrorInfo,
  type AwsErrorKind,
  type AwsOptions,
  checkAwsOptions,
  checkSeedNames,
  credentialPlan,
  describeAwsError,
} from "./aws.ts";
import type { Source, SourceContext, SourceObject, SourcePlugin, SourceRun } from "./mod.ts";

export { isDigestKey, isInsightKey } from "./_cloudtrail_keys.ts";

/** Options of the `s3` source (plus the AWS options of {@link AwsOptions}). */
export interface Options extends AwsOptions {
  /** The bucket name. */
  bucket: string;
  /** Key prefix: the trail's S3 key prefix (before `AWSLogs/`), or any prefix (plain layout). */
  prefix: string;
  /** Downloads in flight (objects are still committed one by one, in order). */
  concurrency: number;
  /** How far back the first run reads: an ISO time or a duration such as `7d`; default all. */
  from?: string;
  /** Only these account ids (CloudTrail layout). */
  accounts: string[];
  /** Only these regions (CloudTrail layout). */
  regions: string[];
  /** How late a log file may land and still be read (a duration). */
  lookback: string | number;
  /** First wait before an unreadable object is tried again (a duration; doubles, up to 6 h). */
  retryFailedAfter: string | number;
}

/** Defaults of the `s3` source. */
export const defaults = {
  ...awsDefaults,
  bucket: "",
  prefix: "",
  concurrency: 8,
  accounts: [],
  regions: [],
  lookback: "1h",
  retryFailedAfter: "5m",
} satisfies Options;

/** Longest wait between attempts at an unreadable object. */
const RETRY_MAX_MS = 6 * 3_600_000;
/** An object still unreadable after this long is given up (and reported). */
const GIVE_UP_MS = 7 * 86_400_000;
/** Most failed objects remembered; beyond that the oldest are given up. */
const MAX_FAILED = 1_000;
/** Most failed objects retried in one pass. */
const MAX_RETRIES_PER_PASS = 200;
/** Failures waiting to be staged before a pass stops (they go into the next checkpoint). */
const MAX_PENDING_FAILURES = 100;
/** A pass stops after this many objects in a row fail with a permission error. */
const MAX_CONSECUTIVE_DENIED = 20;
/** Expired checkpoint entries deleted per object checkpoint. */
const PRUNE_PER_COMMIT = 50;
/** Folders listed ahead of the one being read. */
const LIST_LOOKAHEAD = 8;
/** Concurrent listings while discovering accounts and regions. */
const DISCOVERY_CONCURRENCY = 8;
/** Listed objects buffered ahead of the downloads. */
const LISTED_AHEAD = 2_000;

/** The object id of an S3 object: `s3://bucket/key`. */
export function s3ObjectId(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}

/** A failed read of an S3 object, with what the AWS error means. */
export class S3ObjectError extends SourceReadError {
  /** The category of the AWS error. */
  readonly kind: AwsErrorKind;
  /** Creates the error from an SDK error explained by {@link describeAwsError}. */
  constructor(object: string, info: AwsErrorInfo, options?: ErrorOptions) {
    super(object, info.message, info.retryable, options);
    this.name = "S3ObjectError";
    this.kind = info.kind;
  }
}

/** Explains an error of GetObject on `bucket/key`. */
export function s3ObjectError(
  error: unknown,
  bucket: string,
  key: string,
  context: { region?: string; configPath?: string } = {},
): S3ObjectError {
  if (error instanceof S3ObjectError) return error;
  const info = describeAwsError(error, {
    permission: "s3:GetObject",
    arn: `arn:aws:s3:::${bucket}/${key}`,
    scope: "object",
    ...context,
  });
  return new S3ObjectError(s3ObjectId(bucket, key), info, { cause: error });
}

/**
 * The body of a GetObject response as a web stream, checked for length: a body that ends before
 * `ContentLength` bytes, or breaks off, errors with a retryable {@link SourceReadError} (never a
 * silent truncation that would look like a corrupt file). Nothing is read ahead of the consumer.
 */
export function s3BodyStream(
  output: GetObjectCommandOutput,
  id: string,
  onEnd: () => void = () => {},
): ReadableStream<Uint8Array> {
  if (!output.Body) {
    onEnd();
    throw new SourceReadError(id, "the response has no body", true);
  }
  // A Node stream (the SDK's NodeHttpHandler) carries the stored bytes as they are, so its length
  // must match; another stack may decode a Content-Encoding and change the length.
  const node = typeof (output.Body as { pipe?: unknown }).pipe === "function"
    ? output.Body as unknown as { errored?: unknown; readableAborted?: boolean }
    : undefined;
  const encoded = !!output.ContentEncoding && output.ContentEncoding !== "identity";
  const expected = node || !encoded ? output.ContentLength : undefined;
  const broken = () => {
    const error = node?.errored;
    if (error) return errorMessage(error);
    return node?.readableAborted ? "aborted" : undefined;
  };
  const reader = output.Body.transformToWebStream().getReader() as ReadableStreamDefaultReader<
    Uint8Array
  >;
  let count = 0;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    onEnd();
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          end();
          // A body that broke before it was read ends "cleanly" in the web stream: check.
          const reason = broken();
          if (reason !== undefined || (expected !== undefined && count !== expected)) {
            controller.error(
              new SourceReadError(
                id,
                `the download ended after ${count} of ${expected ?? "?"} bytes` +
                  (reason ? ` (${reason})` : ""),
                true,
              ),
            );
          } else controller.close();
          return;
        }
        count += value.byteLength;
        controller.enqueue(value);
      } catch (error) {
        end();
        controller.error(
          new SourceReadError(
            id,
            `the download broke off after ${count} of ${expected ?? "?"} bytes (${
              errorMessage(error)
            })`,
            true,
            { cause: error },
          ),
        );
      }
    },
    cancel(reason) {
      end();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

/**
 * Keeps a response body that is not read yet from raising an uncaught error when its connection
 * breaks (Node streams throw on an `error` event nobody listens to); the error still reaches the
 * reader of the body.
 */
function quietBody(output: GetObjectCommandOutput): GetObjectCommandOutput {
  const body = output.Body as { on?: (event: string, fn: () => void) => void } | undefined;
  body?.on?.("error", () => {});
  return output;
}

/** Aborts `controller` when `signal` aborts; returns a function that unlinks them. */
function link(signal: AbortSignal | undefined, controller: AbortController): () => void {
  if (!signal) return () => {};
  if (signal.aborted) {
    controller.abort(signal.reason);
    return () => {};
  }
  const abort = () => controller.abort(signal.reason);
  signal.addEventListener("abort", abort, { once: true });
  return () => signal.removeEventListener("abort", abort);
}

/**
 * Opens an S3 object as a byte stream (`Body.transformToWebStream()`, length-checked). Errors are
 * {@link S3ObjectError}s whose message names the object and, for AccessDenied or KMS errors, the
 * permission likely missing (`s3:GetObject`, `kms:Decrypt`). Used by the `s3` and `sqs` sources.
 *
 * @example Reading an object named in a notification
 * ```ts
 * import { S3Client } from "@aws-sdk/client-s3";
 * import { openS3Object } from "./s3.ts";
 * const client = new S3Client({ region: "eu-west-1" });
 * const stream = await openS3Object(client, "org-cloudtrail", "AWSLogs/…/file.json.gz");
 * ```
 */
export async function openS3Object(
  client: S3Client,
  bucket: string,
  key: string,
  signal?: AbortSignal,
): Promise<ReadableStream<Uint8Array>> {
  const controller = new AbortController();
  const unlink = link(signal, controller);
  try {
    const output = quietBody(
      await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), {
        abortSignal: controller.signal,
      }),
    );
    return s3BodyStream(output, s3ObjectId(bucket, key), unlink);
  } catch (error) {
    unlink();
    throw s3ObjectError(error, bucket, key, { region: await clientRegion(client) });
  }
}

async function clientRegion(client: S3Client): Promise<string | undefined> {
  try {
    return await client.config.region();
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint records
// ---------------------------------------------------------------------------------------------

/** The greatest key processed in a folder (relative to it) and its file-name time. */
interface TailMark {
  key: string;
  time: number;
}

/** A key processed within the lookback window: its file-name time, and a content failure. */
interface SeenMark {
  t: number;
  f?: string;
}

/** A key of the plain layout that was read: its ETag, and a content failure. */
interface KeyMark {
  e?: string;
  f?: string;
}

/** An object that could not be read. */
interface FailedMark {
  /** The folder (CloudTrail layout); absent for the plain layout. */
  stream?: string;
  /** File-name time (CloudTrail layout). */
  time?: number;
  size?: number;
  etag?: string;
  insight?: boolean;
  attempts: number;
  reason: string;
  /** First and last failure, next attempt (epoch ms). */
  first: number;
  last: number;
  next: number;
}

interface Meta {
  /** The configured `from` (to notice a change). */
  fromOption: string | null;
  /** The resolved `from` (epoch ms), if any. */
  from: number | null;
}

/** An object of this source. */
interface S3Object extends SourceObject {
  readonly key: string;
  /** The folder (CloudTrail layout). */
  readonly stream?: string;
  /** File-name time (CloudTrail layout). */
  readonly time?: number;
  readonly etag?: string;
  /** The failed mark, when this is a retry. */
  readonly retry?: FailedMark;
  readonly pass: Pass;
  /** The GetObject started ahead, if any. */
  prefetch?: Prefetch;
  /** The last read error, to decide what a release means. */
  lastError?: S3ObjectError;
}

/** A GetObject request started before the pipeline asked for the object. */
class Prefetch {
  readonly #controller = new AbortController();
  #response: Promise<GetObjectCommandOutput> | undefined;

  constructor(client: S3Client, bucket: string, key: string) {
    this.#response = client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), {
      abortSignal: this.#controller.signal,
    }).then(quietBody);
    this.#response.catch(() => {});
  }

  /** Hands the response over (once), tied to `signal`. */
  take(
    signal: AbortSignal | undefined,
  ): { response: Promise<GetObjectCommandOutput>; unlink: () => void } | undefined {
    const response = this.#response;
    if (!response) return undefined;
    this.#response = undefined;
    return { response, unlink: link(signal, this.#controller) };
  }

  /** Cancels the request and frees its body, unless it was handed over. */
  cancel(): void {
    const response = this.#response;
    if (!response) return;
    this.#response = undefined;
    this.#controller.abort(new Error("the pass stopped"));
    response.then((output) => {
      const body = output.Body as { destroy?: () => void } | undefined;
      body?.destroy?.();
    }, () => {});
  }
}

/** A bounded queue between the listing and the downloads. */
class Channel<T> {
  readonly #items: T[] = [];
  readonly #capacity: number;
  #closed = false;
  #error: unknown;
  #takers: (() => void)[] = [];
  #pushers: (() => void)[] = [];

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  /** Adds an item, waiting while the queue is full; a no-op once closed. */
  async push(item: T): Promise<void> {
    while (this.#items.length >= this.#capacity && !this.#closed) {
      await new Promise<void>((resolve) => this.#pushers.push(resolve));
    }
    if (this.#closed) return;
    this.#items.push(item);
    this.#wake(this.#takers);
  }

  /** Takes an item if one is ready. */
  tryTake(): T | undefined {
    if (this.#items.length === 0) return undefined;
    const item = this.#items.shift()!;
    this.#wake(this.#pushers);
    return item;
  }

  /** Takes an item, waiting for one; undefined when closed and drained (or throws its error). */
  async take(): Promise<T | undefined> {
    while (true) {
      if (this.#items.length) return this.tryTake();
      if (this.#closed) {
        if (this.#error !== undefined) throw this.#error;
        return undefined;
      }
      await new Promise<void>((resolve) => this.#takers.push(resolve));
    }
  }

  /** Closes the queue (with the producer's error, if any). */
  close(error?: unknown): void {
    if (!this.#closed) this.#error = error;
    this.#closed = true;
    this.#wake(this.#takers);
    this.#wake(this.#pushers);
  }

  #wake(waiters: (() => void)[]): void {
    const all = waiters.splice(0);
    for (const resolve of all) resolve();
  }
}

/** Runs `fn` over `items` with at most `limit` at once; results in input order. */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** Errors that no other folder of the bucket would escape: they stop the pass. */
const BUCKET_WIDE: readonly AwsErrorKind[] = [
  "no-such-bucket",
  "wrong-region",
  "no-region",
  "credentials",
];

/** Errors after which the next object will most likely fail the same way. */
const PERMISSION_KINDS: readonly AwsErrorKind[] = [...BUCKET_WIDE, "access-denied", "kms"];

/** A listing failed; `bucketWide` errors stop the pass, others skip the folder. */
class ListingError extends Error {
  readonly kind: AwsErrorKind;
  readonly bucketWide: boolean;
  constructor(message: string, info: AwsErrorInfo, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListingError";
    this.kind = info.kind;
    this.bucketWide = BUCKET_WIDE.includes(info.kind);
  }
}

/** The per-pass state of one folder. */
interface StreamState {
  tail?: TailMark;
  /** Keys processed within the window → file time. */
  seen: Map<string, number>;
}

// ---------------------------------------------------------------------------------------------
// The source
// ---------------------------------------------------------------------------------------------

interface Resolved {
  bucket: string;
  prefix: string;
  concurrency: number;
  from?: string;
  accounts: Set<string>;
  regions: Set<string>;
  lookbackMs: number;
  retryMs: number;
  region?: string;
}

/** Parses `from` (an ISO time or a duration back from `now`) into epoch ms. */
export function resolveFrom(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d{4}-\d{2}-\d{2}/.test(value)) {
    const time = Date.parse(value);
    return Number.isFinite(time) ? time : undefined;
  }
  const ms = parseDuration(value);
  return ms === undefined ? undefined : now - ms;
}

/** Dependencies of the source that tests replace. */
export interface S3SourceDeps {
  /** A ready client instead of one built from the options. */
  client?: S3Client;
  /** The clock (epoch ms). */
  now?: () => number;
}

/** The state of one pass: checkpoints read, failures to stage, the listing and the downloads. */
class Pass {
  readonly source: S3Source;
  readonly run: SourceRun;
  readonly now: number;
  meta!: Meta;
  metaDirty = false;
  fromTime: number | undefined;
  /** Failed objects by key (loaded at start, updated as objects are released). */
  readonly failed = new Map<string, FailedMark>();
  /** Failed marks to stage into the next checkpoint. */
  readonly pendingFailed = new Map<string, FailedMark>();
  /** Objects that can never be read (deleted): marked done in the next checkpoint. */
  readonly pendingGone = new Map<string, S3Object>();
  /** Failed marks given up: deleted in the next checkpoint. */
  readonly pendingGiveUp = new Set<string>();
  /** Expired checkpoint keys to delete, a few per checkpoint. */
  readonly prune: Deno.KvKey[] = [];
  readonly streams = new Map<string, Promise<StreamState>>();
  consecutiveDenied = 0;
  stopped: string | undefined;
  ignored = 0;
  ignoredExample = "";

  constructor(source: S3Source, run: SourceRun, now: number) {
    this.source = source;
    this.run = run;
    this.now = now;
  }

  async load(): Promise<void> {
    const { state } = this.run;
    const configured = this.source.opts.from ?? null;
    const meta = await state.get<Meta>(this.source.key("meta"));
    if (meta && meta.fromOption === configured) this.meta = meta;
    else {
      this.meta = {
        fromOption: configured,
        from: resolveFrom(this.source.opts.from, this.now) ?? null,
      };
      this.metaDirty = true;
    }
    this.fromTime = this.meta.from ?? undefined;
    for await (const entry of state.list<FailedMark>(this.source.key("failed"))) {
      this.failed.set(entry.key[entry.key.length - 1] as string, entry.value);
    }
  }

  /** Folder state: loaded once per pass, then kept in memory (checkpoints update both). */
  stream(prefix: string): Promise<StreamState> {
    let state = this.streams.get(prefix);
    if (!state) {
      state = (async () => {
        const store = this.run.state;
        const tail = await store.get<TailMark>(this.source.key("tail", prefix));
        const seen = new Map<string, number>();
        for await (const entry of store.list<SeenMark>(this.source.key("seen", prefix))) {
          seen.set(entry.key[entry.key.length - 1] as string, entry.value.t);
        }
        return { tail, seen };
      })();
      this.streams.set(prefix, state);
    }
    return state;
  }

  /** Where the window of a folder starts: `lookback` before its tail (minute precision). */
  windowStart(tail: TailMark): number {
    return floorMinute(tail.time - this.source.opts.lookbackMs);
  }

  /** Stages the bookkeeping that rides along with an object's checkpoint. */
  async stageBookkeeping(commit: Commit): Promise<void> {
    const src = this.source;
    if (this.metaDirty) {
      commit.set(src.key("meta"), this.meta);
      this.metaDirty = false;
    }
    for (const [key, mark] of this.pendingFailed) commit.set(src.key("failed", key), mark);
    this.pendingFailed.clear();
    for (const key of this.pendingGiveUp) commit.delete(src.key("failed", key));
    this.pendingGiveUp.clear();
    for (const [key, object] of this.pendingGone) {
      if (!commit.fits(2)) break;
      await this.stageDone(commit, object, "the object was deleted before it could be read");
      this.pendingGone.delete(key);
    }
    let pruned = 0;
    while (this.prune.length && pruned < PRUNE_PER_COMMIT && commit.fits(1)) {
      commit.delete(this.prune.shift()!);
      pruned++;
    }
  }

  /** Stages the marks that make `object` done (read, or failed for good). */
  stageDone(commit: Commit, object: S3Object, failure?: string): void | Promise<void> {
    const src = this.source;
    if (this.failed.has(object.key)) {
      commit.delete(src.key("failed", object.key));
      this.failed.delete(object.key);
      this.pendingFailed.delete(object.key);
    }
    if (object.stream === undefined) {
      const mark: KeyMark = {};
      if (object.etag) mark.e = object.etag;
      if (failure) mark.f = failure;
      commit.set(src.key("key", object.key), mark);
      return;
    }
    return this.stageStream(commit, object, object.stream, failure);
  }

  async stageStream(
    commit: Commit,
    object: S3Object,
    prefix: string,
    failure: string | undefined,
  ): Promise<void> {
    const src = this.source;
    const state = await this.stream(prefix);
    const rel = object.key.slice(prefix.length);
    const time = object.time ?? 0;
    const seen: SeenMark = failure ? { t: time, f: failure } : { t: time };
    commit.set(src.key("seen", prefix, rel), seen);
    state.seen.set(rel, time);
    if (!state.tail || rel > state.tail.key) {
      state.tail = { key: rel, time };
      commit.set(src.key("tail", prefix), state.tail);
      // Keys that fell out of the window are deleted (a few per commit). They were mostly
      // added in time order, so the scan stops at the first key still inside; the rest goes at
      // the folder's next listing.
      const low = this.windowStart(state.tail);
      for (const [key, t] of state.seen) {
        if (t >= low) break;
        state.seen.delete(key);
        this.prune.push(src.key("seen", prefix, key));
      }
    }
  }

  /** Failed objects due for another attempt, and those given up. */
  retries(): S3Object[] {
    const src = this.source;
    const marks = [...this.failed].sort((a, b) => a[1].first - b[1].first);
    const keep = marks.length - MAX_FAILED;
    const due: S3Object[] = [];
    marks.forEach(([key, mark], i) => {
      const id = s3ObjectId(src.opts.bucket, key);
      if (i < keep || this.now - mark.first > GIVE_UP_MS) {
        this.run.fail(
          id,
          `gave up after ${mark.attempts} attempt(s) since ${
            new Date(mark.first).toISOString()
          }: ${mark.reason}`,
        );
        this.pendingGiveUp.add(key);
        return;
      }
      if (mark.next <= this.now && due.length < MAX_RETRIES_PER_PASS) {
        due.push(src.object(this, key, {
          stream: mark.stream,
          time: mark.time,
          size: mark.size,
          etag: mark.etag,
          insight: mark.insight,
          retry: mark,
        }));
      }
    });
    return due.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}

class S3Source implements Source {
  readonly name: string;
  readonly type = "s3";
  readonly opts: Resolved;
  readonly client: S3Client;
  readonly #now: () => number;
  readonly #configPath: string;
  #told = false;

  constructor(options: Partial<Options>, context: SourceContext, deps: S3SourceDeps = {}) {
    const o = { ...defaults, ...options };
    this.name = context.name;
    this.#configPath = `sources.${context.name}`;
    this.opts = {
      bucket: o.bucket,
      prefix: o.prefix.replace(/^\/+/, ""),
      concurrency: Math.max(1, o.concurrency),
      from: o.from,
      accounts: new Set(o.accounts),
      regions: new Set(o.regions),
      lookbackMs: parseDuration(o.lookback) ?? 3_600_000,
      retryMs: parseDuration(o.retryFailedAfter) ?? 300_000,
      region: o.region,
    };
    this.#now = deps.now ?? Date.now;
    this.client = deps.client ??
      new S3Client({
        ...awsClientConfig(o),
        forcePathStyle: o.forcePathStyle,
        // The SDK would CRC every body it downloads when the object has a checksum; the decoder
        // already checks gzip's CRC32 and s3BodyStream the length, so this costs without adding.
        responseChecksumValidation: "WHEN_REQUIRED",
      });
    log.debug(`source ${this.name}: ${credentialPlan(o).description}`);
  }

  /** A state key of this source. */
  key(...parts: string[]): Deno.KvKey {
    return ["src", this.name, ...parts];
  }

  #where(prefix = this.opts.prefix): string {
    return `s3://${this.opts.bucket}/${prefix}`;
  }

  /**
   * Checks the bucket: HeadBucket, then (when that is denied, as with a policy that only allows
   * listing under the trail's prefix) a one-key listing of the prefix. Throws a message naming
   * what to fix: a missing bucket, the bucket's real region, rejected credentials, or the
   * permission likely missing.
   */
  async preflight(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.opts.bucket }));
      return;
    } catch (error) {
      const info = await this.#bucketError(error);
      if (info.kind !== "access-denied") {
        throw new Error(`Cannot open s3://${this.opts.bucket}: ${info.message}`, { cause: error });
      }
    }
    const controller = new AbortController();
    await this.#list({ Prefix: this.opts.prefix, MaxKeys: 1 }, controller.signal);
  }

  /** What an error of a bucket-level call (HeadBucket, ListObjectsV2) means. */
  async #bucketError(error: unknown): Promise<AwsErrorInfo> {
    return describeAwsError(error, {
      permission: "s3:ListBucket",
      arn: `arn:aws:s3:::${this.opts.bucket}`,
      scope: "bucket",
      region: this.opts.region ?? await clientRegion(this.client),
      configPath: this.#configPath,
    });
  }

  async #list(
    input: Omit<ListObjectsV2CommandInput, "Bucket">,
    signal: AbortSignal,
  ): Promise<ListObjectsV2CommandOutput> {
    try {
      return await this.client.send(
        new ListObjectsV2Command({ Bucket: this.opts.bucket, ...input }),
        { abortSignal: signal },
      );
    } catch (error) {
      const info = await this.#bucketError(error);
      throw new ListingError(`Cannot list ${this.#where(input.Prefix)}: ${info.message}`, info, {
        cause: error,
      });
    }
  }

  /** Every sub-folder of `prefix` (a delimiter listing, paginated). */
  async #folders(prefix: string, signal: AbortSignal): Promise<string[]> {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.#list(
        { Prefix: prefix, Delimiter: "/", ContinuationToken: token },
        signal,
      );
      for (const p of page.CommonPrefixes ?? []) if (p.Prefix) out.push(p.Prefix);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token && !signal.aborted);
    return out;
  }

  /** The account/region folders under `AWSLogs/`, or undefined if there is no such layout. */
  async discover(
    signal: AbortSignal,
    skip: (folder: string, reason: string) => void,
  ): Promise<Stream[] | undefined> {
    const { root, within } = layoutRoot(this.opts.prefix);
    const top = await this.#folders(root, signal);
    const accountDirs: string[] = [];
    const orgDirs: string[] = [];
    for (const folder of top) {
      const name = lastSegment(folder);
      if (ACCOUNT_DIR.test(name)) accountDirs.push(folder);
      else if (ORG_DIR.test(name)) orgDirs.push(folder);
    }
    if (!accountDirs.length && !orgDirs.length) return undefined;
    const nested = await mapLimit(
      orgDirs.filter((d) => folderMatches(d, within)),
      DISCOVERY_CONCURRENCY,
      (d) => this.#folders(d, signal),
    );
    for (const list of nested) {
      for (const folder of list) {
        if (ACCOUNT_DIR.test(lastSegment(folder))) accountDirs.push(folder);
      }
    }
    const { accounts } = this.opts;
    const wanted = accountDirs.filter((d) =>
      folderMatches(d, within) && (accounts.size === 0 || accounts.has(lastSegment(d)))
    ).sort();
    const perAccount = await mapLimit(wanted, DISCOVERY_CONCURRENCY, async (dir) => {
      const streams: Stream[] = [];
      try {
        await this.#accountStreams(dir, within, streams, signal);
      } catch (error) {
        // One account folder that cannot be listed (a prefix-scoped policy, throttling) does not
        // stop the others; it is listed again next pass.
        if (!(error instanceof ListingError) || error.bucketWide || signal.aborted) throw error;
        skip(this.#where(dir), errorMessage(error));
      }
      return streams;
    });
    return perAccount.flat();
  }

  /** Adds the `CloudTrail`/`CloudTrail-Insight` region folders of an account folder. */
  async #accountStreams(
    dir: string,
    within: string,
    streams: Stream[],
    signal: AbortSignal,
  ): Promise<void> {
    const { regions } = this.opts;
    const kinds = (await this.#folders(dir, signal)).filter((k) =>
      (LOG_KINDS as readonly string[]).includes(lastSegment(k)) && folderMatches(k, within)
    );
    for (const kindDir of kinds) {
      for (const regionDir of await this.#folders(kindDir, signal)) {
        const region = lastSegment(regionDir);
        if (regions.size && !regions.has(region)) continue;
        if (!folderMatches(regionDir, within)) continue;
        streams.push({
          prefix: regionDir,
          listPrefix: within.length > regionDir.length ? within : regionDir,
          account: lastSegment(dir),
          region,
          kind: lastSegment(kindDir) as LogKind,
        });
      }
    }
  }

  /** Builds an object of this source. */
  object(
    pass: Pass,
    key: string,
    init: {
      stream?: string;
      time?: number;
      size?: number;
      etag?: string;
      insight?: boolean;
      retry?: FailedMark;
    },
  ): S3Object {
    const object: S3Object = {
      id: s3ObjectId(this.opts.bucket, key),
      key,
      pass,
      size: init.size,
      insight: init.insight || isInsightKey(key) || undefined,
      stream: init.stream,
      time: init.time,
      etag: init.etag,
      retry: init.retry,
      open: (signal: AbortSignal) => this.#open(object, signal),
    };
    return object;
  }

  /** Opens an object: takes over its prefetched download, or starts one. */
  async #open(object: S3Object, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const started = object.prefetch?.take(signal);
    object.prefetch = undefined;
    let response: Promise<GetObjectCommandOutput>;
    let unlink: () => void;
    if (started) ({ response, unlink } = started);
    else {
      const controller = new AbortController();
      unlink = link(signal, controller);
      response = this.client.send(
        new GetObjectCommand({ Bucket: this.opts.bucket, Key: object.key }),
        { abortSignal: controller.signal },
      ).then(quietBody);
    }
    try {
      return s3BodyStream(await response, object.id, unlink);
    } catch (error) {
      unlink();
      if (error instanceof SourceReadError && !(error instanceof S3ObjectError)) throw error;
      const failure = s3ObjectError(error, this.opts.bucket, object.key, {
        region: this.opts.region,
        configPath: this.#configPath,
      });
      object.lastError = failure;
      throw failure;
    }
  }

  /** Objects to read in one folder, in key order. */
  async *streamObjects(
    pass: Pass,
    stream: Stream,
    first: Promise<ListObjectsV2CommandOutput>,
    startAfter: string | undefined,
    state: StreamState,
    signal: AbortSignal,
  ): AsyncGenerator<S3Object> {
    const low = state.tail ? pass.windowStart(state.tail) : undefined;
    const fromTime = state.tail ? undefined : pass.fromTime;
    let page = await first;
    while (true) {
      let count = 0;
      let bytes = 0;
      const batch: S3Object[] = [];
      for (const item of page.Contents ?? []) {
        const key = item.Key;
        if (!key || key.endsWith("/") || isDigestKey(key) || !key.startsWith(stream.prefix)) {
          continue;
        }
        const rel = key.slice(stream.prefix.length);
        const parsed = parseStreamKey(rel);
        if (!parsed) {
          pass.ignored++;
          pass.ignoredExample ||= key;
          continue;
        }
        if (low !== undefined && parsed.time < low) continue;
        if (fromTime !== undefined && parsed.time < floorMinute(fromTime)) continue;
        if (state.seen.has(rel) || pass.failed.has(key)) continue;
        batch.push(this.object(pass, key, {
          stream: stream.prefix,
          time: parsed.time,
          size: item.Size,
          etag: item.ETag,
          insight: stream.kind === "CloudTrail-Insight",
        }));
        count++;
        bytes += item.Size ?? 0;
      }
      if (count) pass.run.progress.listed(count, bytes);
      yield* batch;
      const token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (!token || signal.aborted) return;
      page = await this.#list(
        { Prefix: stream.listPrefix, StartAfter: startAfter, ContinuationToken: token },
        signal,
      );
    }
  }

  /** Opens a folder: reads its checkpoint, drops expired keys, starts its first listing page. */
  async openStream(pass: Pass, stream: Stream, signal: AbortSignal) {
    const state = await pass.stream(stream.prefix);
    let startAfter: string | undefined;
    if (state.tail) {
      const low = pass.windowStart(state.tail);
      const name = state.tail.key.slice(state.tail.key.lastIndexOf("/") + 1);
      const namePrefix = /^(.*?_)\d{8}T\d{4}Z_/.exec(name)?.[1];
      startAfter = stream.prefix + startKeyFor(low, namePrefix);
      for (const [rel, time] of state.seen) {
        if (time < low) {
          state.seen.delete(rel);
          if (pass.prune.length < 10_000) pass.prune.push(this.key("seen", stream.prefix, rel));
        }
      }
    } else if (pass.fromTime !== undefined) {
      startAfter = stream.prefix + startKeyFor(pass.fromTime);
    }
    const first = this.#list({ Prefix: stream.listPrefix, StartAfter: startAfter }, signal);
    first.catch(() => {});
    return { stream, state, startAfter, first };
  }

  /** The listing side of a pass: retries, then every folder (or the plain prefix). */
  async produce(pass: Pass, out: Channel<S3Object>, signal: AbortSignal): Promise<void> {
    const retries = pass.retries();
    if (retries.length) {
      pass.run.progress.listed(retries.length, retries.reduce((n, o) => n + (o.size ?? 0), 0));
    }
    for (const object of retries) await out.push(object);
    const streams = await this.discover(signal, (folder, reason) => {
      pass.run.fail(folder, reason);
      log.warn(reason);
    });
    if (signal.aborted) return;
    if (!streams) {
      if (!this.#told) {
        log.info(
          `source ${this.name}: no AWSLogs/<account>/CloudTrail/ folders under ` +
            `${this.#where(layoutRoot(this.opts.prefix).root)}; reading every object under ` +
            `${this.#where()} (plain listing)`,
        );
        this.#told = true;
      }
      await this.producePlain(pass, out, signal);
      return;
    }
    log.debug(`source ${this.name}: ${streams.length} account/region folder(s)`);
    const opened = new Map<number, ReturnType<S3Source["openStream"]>>();
    const open = (i: number) => {
      if (i >= streams.length || opened.has(i)) return;
      const started = this.openStream(pass, streams[i], signal);
      started.catch(() => {});
      opened.set(i, started);
    };
    for (let i = 0; i < streams.length && !signal.aborted; i++) {
      for (let j = i; j < i + LIST_LOOKAHEAD; j++) open(j);
      const started = opened.get(i)!;
      opened.delete(i);
      try {
        const { stream, state, startAfter, first } = await started;
        for await (
          const object of this.streamObjects(pass, stream, first, startAfter, state, signal)
        ) {
          await out.push(object);
          if (signal.aborted) return;
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ListingError && !error.bucketWide) {
          pass.run.fail(this.#where(streams[i].prefix), errorMessage(error));
          log.warn(errorMessage(error));
          continue;
        }
        throw error;
      }
    }
    if (pass.ignored) {
      log.info(
        `source ${this.name}: ignored ${pass.ignored} key(s) that are not CloudTrail log files, ` +
          `e.g. ${this.#where(pass.ignoredExample)}`,
      );
    }
  }

  /** The plain layout: every key under the prefix, with a per-key checkpoint. */
  async producePlain(pass: Pass, out: Channel<S3Object>, signal: AbortSignal): Promise<void> {
    const marks = new Map<string, KeyMark>();
    for await (const entry of pass.run.state.list<KeyMark>(this.key("key"))) {
      marks.set(entry.key[entry.key.length - 1] as string, entry.value);
    }
    const fromTime = pass.fromTime;
    let token: string | undefined;
    do {
      const page = await this.#list({ Prefix: this.opts.prefix, ContinuationToken: token }, signal);
      let count = 0;
      let bytes = 0;
      const batch: S3Object[] = [];
      for (const item of page.Contents ?? []) {
        const key = item.Key;
        if (!key || key.endsWith("/") || isDigestKey(key)) continue;
        const mark = marks.get(key);
        marks.delete(key);
        if (mark && (mark.e === undefined || item.ETag === undefined || mark.e === item.ETag)) {
          continue;
        }
        if (pass.failed.has(key)) continue;
        if (fromTime !== undefined && item.LastModified && item.LastModified.getTime() < fromTime) {
          continue;
        }
        batch.push(this.object(pass, key, { size: item.Size, etag: item.ETag }));
        count++;
        bytes += item.Size ?? 0;
      }
      if (count) pass.run.progress.listed(count, bytes);
      for (const object of batch) await out.push(object);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token && !signal.aborted);
    if (signal.aborted) return;
    // Marks of objects that are gone (deleted, lifecycle-expired) are dropped.
    for (const key of marks.keys()) {
      if (pass.prune.length >= 10_000) break;
      pass.prune.push(this.key("key", key));
    }
  }

  async *objects(run: SourceRun): AsyncGenerator<SourceObject> {
    const pass = new Pass(this, run, this.#now());
    await pass.load();
    const stop = new AbortController();
    const unlink = link(run.signal, stop);
    const queue = new Channel<S3Object>(LISTED_AHEAD);
    const producing = this.produce(pass, queue, stop.signal).then(
      () => queue.close(),
      // An abort cancels the listing in flight: that is a stop, not a failure.
      (error) => queue.close(stop.signal.aborted ? undefined : error),
    );
    const ahead: S3Object[] = [];
    const depth = Math.max(1, this.opts.concurrency - 1);
    const prefetch = this.opts.concurrency > 1;
    const fill = async (wait: boolean) => {
      while (ahead.length < depth) {
        const next = wait && ahead.length === 0 ? await queue.take() : queue.tryTake();
        if (!next) return;
        if (prefetch) next.prefetch = new Prefetch(this.client, this.opts.bucket, next.key);
        ahead.push(next);
      }
    };
    try {
      while (!run.signal.aborted && !pass.stopped) {
        await fill(true);
        const object = ahead.shift();
        if (!object) break;
        await fill(false);
        yield object;
      }
      if (pass.stopped) run.fail(this.#where(), pass.stopped);
    } finally {
      stop.abort();
      unlink();
      queue.close();
      for (const object of ahead) object.prefetch?.cancel();
      await producing;
    }
  }

  async checkpoint(object: SourceObject, commit: Commit, failure?: string): Promise<void> {
    const o = object as S3Object;
    o.pass.consecutiveDenied = 0;
    await o.pass.stageDone(commit, o, failure);
    await o.pass.stageBookkeeping(commit);
  }

  released(object: SourceObject, reason: string): void {
    const o = object as S3Object;
    const pass = o.pass;
    o.prefetch?.cancel();
    const kind = o.lastError?.kind;
    if (kind === "no-such-key") {
      pass.pendingGone.set(o.key, o);
      return;
    }
    if (kind && PERMISSION_KINDS.includes(kind)) {
      if (++pass.consecutiveDenied >= MAX_CONSECUTIVE_DENIED) {
        pass.stopped = `stopped this pass: ${pass.consecutiveDenied} objects in a row could not ` +
          `be read; last: ${reason}`;
      }
    } else pass.consecutiveDenied = 0;
    const previous = pass.failed.get(o.key) ?? o.retry;
    const attempts = (previous?.attempts ?? 0) + 1;
    const now = this.#now();
    const wait = Math.min(RETRY_MAX_MS, this.opts.retryMs * 2 ** (attempts - 1));
    const mark: FailedMark = {
      attempts,
      reason,
      first: previous?.first ?? now,
      last: now,
      next: now + wait,
    };
    if (o.stream !== undefined) mark.stream = o.stream;
    if (o.time !== undefined) mark.time = o.time;
    if (o.size !== undefined) mark.size = o.size;
    if (o.etag !== undefined) mark.etag = o.etag;
    if (o.insight) mark.insight = true;
    pass.failed.set(o.key, mark);
    pass.pendingFailed.set(o.key, mark);
    if (pass.pendingFailed.size >= MAX_PENDING_FAILURES && !pass.stopped) {
      pass.stopped = `stopped this pass: ${pass.pendingFailed.size} objects failed without one ` +
        `being read; last: ${reason}`;
    }
  }

  close(): Promise<void> {
    this.client.destroy();
    return Promise.resolve();
  }
}

/** Creates an `s3` source. */
export function createS3Source(
  options: Partial<Options>,
  context: SourceContext,
  deps: S3SourceDeps = {},
): Source {
  return new S3Source(options, context, deps);
}

/** The `s3` source plugin. */
export const s3Source: SourcePlugin = {
  description: "CloudTrail log files from an S3 bucket (organization trails included)",
  check(check: OptionsChecker) {
    check.string("bucket", {
      required: true,
      pattern: /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      hint: "an S3 bucket name (3–63 lowercase letters, digits, dots and hyphens)",
    });
    check.string("prefix");
    check.integer("concurrency", { min: 1, max: 64 });
    const from = check.string("from");
    if (from !== undefined && resolveFrom(from, Date.now()) === undefined) {
      check.problem(
        "from",
        `expected an ISO time such as "2026-01-01T00:00:00Z" or a duration such as "7d", got ${
          describe(from)
        }`,
      );
    }
    check.strings("accounts", {
      each: (a) => (/^\d{12}$/.test(a) ? undefined : `expected a 12-digit account id, got "${a}"`),
    });
    check.strings("regions", {
      each: (
        r,
      ) => (/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/.test(r)
        ? undefined
        : `expected a region such as eu-west-1, got "${r}"`),
    });
    check.duration("lookback");
    check.duration("retryFailedAfter");
    checkAwsOptions(check);
    checkSeedNames(check, { bucket_name: "bucket" });
  },
  create: (options: RawOptions, context) => createS3Source(options as Partial<Options>, context),
};
