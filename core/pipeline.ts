/**
 * The pipeline: source objects → decode → normalize → dedupe → detectors → outbox, with each
 * chunk of records committed atomically together with its alerts, detector state, dedupe ids and
 * progress, and the object's checkpoint committed with its last chunk. A crash therefore never
 * skips an object (its checkpoint was not written) and never delivers an alert twice (alerts and
 * the progress that produced them are one commit; restarted work resumes after the progress).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { setImmediate } from "node:timers";
import type { Detector, DetectorContext } from "../detectors/mod.ts";
import { detectors as detectorRegistry } from "../detectors/mod.ts";
import { GeoCache, geoipLiteProvider, type GeoProvider, noGeoProvider } from "../mapping/geo.ts";
import { sinks as sinkRegistry } from "../sinks/mod.ts";
import { type DeliveryReport, Outbox, type Route } from "../sinks/outbox.ts";
import type { Source, SourceObject, SourceRun } from "../sources/mod.ts";
import { sources as sourceRegistry } from "../sources/mod.ts";
import type { Config, SourceConfig } from "./config.ts";
import { decodeRecords, DEFERRED_PAYLOADS, readFileChunks } from "./decode.ts";
import { eventHash, type Prepared, type PreparedEvent, Preparer } from "./prepare.ts";
import { type DecodeJob, DecodePool } from "./workers.ts";
import { Dedupe } from "./dedupe.ts";
import { errorMessage, ObjectDecodeError, SourceReadError } from "./errors.ts";
import { failpoint } from "./failpoint.ts";
import { log, redact } from "./log.ts";
import { Progress } from "./progress.ts";
import { Commit, KV_LIMITS, Lease, StateCache, StateStore } from "./state.ts";
import type { Alert, AlertDraft, NormalizedEvent } from "./types.ts";

/** What one pass did; also the `--summary` JSON. */
export interface Summary {
  /** Objects processed to the end (record failures included). */
  objects_read: number;
  /** Objects that failed as a whole (unreadable, corrupt, over a cap). */
  objects_failed: number;
  /** Events processed (new, not duplicates). */
  events: number;
  /** Records that could not be processed. */
  events_failed: number;
  /** Events skipped because their eventID was processed before. */
  duplicates_skipped: number;
  /** Alerts put in the outbox. */
  alerts: number;
  /** Alerts stopped by a filter (kept in state, not delivered). */
  alerts_suppressed: number;
  /** Wall time in seconds. */
  duration_s: number;
  /** Every failure, with the object and the reason. */
  failures: { object: string; reason: string }[];
}

/** A zeroed summary. */
export function emptySummary(): Summary {
  return {
    objects_read: 0,
    objects_failed: 0,
    events: 0,
    events_failed: 0,
    duplicates_skipped: 0,
    alerts: 0,
    alerts_suppressed: 0,
    duration_s: 0,
    failures: [],
  };
}

/** Adds `b` into `a`. */
export function mergeSummary(a: Summary, b: Summary): Summary {
  a.objects_read += b.objects_read;
  a.objects_failed += b.objects_failed;
  a.events += b.events;
  a.events_failed += b.events_failed;
  a.duplicates_skipped += b.duplicates_skipped;
  a.alerts += b.alerts;
  a.alerts_suppressed += b.alerts_suppressed;
  a.duration_s += b.duration_s;
  a.failures.push(...b.failures);
  return a;
}

/** The human summary line printed at the end of every pass. */
export function formatSummary(label: string, s: Summary): string {
  const rate = s.duration_s > 0 ? Math.round(s.events / s.duration_s) : 0;
  return `${label}: ${s.objects_read} objects read, ${s.objects_failed} failed; ` +
    `${s.events} events (${s.events_failed} failed, ${s.duplicates_skipped} duplicates skipped); ` +
    `${s.alerts} alerts (${s.alerts_suppressed} suppressed); ${s.duration_s.toFixed(2)} s` +
    (rate ? ` (${rate} events/s)` : "");
}

/** Record failures listed per object before they are only counted. */
const MAX_RECORD_FAILURES_LISTED = 20;
/** Records per chunk before a commit, to bound the work redone after a crash. */
const CHUNK_RECORDS = 20_000;
/** Events processed between event-loop turns when decode workers feed the pass. */
const TURN_EVERY = 128;
/** Attempts to read an object within one pass before it is released to a later pass. */
const READ_ATTEMPTS = 3;
/** First delay between read attempts (ms), doubled each time, with jitter. */
const READ_RETRY_MS = 500;
/** Largest alert JSON kept whole (KV values are limited to 64 KiB). */
const MAX_ALERT_BYTES = 60_000;

/**
 * The alert a detector's draft becomes: fields left out come from the triggering event, the id is
 * deterministic (see {@link alertId}; with `idFromKey` the events are left out of it), and the
 * details are trimmed to fit a KV value.
 */
export function buildAlert(detector: string, draft: AlertDraft, event: NormalizedEvent): Alert {
  const eventIds = draft.event_ids ?? [event.event_id];
  const details: Record<string, unknown> = { ...draft.details };
  if (
    details.country === undefined && event.country &&
    (draft.ip === undefined || draft.ip === event.ip)
  ) {
    details.country = event.country;
  }
  for (const key of Object.keys(details)) if (details[key] === undefined) delete details[key];
  const account = draft.account_id ?? event.account_id;
  return fitAlert({
    id: alertId(detector, draft.idFromKey ? [] : eventIds, draft.key, account),
    detector,
    severity: draft.severity,
    title: draft.title,
    time: draft.time ?? event.timestamp,
    user: draft.user ?? event.username,
    account_id: account,
    region: draft.region ?? event.region,
    ip: draft.ip ?? event.ip,
    event_ids: eventIds,
    details,
  });
}

/** A message about an object, naming it unless the message already does. */
function withId(object: SourceObject, message: string): string {
  return message.includes(object.id) ? message : `${object.id}: ${message}`;
}

/**
 * The deterministic id of an alert: same detector + events (+ key, + account) ⇒ same id. The
 * account is part of it because CloudTrail delivers a cross-account call to both accounts' trails
 * with one eventID.
 */
export function alertId(
  detector: string,
  eventIds: readonly string[],
  key = "",
  account = "",
): string {
  const events = [...eventIds].sort().join("\u0001");
  return createHash("sha256").update(`${detector}\u0000${events}\u0000${key}\u0000${account}`)
    .digest("hex")
    .slice(0, 32);
}

/** Shrinks an alert's details until its JSON fits a KV value. */
export function fitAlert(alert: Alert): Alert {
  let size = JSON.stringify(alert).length;
  if (size <= MAX_ALERT_BYTES) return alert;
  const details: Record<string, unknown> = { ...alert.details };
  const fields = Object.keys(details).map((k) =>
    [k, JSON.stringify(details[k] ?? null).length] as const
  )
    .sort((a, b) => b[1] - a[1]);
  const dropped: string[] = [];
  for (const [key, length] of fields) {
    if (size <= MAX_ALERT_BYTES) break;
    delete details[key];
    dropped.push(key);
    size -= length;
  }
  details.truncated = `removed to fit the 60 KB alert limit: ${dropped.join(", ")}`;
  return { ...alert, details };
}

/** Options of {@link Runtime.create}. */
export interface RuntimeOptions {
  /** Overrides `state.path` (the `--state` flag). */
  statePath?: string;
  /** Drops every write (the `--dry-run` flag). */
  dryRun?: boolean;
  /** An already open store (tests). */
  store?: StateStore;
  /** A GeoIP provider instead of the configured one (tests). */
  geo?: GeoProvider;
  /** Overrides `state.leaseWait` (ms). */
  leaseWaitMs?: number;
  /** Called for every alert as it is put in the outbox (in dry-run mode: instead of it). */
  onAlert?: (alert: Alert) => void;
  /**
   * Starts the decode workers and loads the geo database at once, in the background (`ingest`),
   * rather than when the first pass needs them. Failures surface when a pass needs the thing.
   */
  warmUp?: boolean;
}

/** What `["progress", source, object]` holds. */
interface ObjectProgress {
  records: number;
  size?: number;
}

/** A chunk's commit, and the alerts to add to it once checked against the outbox. */
interface Chunk {
  commit: Commit;
  alerts: Alert[];
}

interface PassState {
  source: Source;
  config: SourceConfig;
  summary: Summary;
  cache: StateCache;
  dedupe: Dedupe;
  contexts: DetectorContext[];
  /** Alerts raised since the last commit, by id. */
  alerts: Map<string, Alert>;
  suppressed: Map<string, { alert: Alert; filter: string }>;
  /** Alerts waiting for the detectors' onAlert hooks. */
  queue: { alert: Alert; from: number }[];
  /** Approximate KV bytes and mutations of the alerts raised since the last commit. */
  chunkBytes: number;
  chunkMutations: number;
  chunkRecords: number;
  progress: Progress;
  /**
   * Records already committed of partly processed objects, by object id: read from KV once at
   * the start of the pass and kept up to date by the pass (it holds the lease), so that starting
   * an object does not wait for the previous object's commit to land.
   */
  resume: Map<string, ObjectProgress>;
  /** The last commit started (they land in order). */
  inflight: Promise<void>;
  /** Batches left before the next state prefetch. */
  prefetchSkip: number;
}

/** The state store refused a commit: the pass stops (nothing after the last commit is kept). */
export class StateCommitError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StateCommitError";
  }
}

/** Thrown when another process holds the state lease. */
export class LeaseBusyError extends Error {
  /** Creates the error from the holder's description. */
  constructor(message: string) {
    super(message);
    this.name = "LeaseBusyError";
  }
}

/** Starts the decode workers of `pipeline.workers` (none: undefined). */
function startPool(config: Config): Promise<DecodePool> | undefined {
  const workers = config.pipeline.workers;
  if (workers === 0) return undefined;
  const pool = DecodePool.create(
    workers,
    config.detectors.map(({ name, type, options }) => ({ name, type, options })),
    config.baseDir,
  );
  pool.catch(() => {}); // observed by the pass that needs it
  return pool;
}

/**
 * A configured trailwatch: sources, detectors, sinks, state and outbox. Passes of one runtime run
 * one at a time; the lease keeps other processes off the same state.
 *
 * @example One pass over every source
 * ```ts
 * import { resolveConfig } from "./config.ts";
 * import { Runtime } from "./pipeline.ts";
 * const config = resolveConfig({ sources: { demo: { type: "local", path: "examples/logs" } } }, ".");
 * const runtime = await Runtime.create(config, { statePath: ":memory:" });
 * const summary = await runtime.runOnce();
 * await runtime.close();
 * ```
 */
export class Runtime {
  /** The configuration. */
  readonly config: Config;
  /** The state store. */
  readonly store: StateStore;
  /** Enabled sources by name. */
  readonly sources: Map<string, { source: Source; config: SourceConfig }>;
  /** Enabled detectors. */
  readonly detectors: Detector[];
  /** The outbox and its routes. */
  readonly outbox: Outbox;
  /** GeoIP, cached per IP. */
  readonly geo: GeoCache;
  readonly #ownsStore: boolean;
  readonly #leaseWaitMs: number;
  readonly #onAlert: ((alert: Alert) => void) | undefined;
  #lease: Lease | undefined;
  #leaseUsers = 0;
  /** Aborted by close(): cancels downloads in flight. */
  #closing = new AbortController();
  /** Decode workers, when `pipeline.workers` > 0: started at creation with `warmUp` (ingest),
   * else by the first pass; never by commands (validate, outbox) that do not decode. */
  #pool: Promise<DecodePool> | undefined;
  /** How `#pool` settled, readable without waiting. */
  readonly #workers: { pool?: DecodePool; failed?: boolean } = {};
  /** Indexes of the detectors that tell which state keys they will read. */
  #prefetchers: number[] = [];
  #tail: Promise<unknown> = Promise.resolve();

  private constructor(
    config: Config,
    store: StateStore,
    ownsStore: boolean,
    sources: Map<string, { source: Source; config: SourceConfig }>,
    detectors: Detector[],
    outbox: Outbox,
    geo: GeoCache,
    leaseWaitMs: number,
    onAlert: ((alert: Alert) => void) | undefined,
  ) {
    this.config = config;
    this.store = store;
    this.#ownsStore = ownsStore;
    this.sources = sources;
    this.detectors = detectors;
    this.outbox = outbox;
    this.geo = geo;
    this.#leaseWaitMs = leaseWaitMs;
    this.#onAlert = onAlert;
  }

  /** Builds every plugin of `config` and opens the state. */
  static async create(config: Config, options: RuntimeOptions = {}): Promise<Runtime> {
    // Workers take a while to start: let them while this thread builds the rest.
    const pool = options.warmUp ? startPool(config) : undefined;
    try {
      const runtime = await Runtime.#build(config, options);
      runtime.#track(pool);
      if (options.warmUp) runtime.geo.ready().catch(() => {});
      return runtime;
    } catch (error) {
      await pool?.then((p) => p.close(), () => {});
      throw error;
    }
  }

  static async #build(config: Config, options: RuntimeOptions): Promise<Runtime> {
    const store = options.store ??
      await StateStore.open(options.statePath ?? config.state.path, { dryRun: options.dryRun });
    const sources = new Map<string, { source: Source; config: SourceConfig }>();
    for (const sc of config.sources) {
      const source = sourceRegistry[sc.type].create(sc.options, {
        name: sc.name,
        baseDir: config.baseDir,
      });
      sources.set(sc.name, { source, config: sc });
    }
    const detectors: Detector[] = [];
    for (const dc of config.detectors) {
      detectors.push(
        await detectorRegistry[dc.type].create(dc.options, {
          name: dc.name,
          baseDir: config.baseDir,
        }),
      );
    }
    const routes: Route[] = config.sinks.map((sc) => ({
      sink: sinkRegistry[sc.type].create(sc.options, { name: sc.name, baseDir: config.baseDir }),
      minSeverity: sc.minSeverity,
      detectors: sc.detectors,
      excludeDetectors: sc.excludeDetectors,
      group: sc.group,
    }));
    const outbox = new Outbox(store, routes, config.delivery);
    const provider = options.geo ??
      (config.geo.provider === "none" ? noGeoProvider() : geoipLiteProvider());
    const geo = new GeoCache(provider, config.geo.cacheSize);
    const runtime = new Runtime(
      config,
      store,
      !options.store,
      sources,
      detectors,
      outbox,
      geo,
      options.leaseWaitMs ?? config.state.leaseWaitMs,
      options.onAlert,
    );
    detectors.forEach((d, i) => d.prefetch && runtime.#prefetchers.push(i));
    return runtime;
  }

  /** Runs `fn` after every earlier call (passes and deliveries of this runtime never overlap). */
  #serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn, fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /** Runs `fn` under the state lease (taken once per process, shared by nested calls). */
  async #withLease<T>(fn: () => Promise<T>): Promise<T> {
    if (this.store.dryRun) return await fn();
    if (!this.#lease) {
      const lease = await Lease.acquire(this.store, {
        ttlMs: this.config.state.leaseTtlMs,
        waitMs: this.#leaseWaitMs,
        onWait: (h) =>
          log.info(
            `waiting for the state lease held by pid ${h.pid} on ${h.host} since ${h.since}`,
          ),
      });
      if (!lease) {
        const holder = await Lease.holder(this.store);
        throw new LeaseBusyError(
          `another trailwatch process holds the state ${this.store.path || "(default KV)"}` +
            (holder ? ` (pid ${holder.pid} on ${holder.host}, since ${holder.since})` : "") +
            "; skipping this run",
        );
      }
      this.#lease = lease;
    }
    this.#leaseUsers++;
    try {
      return await fn();
    } finally {
      if (--this.#leaseUsers === 0 && this.#lease) {
        const lease = this.#lease;
        this.#lease = undefined;
        await lease.release();
      }
    }
  }

  /** One pass of one source: everything new, until nothing is left or `signal` aborts. */
  pass(name: string, options: { signal?: AbortSignal } = {}): Promise<Summary> {
    const entry = this.sources.get(name);
    if (!entry) throw new RangeError(`no enabled source named "${name}"`);
    return this.#serialized(() =>
      this.#withLease(() => this.#pass(entry.source, entry.config, options.signal))
    );
  }

  /**
   * Runs every enabled source (or `source`) until it has nothing new, then delivers the outbox.
   * Returns the merged summary.
   */
  async runOnce(options: { source?: string; signal?: AbortSignal } = {}): Promise<Summary> {
    const started = performance.now();
    const names = options.source ? [options.source] : [...this.sources.keys()];
    const total = emptySummary();
    await this.#serialized(() =>
      this.#withLease(async () => {
        for (const name of names) {
          const entry = this.sources.get(name);
          if (!entry) throw new RangeError(`no enabled source named "${name}"`);
          if (options.signal?.aborted) break;
          mergeSummary(total, await this.#pass(entry.source, entry.config, options.signal));
        }
        failpoint("before-delivery");
        if (!this.store.dryRun) await this.outbox.deliver({ signal: options.signal });
      })
    );
    total.duration_s = (performance.now() - started) / 1000;
    return total;
  }

  /**
   * Starts the decode workers and loads the geo database, if not done yet, and waits for both
   * (otherwise a pass starts them when it first needs them, and decodes on this thread until
   * the workers are up).
   */
  async warmUp(): Promise<void> {
    await Promise.all([this.#decodePool(), this.geo.ready()]);
  }

  /** One delivery round of the outbox (the delivery cron). */
  deliver(options: { signal?: AbortSignal; sink?: string } = {}): Promise<DeliveryReport> {
    return this.#serialized(() => this.#withLease(() => this.outbox.deliver(options)));
  }

  async #pass(source: Source, config: SourceConfig, signal?: AbortSignal): Promise<Summary> {
    const started = performance.now();
    const summary = emptySummary();
    const cache = new StateCache(this.store);
    // A detector with no state yet (a first backfill) needs no KV reads until it has some.
    await Promise.all(this.detectors.map(async ({ name }) => {
      const first = await this.store.kv.list({ prefix: ["det", name] }, { limit: 1 }).next();
      if (first.done) cache.assumeEmpty(name);
    }));
    const resume = new Map<string, ObjectProgress>();
    for await (const e of this.store.list<ObjectProgress>(["progress", source.name])) {
      resume.set(e.key[2] as string, e.value);
    }
    const state: PassState = {
      source,
      config,
      summary,
      cache,
      resume,
      dedupe: new Dedupe(this.store, { ttlMs: this.config.state.dedupeTtlMs }),
      contexts: [],
      alerts: new Map(),
      suppressed: new Map(),
      queue: [],
      chunkBytes: 0,
      chunkMutations: 0,
      chunkRecords: 0,
      progress: new Progress({ label: `source ${source.name}` }),
      inflight: Promise.resolve(),
      prefetchSkip: 0,
    };
    state.contexts = this.detectors.map((detector, i) => ({
      state: cache.forDetector(detector.name),
      geo: this.geo,
      alert: (draft, event) => this.#raise(state, i, draft, event),
      suppress: (draft, event, filter) => {
        const alert = buildAlert(detector.name, draft, event);
        state.suppressed.set(alert.id, { alert, filter });
      },
    }));
    const controller = new AbortController();
    const onAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) controller.abort();
    // If another process took the lease (this one stalled past leaseTtl), stop after this object.
    const lost = this.#lease?.lost;
    const onLost = () => {
      const reason = "the state lease was lost (another process took it over); stopped after " +
        "the object in hand";
      log.error(`source ${source.name}: ${reason}`);
      // In the summary too: the pass did not get through its source.
      summary.failures.push({ object: `source ${source.name}`, reason });
      controller.abort(lost?.reason);
    };
    lost?.addEventListener("abort", onLost, { once: true });
    const run: SourceRun = {
      signal: controller.signal,
      state: this.store,
      fail: (object, reason) => summary.failures.push({ object, reason: redact(reason) }),
      progress: { listed: (count, bytes) => state.progress.listed(count, bytes) },
    };
    try {
      const starting = this.#decodePool();
      await source.preflight?.();
      // Objects are taken in order; until the workers are up, this thread decodes them itself.
      // When they come up in the middle of an object, they start on the next ones at once.
      const workers = this.#workers;
      const objects = source.objects(run)[Symbol.asyncIterator]();
      try {
        let exhausted = false;
        let handOver: SourceObject | undefined;
        let head: Promise<void> | undefined;
        while (!controller.signal.aborted && !workers.pool) {
          if (workers.failed) await starting; // throws why the workers did not start
          const next = await objects.next();
          if (next.done) {
            exhausted = true;
            break;
          }
          if (workers.pool) handOver = next.value;
          else if (!starting) await this.#object(state, next.value);
          else {
            head = this.#object(state, next.value);
            const up = await Promise.race([
              head.then(() => false),
              starting.then(() => true, () => false),
            ]);
            if (!up) {
              await head;
              head = undefined;
            }
          }
        }
        if (workers.pool && !exhausted && !controller.signal.aborted) {
          await this.#objectsAhead(state, objects, handOver, controller.signal, workers.pool, head);
        } else await head;
      } finally {
        await objects.return?.();
      }
      // Lazy detector writes that did not fit the last object's commit.
      while (cache.lazyCount > 0) {
        const commit = new Commit();
        cache.flushLazy(commit);
        await this.#commit(state, { commit, alerts: [] });
      }
      await state.inflight; // the last object's commit, and what the source does once it landed
    } catch (error) {
      cache.clear();
      state.dedupe.discardPending();
      summary.failures.push({
        object: `source ${source.name}`,
        reason: redact(errorMessage(error)),
      });
      summary.objects_failed++;
      log.error(`source ${source.name}: ${redact(errorMessage(error))}`);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      lost?.removeEventListener("abort", onLost);
      state.progress.finish();
      await state.inflight.catch(() => {});
    }
    summary.duration_s = (performance.now() - started) / 1000;
    log.summary(formatSummary(`source ${source.name}`, summary));
    return summary;
  }

  #raise(state: PassState, from: number, draft: AlertDraft, event: NormalizedEvent): void {
    const alert = buildAlert(this.detectors[from].name, draft, event);
    if (state.alerts.has(alert.id)) return;
    state.alerts.set(alert.id, alert);
    const mutations = this.outbox.mutationsFor(alert);
    state.chunkMutations += mutations;
    state.chunkBytes += JSON.stringify(alert).length * mutations;
    if (this.detectors.some((d, i) => i !== from && d.onAlert)) state.queue.push({ alert, from });
  }

  async #drainAlertHooks(state: PassState): Promise<void> {
    while (state.queue.length) {
      const { alert, from } = state.queue.shift()!;
      for (let i = 0; i < this.detectors.length; i++) {
        const hook = this.detectors[i].onAlert;
        if (i === from || !hook) continue;
        const result = hook.call(this.detectors[i], alert, state.contexts[i]);
        if (result) await result;
      }
    }
  }

  /**
   * The objects of a pass with decode workers: up to one object per worker is pulled ahead and
   * decoded while the object before it is consumed; objects are still consumed and committed in
   * the order the source gave them. Objects pulled ahead but not consumed (the pass stopped) are
   * simply not checkpointed, so the source offers them again. `first`: an object already taken
   * from `iterator`, to start with. `head`: an object this thread is still consuming, which the
   * objects ahead wait for.
   */
  async #objectsAhead(
    state: PassState,
    iterator: AsyncIterator<SourceObject>,
    first: SourceObject | undefined,
    signal: AbortSignal,
    pool: DecodePool,
    head?: Promise<void>,
  ): Promise<void> {
    const ahead: { object: SourceObject; job?: DecodeJob }[] = [];
    let exhausted = false;
    const fill = async () => {
      while (!exhausted && ahead.length < pool.size && !signal.aborted) {
        let object = first;
        first = undefined;
        if (!object) {
          const next = await iterator.next();
          if (next.done) {
            exhausted = true;
            break;
          }
          object = next.value;
        }
        const job = object.open && !object.records
          ? pool.start(object, state.config, this.#closing.signal)
          : undefined;
        ahead.push({ object, job });
      }
    };
    try {
      const filling = fill();
      // The objects ahead are decoding while this thread finishes the one it had started.
      await head?.catch(async (error) => {
        await filling.catch(() => {});
        throw error;
      });
      await filling;
      while (ahead.length > 0) {
        const { object, job } = ahead.shift()!;
        const filling = fill();
        await this.#object(state, object, job);
        await filling;
        if (signal.aborted) break;
      }
    } finally {
      for (const rest of ahead) rest.job?.cancel();
      await iterator.return?.();
    }
  }

  /**
   * Reads, in a few parallel KV calls, the state the detectors will need for a batch. Once the
   * cache holds the working set (a batch finds nothing to read), only every eighth batch is
   * checked: collecting the keys costs more than the rare miss it would save.
   */
  async #prefetch(state: PassState, batch: Prepared[]): Promise<void> {
    if (state.prefetchSkip > 0) {
      state.prefetchSkip--;
      return;
    }
    const keys: Deno.KvKey[] = [];
    for (const item of batch) {
      if (!item.event) continue;
      for (const i of this.#prefetchers) {
        const key = this.detectors[i].prefetch!(item.event);
        if (key) keys.push(["det", this.detectors[i].name, ...key]);
      }
    }
    const read = await state.cache.prefetch(keys);
    if (read === 0) state.prefetchSkip = 7;
  }

  #decodePool(): Promise<DecodePool> | undefined {
    if (!this.#pool) this.#track(startPool(this.config));
    return this.#pool;
  }

  #track(pool: Promise<DecodePool> | undefined): void {
    this.#pool = pool;
    pool?.then((p) => (this.#workers.pool = p), () => (this.#workers.failed = true));
  }

  /** Decodes and prepares the records of an object on this thread. */
  async *#prepare(
    object: SourceObject,
    config: SourceConfig,
    signal: AbortSignal,
  ): AsyncGenerator<Prepared[]> {
    const preparer = new Preparer(this.detectors, {
      mapping: config.mapping,
      insight: object.insight,
    });
    if (object.records) {
      yield object.records.map((r) => preparer.record(r, 0));
      return;
    }
    if (!object.open) {
      throw new TypeError(`source object ${object.id} has neither records nor open()`);
    }
    // A local file is read into one reused buffer rather than through a stream of fresh ones.
    const input = object.path !== undefined
      ? readFileChunks(object.path)
      : await object.open(signal);
    // Payloads are parsed only when read (by normalize, the rules or a custom mapping).
    const decode = { ...config.decode, defer: DEFERRED_PAYLOADS };
    for await (const batch of decodeRecords(input, object.id, decode)) {
      yield preparer.decoded(batch);
    }
  }

  async #object(state: PassState, object: SourceObject, job?: DecodeJob): Promise<void> {
    const { source, summary } = state;
    const progressKey = ["progress", source.name, object.id];
    const progress = state.resume.get(object.id);
    const resumedAt = progress && progress.size === object.size ? progress.records : 0;
    let listedFailures = 0;
    let unlisted = 0;
    const recordFailure = (reason: string) => {
      summary.events_failed++;
      if (listedFailures++ < MAX_RECORD_FAILURES_LISTED) {
        summary.failures.push({ object: object.id, reason: redact(reason) });
      } else unlisted++;
    };
    let last = resumedAt;
    const saveProgress = (commit: Commit) => {
      const saved = { records: last, size: object.size };
      commit.set(progressKey, saved);
      state.resume.set(object.id, saved);
    };
    let failure: string | undefined;
    const eventsBefore = summary.events;
    for (let attempt = 1;; attempt++) {
      const skip = last;
      try {
        const batches = attempt === 1 && job
          ? job.batches()
          : this.#prepare(object, state.config, this.#closing.signal);
        for await (const batch of batches) {
          if (this.#prefetchers.length) await this.#prefetch(state, batch);
          let sinceTurn = 0;
          // Indexed: a for-of here allocated an iterator result per record.
          for (let k = 0; k < batch.length; k++) {
            const item = batch[k];
            // With decode workers, give the event loop a turn now and then: the workers' input
            // is read and handed over from here, and a long batch would starve them.
            if (job && ++sinceTurn === TURN_EVERY) {
              sinceTurn = 0;
              await new Promise((resolve) => setImmediate(resolve));
            }
            if (item.index <= skip) continue;
            last = item.index;
            if (item.error !== undefined) {
              recordFailure(`record ${item.index} (byte ${item.offset}): ${item.error}`);
              continue;
            }
            let handled = this.#event(state, item);
            if (handled instanceof Promise) handled = await handled;
            const error = handled ?? item.failure;
            if (error) {
              recordFailure(`record ${item.index} (event ${item.event.event_id}): ${error}`);
            }
            if (this.#chunkFull(state)) {
              const chunk = this.#stageChunk(state);
              saveProgress(chunk.commit);
              // The commit lands while the next records are processed (commits stay in order).
              this.#commitBehind(state, chunk);
            }
          }
        }
        break;
      } catch (error) {
        if (error instanceof ObjectDecodeError) {
          failure = error.message;
          break;
        }
        if (error instanceof StateCommitError) throw error;
        // Reading failed (network, permissions): keep what was done; retry from there, a few
        // times (unless retrying cannot help), then let the source offer it again later.
        const reason = redact(errorMessage(error));
        const retryable = !(error instanceof SourceReadError) || error.retryable;
        const chunk = this.#stageChunk(state);
        if (last > resumedAt) saveProgress(chunk.commit);
        await this.#commit(state, chunk);
        if (retryable && attempt < READ_ATTEMPTS && !this.#closing.signal.aborted) {
          const delay = Math.round(READ_RETRY_MS * 2 ** (attempt - 1) * (0.5 + Math.random() / 2));
          log.warn(
            `${withId(object, reason)}; retrying in ${delay} ms (attempt ${
              attempt + 1
            }/${READ_ATTEMPTS})`,
          );
          await new Promise((resolve) => setTimeout(resolve, delay));
          continue;
        }
        summary.objects_failed++;
        summary.failures.push({ object: object.id, reason });
        log.warn(withId(object, reason));
        await source.released?.(object, reason);
        state.progress.done(object.size, 0);
        return;
      }
    }
    // CloudTrail never writes an empty file: zero bytes means a failed or cut-off upload.
    if (failure === undefined && last === 0 && object.size === 0 && !object.records) {
      failure = `Cannot decode ${object.id}: empty object (0 bytes)`;
    }
    if (unlisted) {
      summary.failures.push({
        object: object.id,
        reason: `${unlisted} more record failures not listed`,
      });
    }
    const chunk = this.#stageChunk(state);
    if (last > 0) {
      chunk.commit.delete(progressKey);
      state.resume.delete(object.id);
    }
    await source.checkpoint(object, chunk.commit, failure && redact(failure));
    // Lazy detector writes ride along with the object's last commit, as far as it has room.
    state.cache.flushLazy(chunk.commit);
    // The object's last commit lands while the next object is read (commits stay in order);
    // the source hears of it, and the summary counts it, once it has landed.
    const events = summary.events - eventsBefore;
    this.#commitBehind(state, chunk, async () => {
      await source.committed?.(object);
      failpoint("object-committed");
      state.progress.done(object.size, events);
      if (failure) {
        summary.objects_failed++;
        summary.failures.push({ object: object.id, reason: redact(failure) });
        log.warn(redact(failure));
      } else summary.objects_read++;
    });
  }

  /**
   * Handles one prepared event; returns an error message if a detector failed on it. Synchronous
   * unless something has to wait (a dedupe hour or the geo database loading, an async detector),
   * so the common path costs no promise.
   */
  #event(
    state: PassState,
    item: PreparedEvent,
  ): string | undefined | Promise<string | undefined> {
    const { event, drafts, hashes, slot } = item;
    let h1, h2;
    if (hashes !== undefined && slot !== undefined) {
      // A decode worker hashed the id already.
      h1 = hashes[2 * slot];
      h2 = hashes[2 * slot + 1];
    } else [h1, h2] = eventHash(event);
    const duplicate = state.dedupe.checkHash(h1, h2, event.time);
    if (duplicate instanceof Promise) return this.#afterDedupe(state, event, drafts, duplicate);
    return this.#newEvent(state, event, drafts, duplicate);
  }

  // The continuations of the per-event path (#afterDedupe, #afterGeo, #afterDetector,
  // #afterAlertHooks) are methods of their own: a closure in a method makes V8 allocate a context
  // for its captured variables at every call, taken or not — for #runDetectors, ~1 KB per event.

  #afterDedupe(
    state: PassState,
    event: NormalizedEvent,
    drafts: [number, AlertDraft][] | undefined,
    duplicate: Promise<boolean>,
  ): Promise<string | undefined> {
    return duplicate.then((d) => this.#newEvent(state, event, drafts, d));
  }

  #afterGeo(
    state: PassState,
    event: NormalizedEvent,
    drafts: [number, AlertDraft][] | undefined,
  ): Promise<string | undefined> {
    return this.geo.ready(event.ip).then(() => this.#detect(state, event, drafts));
  }

  #newEvent(
    state: PassState,
    event: NormalizedEvent,
    drafts: [number, AlertDraft][] | undefined,
    duplicate: boolean,
  ): string | undefined | Promise<string | undefined> {
    if (duplicate) {
      state.summary.duplicates_skipped++;
      return undefined;
    }
    state.summary.events++;
    state.chunkRecords++;
    if (event.ip && event.country === undefined && !this.geo.isReady()) {
      return this.#afterGeo(state, event, drafts);
    }
    return this.#detect(state, event, drafts);
  }

  #detect(
    state: PassState,
    event: NormalizedEvent,
    drafts: [number, AlertDraft][] | undefined,
  ): string | undefined | Promise<string | undefined> {
    if (event.ip && event.country === undefined) {
      const geo = this.geo.lookup(event.ip);
      if (geo) {
        event.country = geo.country;
        event.city = geo.city;
        event.lat = geo.lat;
        event.lon = geo.lon;
      }
    }
    if (drafts) { for (const [i, draft] of drafts) this.#raise(state, i, draft, event); }
    return this.#runDetectors(state, event, 0, undefined);
  }

  #runDetectors(
    state: PassState,
    event: NormalizedEvent,
    from: number,
    failed: string | undefined,
  ): string | undefined | Promise<string | undefined> {
    for (let i = from; i < this.detectors.length; i++) {
      const detector = this.detectors[i];
      if (!detector.detect) continue;
      try {
        const result = detector.detect(event, state.contexts[i]);
        if (result) return this.#afterDetector(state, event, i, failed, result);
      } catch (error) {
        failed = this.#detectorFailed(detector, event, error);
      }
    }
    if (state.queue.length) return this.#afterAlertHooks(state, failed);
    return failed;
  }

  async #afterAlertHooks(
    state: PassState,
    failed: string | undefined,
  ): Promise<string | undefined> {
    await this.#drainAlertHooks(state);
    return failed;
  }

  /** Goes on with the detectors after `i` once its promise settles. */
  #afterDetector(
    state: PassState,
    event: NormalizedEvent,
    i: number,
    failed: string | undefined,
    result: Promise<void>,
  ): Promise<string | undefined> {
    return result.then(
      () => this.#runDetectors(state, event, i + 1, failed),
      (error) =>
        this.#runDetectors(
          state,
          event,
          i + 1,
          this.#detectorFailed(this.detectors[i], event, error),
        ),
    );
  }

  #detectorFailed(detector: Detector, event: NormalizedEvent, error: unknown): string {
    const message = `detector ${detector.name} failed: ${errorMessage(error)}`;
    log.warn(`${message} (event ${event.event_id})`);
    return message;
  }

  #chunkFull(state: PassState): boolean {
    const mutations = state.cache.dirtyCount + state.dedupe.pendingValues + state.suppressed.size +
      state.chunkMutations;
    const bytes = state.chunkBytes + state.cache.dirtyBytes + state.dedupe.pending * 8;
    return state.chunkRecords >= CHUNK_RECORDS || mutations >= KV_LIMITS.mutations - 100 ||
      bytes >= KV_LIMITS.bytes * 0.6;
  }

  /**
   * Moves everything raised since the last commit into a new chunk. Its alerts join the commit
   * in {@link #commit}, once they are checked against the outbox.
   */
  #stageChunk(state: PassState): Chunk {
    const commit = new Commit();
    state.cache.flush(commit);
    state.dedupe.flush(commit);
    const alerts = [...state.alerts.values()];
    commit.reserve(state.chunkMutations, state.chunkBytes);
    for (const { alert, filter } of state.suppressed.values()) {
      commit.set(["suppressed", alert.id], { alert, filter }, {
        expireIn: this.config.delivery.retentionMs,
      });
      state.summary.alerts_suppressed++;
    }
    state.alerts.clear();
    state.suppressed.clear();
    state.chunkBytes = 0;
    state.chunkMutations = 0;
    state.chunkRecords = 0;
    return { commit, alerts };
  }

  /**
   * Commits a chunk after every earlier commit of the pass has landed. Its alerts are checked
   * against the outbox only then, so the check sees an alert raised again since an earlier
   * chunk (and nothing on the event path waits for the read).
   */
  async #commit(state: PassState, { commit, alerts }: Chunk): Promise<void> {
    // What the chunk writes is fixed now: the pass goes on changing the state it staged.
    this.store.seal(commit);
    await state.inflight;
    try {
      const known = alerts.length ? await this.outbox.known(alerts.map((a) => a.id)) : undefined;
      commit.release();
      for (const alert of alerts) {
        if (known?.has(alert.id)) continue;
        this.outbox.stage(commit, alert);
        this.#onAlert?.(alert);
        state.summary.alerts++;
      }
      await this.store.commit(commit);
    } catch (error) {
      state.cache.clear();
      state.dedupe.discardPending();
      throw new StateCommitError(`cannot commit to the state: ${errorMessage(error)}`, {
        cause: error,
      });
    }
  }

  /**
   * Starts a mid-object commit without waiting for it; the next {@link #commit} (or this
   * object's end) waits for it, and a failure surfaces there.
   */
  #commitBehind(
    state: PassState,
    chunk: Chunk,
    landed: () => void | Promise<void> = () => failpoint("chunk-committed"),
  ): void {
    const landing = this.#commit(state, chunk).then(landed);
    landing.catch(() => {}); // observed by whoever awaits `inflight` next
    state.inflight = landing;
  }

  /** Stops every plugin and closes the state (if this runtime opened it). */
  async close(): Promise<void> {
    await this.#tail.catch(() => undefined);
    this.#closing.abort();
    await this.#pool?.then((pool) => pool.close(), () => {});
    for (const { source } of this.sources.values()) await source.close?.();
    for (const detector of this.detectors) await detector.close?.();
    for (const route of this.outbox.routes) await route.sink.close?.();
    if (this.#ownsStore) this.store.close();
  }
}
