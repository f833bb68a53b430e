/**
 * The durable outbox. An alert enters it in the same atomic commit as its object's checkpoint;
 * the delivery loop hands it to every sink whose filters it passes and removes it for that sink
 * once the sink took it. Failures are retried with exponential backoff and jitter (honouring
 * `Retry-After`); after `maxAttempts`, or at once for a non-retryable refusal, the alert is kept
 * as dead with the last error, until `trailwatch outbox retry`.
 *
 * Keys: `["alert", id]` (what was enqueued, kept `retention`), `["outbox", sink, seq, id]`
 * (pending: `{alert, attempts, next, error?}`), `["dead", sink, id]`.
 *
 * Delivery is at least once: an alert leaves the outbox only after its sink took it, so a
 * process killed between the send and the KV delete resends it in the next round, with the same
 * `Idempotency-Key` (the alert id). Within a round, sinks are served concurrently and the alerts
 * of one sink in order; a `429`/`503` whose `Retry-After` is at most `maxInlineWaitMs` is waited
 * for and retried in the same round (twice at most), a longer one reschedules the alert.
 *
 * @module
 */

import { DeliveryError, errorMessage } from "../core/errors.ts";
import { failpoint } from "../core/failpoint.ts";
import { log, redact } from "../core/log.ts";
import type { Commit, StateStore } from "../core/state.ts";
import { type Alert, type Severity, severityRank } from "../core/types.ts";
import type { Sink } from "./mod.ts";

/** Which alerts a sink takes. */
export interface Route {
  /** The sink. */
  sink: Sink;
  /** Lowest severity delivered. */
  minSeverity: Severity;
  /** Only these detectors (instance names), when set. */
  detectors?: string[];
  /** Never these detectors. */
  excludeDetectors: string[];
  /** Group the alerts of one (user, detector) due in one delivery round into one message. */
  group: boolean;
}

/** Delivery options (the `delivery` config block). */
export interface Options {
  /** Attempts before an alert is dead. */
  maxAttempts: number;
  /** First retry delay (ms); doubles each attempt, with jitter. */
  baseDelayMs: number;
  /** Longest retry delay (ms). */
  maxDelayMs: number;
  /** How long an enqueued alert id is remembered (ms), so it is never enqueued twice. */
  retentionMs: number;
  /** Cron schedule of the delivery loop in long-running mode. */
  schedule: string;
  /**
   * Longest `Retry-After` (ms) waited for within a delivery round before the same message is sent
   * again; a longer one reschedules the alert to a later round.
   */
  maxInlineWaitMs: number;
  /** Most alerts in one grouped message; a larger (user, detector) group is split. */
  maxGroupSize: number;
}

/** Default delivery options. */
export const defaults = {
  maxAttempts: 8,
  baseDelayMs: 2_000,
  maxDelayMs: 600_000,
  retentionMs: 30 * 86_400_000,
  schedule: "* * * * *",
  maxInlineWaitMs: 30_000,
  maxGroupSize: 20,
} satisfies Options;

/** Most `Retry-After` waits for one message within one round. */
const MAX_INLINE_WAITS = 2;

/** A pending delivery. */
export interface PendingEntry {
  /** The alert. */
  alert: Alert;
  /** Attempts so far. */
  attempts: number;
  /** Not before (epoch ms). */
  next: number;
  /** Last error, redacted. */
  error?: string;
}

/** A dead delivery. */
export interface DeadEntry {
  /** The alert. */
  alert: Alert;
  /** Attempts made. */
  attempts: number;
  /** Last error, redacted. */
  error: string;
  /** When it was given up (ISO). */
  failed_at: string;
}

/** Counts of one delivery round. */
export interface DeliveryReport {
  /** Alerts taken by a sink (a grouped message counts each alert). */
  delivered: number;
  /** Failed attempts that will be retried. */
  retried: number;
  /** Alerts that became dead. */
  dead: number;
  /** Alerts still waiting (not due yet, or skipped because their sink is failing). */
  pending: number;
}

/** Delivered alerts removed from the outbox per KV commit. */
const DELETE_BATCH = 200;

let sequence = 0;
function nextSeq(): number {
  sequence = (sequence + 1) % 1000;
  return Date.now() * 1000 + sequence;
}

/** Whether a route takes an alert. */
export function routeAccepts(route: Route, alert: Alert): boolean {
  if (severityRank(alert.severity) < severityRank(route.minSeverity)) return false;
  if (route.detectors && !route.detectors.includes(alert.detector)) return false;
  return !route.excludeDetectors.includes(alert.detector);
}

/** The outbox over a state store and a set of routes. */
export class Outbox {
  readonly #store: StateStore;
  readonly #routes: Route[];
  readonly #options: Options;

  /** Creates the outbox. */
  constructor(store: StateStore, routes: Route[], options: Partial<Options> = {}) {
    this.#store = store;
    this.#routes = routes;
    this.#options = { ...defaults, ...options };
  }

  /** The routes (sinks with their filters). */
  get routes(): readonly Route[] {
    return this.#routes;
  }

  /**
   * The ids among `ids` of alerts enqueued before (within the retention). Reads ten keys per KV
   * call, the calls in parallel: a chunk's alerts wait for one round trip, not one each.
   */
  async known(ids: readonly string[]): Promise<Set<string>> {
    const found = new Set<string>();
    const reads: Promise<void>[] = [];
    for (let i = 0; i < ids.length; i += 10) {
      const part = ids.slice(i, i + 10);
      reads.push(
        this.#store.kv.getMany(part.map((id) => ["alert", id])).then((entries) => {
          entries.forEach((entry, j) => entry.versionstamp !== null && found.add(part[j]));
        }),
      );
    }
    await Promise.all(reads);
    return found;
  }

  /** Mutations {@link stage} adds for `alert`. */
  mutationsFor(alert: Alert): number {
    return 1 + this.#routes.filter((r) => routeAccepts(r, alert)).length;
  }

  /** Stages `alert` for every sink that takes it; returns the sink names. */
  stage(commit: Commit, alert: Alert): string[] {
    const names: string[] = [];
    const seq = nextSeq();
    for (const route of this.#routes) {
      if (!routeAccepts(route, alert)) continue;
      const entry: PendingEntry = { alert, attempts: 0, next: 0 };
      commit.set(["outbox", route.sink.name, seq, alert.id], entry);
      names.push(route.sink.name);
    }
    commit.set(
      ["alert", alert.id],
      { detector: alert.detector, title: alert.title, time: alert.time, sinks: names },
      { expireIn: this.#options.retentionMs },
    );
    return names;
  }

  /** Delay before attempt `attempts + 1`: `Retry-After` when given, else backoff with jitter. */
  #delay(attempts: number, retryAfterMs?: number): number {
    if (retryAfterMs !== undefined) return Math.min(retryAfterMs, this.#options.maxDelayMs);
    const base = Math.min(
      this.#options.baseDelayMs * 2 ** (attempts - 1),
      this.#options.maxDelayMs,
    );
    // "Equal jitter": between half and all of the exponential delay.
    return Math.round(base / 2 + Math.random() * base / 2);
  }

  /**
   * Sends every due alert to its sink (sinks concurrently, each sink's alerts in order). A sink
   * that fails with a retryable error is not tried again in this round (its other alerts wait),
   * so a dead receiver is not hammered; a non-retryable refusal makes that alert dead and the
   * round goes on.
   */
  async deliver(options: { signal?: AbortSignal; sink?: string } = {}): Promise<DeliveryReport> {
    const report: DeliveryReport = { delivered: 0, retried: 0, dead: 0, pending: 0 };
    const routes = this.#routes.filter((r) => !options.sink || r.sink.name === options.sink);
    const results = await Promise.allSettled(
      routes.map((route) => this.#deliverRoute(route, report, options.signal)),
    );
    for (const result of results) if (result.status === "rejected") throw result.reason;
    return report;
  }

  async #deliverRoute(route: Route, report: DeliveryReport, signal?: AbortSignal): Promise<void> {
    const due: Deno.KvEntry<PendingEntry>[] = [];
    const now = Date.now();
    for await (const entry of this.#store.list<PendingEntry>(["outbox", route.sink.name])) {
      if (entry.value.next <= now) due.push(entry);
      else report.pending++;
    }
    const batches = route.group
      ? groupEntries(due, this.#options.maxGroupSize)
      : chunk(due, route.sink.maxBatch ?? 1);
    const delivered: Deno.KvEntry<PendingEntry>[] = [];
    let failing = false;
    try {
      for (const batch of batches) {
        if (failing || signal?.aborted) {
          report.pending += batch.length;
          continue;
        }
        failing = !(await this.#send(route, batch, report, delivered, signal));
        if (delivered.length >= DELETE_BATCH) await this.#removeDelivered(route, delivered);
      }
    } finally {
      await this.#removeDelivered(route, delivered);
    }
  }

  /**
   * Removes delivered alerts from the outbox, many per KV commit. A crash before this means those
   * alerts are sent once more, with the same idempotency key; never lost.
   */
  async #removeDelivered(route: Route, delivered: Deno.KvEntry<PendingEntry>[]): Promise<void> {
    while (delivered.length > 0) {
      const part = delivered.splice(0, DELETE_BATCH);
      const commit = this.#store.kv.atomic();
      for (const e of part) commit.delete(e.key);
      const result = await commit.commit();
      if (!result.ok) throw new Error(`cannot remove delivered alerts of sink ${route.sink.name}`);
    }
  }

  /**
   * Sends one message; on success the entries go to `delivered` (removed in batches); false when
   * the sink failed with a retryable error.
   */
  async #send(
    route: Route,
    batch: Deno.KvEntry<PendingEntry>[],
    report: DeliveryReport,
    delivered: Deno.KvEntry<PendingEntry>[],
    signal?: AbortSignal,
  ): Promise<boolean> {
    const alerts = batch.map((e) => e.value.alert);
    const mostAttempts = Math.max(...batch.map((e) => e.value.attempts));
    let tries = 0;
    let waits = 0;
    while (true) {
      try {
        await route.sink.send(alerts);
        failpoint("after-send");
      } catch (error) {
        tries++;
        const retryable = !(error instanceof DeliveryError) || error.retryable;
        const retryAfterMs = error instanceof DeliveryError ? error.retryAfterMs : undefined;
        if (
          retryable && retryAfterMs !== undefined &&
          retryAfterMs <= this.#options.maxInlineWaitMs &&
          waits < MAX_INLINE_WAITS && mostAttempts + tries < this.#options.maxAttempts &&
          !signal?.aborted
        ) {
          waits++;
          log.info(
            `sink ${route.sink.name}: receiver asked to wait ${retryAfterMs} ms; retrying in this round`,
          );
          await sleep(retryAfterMs, signal);
          if (!signal?.aborted) continue;
        }
        await this.#failed(route, batch, tries, error, report);
        return !retryable;
      }
      // Taken: removed for this sink with the next batch of deletes.
      delivered.push(...batch);
      report.delivered += batch.length;
      return true;
    }
  }

  /** Records a failed message: dead, or rescheduled with backoff. */
  async #failed(
    route: Route,
    batch: Deno.KvEntry<PendingEntry>[],
    tries: number,
    error: unknown,
    report: DeliveryReport,
  ): Promise<void> {
    const retryable = !(error instanceof DeliveryError) || error.retryable;
    const message = redact(errorMessage(error));
    const retryAfterMs = error instanceof DeliveryError ? error.retryAfterMs : undefined;
    for (const e of batch) {
      const attempts = e.value.attempts + tries;
      if (!retryable || attempts >= this.#options.maxAttempts) {
        const dead: DeadEntry = {
          alert: e.value.alert,
          attempts,
          error: message,
          failed_at: new Date().toISOString(),
        };
        await this.#store.kv.atomic()
          .check(e)
          .delete(e.key)
          .set(["dead", route.sink.name, e.value.alert.id], dead)
          .commit();
        report.dead++;
        log.error(
          `sink ${route.sink.name}: alert ${e.value.alert.id} is dead after ${attempts} ` +
            `attempt(s)${retryable ? "" : " (refused, not retryable)"}: ${message}`,
        );
      } else {
        const next = Date.now() + this.#delay(attempts, retryAfterMs);
        await this.#store.kv.atomic()
          .check(e)
          .set(e.key, { ...e.value, attempts, next, error: message })
          .commit();
        report.retried++;
        log.warn(
          `sink ${route.sink.name}: delivery of alert ${e.value.alert.id} failed ` +
            `(attempt ${attempts}/${this.#options.maxAttempts}), ` +
            `retry after ${new Date(next).toISOString()}: ${message}`,
        );
      }
    }
  }

  /** Dead alerts, optionally of one sink. */
  async listDead(sink?: string): Promise<{ sink: string; entry: DeadEntry }[]> {
    const out: { sink: string; entry: DeadEntry }[] = [];
    for await (const e of this.#store.list<DeadEntry>(sink ? ["dead", sink] : ["dead"])) {
      out.push({ sink: e.key[1] as string, entry: e.value });
    }
    return out;
  }

  /** Pending alerts, optionally of one sink. */
  async listPending(sink?: string): Promise<{ sink: string; entry: PendingEntry }[]> {
    const out: { sink: string; entry: PendingEntry }[] = [];
    for await (const e of this.#store.list<PendingEntry>(sink ? ["outbox", sink] : ["outbox"])) {
      out.push({ sink: e.key[1] as string, entry: e.value });
    }
    return out;
  }

  /**
   * Moves dead alerts (of one sink, or all) back to the outbox with fresh attempts, due at once;
   * the next {@link deliver} sends them. Dead alerts of a sink that is no longer configured stay
   * dead. Returns how many were moved.
   */
  async retryDead(sink?: string): Promise<number> {
    let moved = 0;
    const known = new Set(this.#routes.map((r) => r.sink.name));
    const skipped = new Set<string>();
    for await (const e of this.#store.list<DeadEntry>(sink ? ["dead", sink] : ["dead"])) {
      const name = e.key[1] as string;
      if (!known.has(name)) {
        skipped.add(name);
        continue;
      }
      const pending: PendingEntry = {
        alert: e.value.alert,
        attempts: 0,
        next: 0,
        error: `was dead: ${e.value.error}`,
      };
      const result = await this.#store.kv.atomic()
        .check(e)
        .delete(e.key)
        .set(["outbox", name, nextSeq(), e.value.alert.id], pending)
        .commit();
      if (result.ok) moved++;
    }
    for (const name of skipped) {
      log.warn(`dead alerts of sink ${name} kept: no enabled sink has that name`);
    }
    return moved;
  }
}

/** Splits due entries into messages: one per (user, detector), at most `max` alerts each. */
function groupEntries(
  entries: Deno.KvEntry<PendingEntry>[],
  max: number,
): Deno.KvEntry<PendingEntry>[][] {
  const groups = new Map<string, Deno.KvEntry<PendingEntry>[]>();
  for (const e of entries) {
    const key = `${e.value.alert.user ?? ""}\u0000${e.value.alert.detector}`;
    const group = groups.get(key);
    if (group) group.push(e);
    else groups.set(key, [e]);
  }
  const batches: Deno.KvEntry<PendingEntry>[][] = [];
  for (const group of groups.values()) {
    for (let i = 0; i < group.length; i += Math.max(1, max)) {
      batches.push(group.slice(i, i + Math.max(1, max)));
    }
  }
  return batches;
}

/** Waits `ms`, or less when `signal` aborts (never rejects). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
