/**
 * Burst counting shared by the stateful count detectors (`console_login_failures`,
 * `access_denied_burst`): "at least N hits within T per key", one alert per burst, with state
 * bounded by N hits per key and expiring in KV once the key goes quiet.
 *
 * A burst starts when the N-th hit falls within T of the oldest kept one; it goes on (without new
 * alerts) while each further hit comes within T of the previous one, and ends after T without a
 * hit. The next N hits within T then make a new burst and a new alert.
 *
 * @module
 */

import { parseDuration } from "../core/validate.ts";
import type { DetectorState } from "../core/state.ts";

/** One hit: epoch ms, event id, and a short detail (an IP, a user, an action). */
export type Hit = [time: number, eventId: string, detail: string];

/** The state of one key. */
export interface BurstState {
  /** Hits within the window, oldest first (at most `threshold`). */
  hits: Hit[];
  /** The burst already alerted on, while it lasts. */
  burst?: { first: number; last: number; count: number };
}

/** A burst that just reached the threshold. */
export interface Burst {
  /** The hits that made it, oldest first. */
  hits: Hit[];
  /** Time of the first hit. */
  first: number;
  /** Time of the last hit. */
  last: number;
}

/** Extra time state is kept after a key's last hit, for CloudTrail's delivery delay (ms). */
export const STATE_GRACE_MS = 60 * 60 * 1000;

/**
 * Counts `hit` for `key` and returns the burst when it just reached `threshold` within `windowMs`
 * (undefined otherwise, including for further hits of a burst already returned).
 */
export async function countHit(
  state: DetectorState,
  key: Deno.KvKey,
  hit: Hit,
  threshold: number,
  windowMs: number,
): Promise<Burst | undefined> {
  const current = await state.get<BurstState>(key);
  const next: BurstState = { hits: current?.hits ? [...current.hits] : [] };
  const [time] = hit;
  const options = { expireIn: windowMs + STATE_GRACE_MS };

  const burst = current?.burst;
  if (burst && time - burst.last <= windowMs && time >= burst.first - windowMs) {
    // Same burst: extend it, no new alert.
    next.hits = [];
    next.burst = {
      first: Math.min(burst.first, time),
      last: Math.max(burst.last, time),
      count: burst.count + 1,
    };
    state.set(key, next, options);
    return undefined;
  }

  let latest = time;
  for (const [t] of next.hits) if (t > latest) latest = t;
  next.hits = next.hits.filter(([t]) => t > latest - windowMs);
  const at = next.hits.findIndex(([t]) => t > time);
  if (at < 0) next.hits.push(hit);
  else next.hits.splice(at, 0, hit);
  if (next.hits.length > threshold) next.hits.splice(0, next.hits.length - threshold);

  if (next.hits.length >= threshold) {
    const hits = next.hits;
    const first = hits[0][0];
    const last = hits[hits.length - 1][0];
    state.set(key, { hits: [], burst: { first, last, count: hits.length } }, options);
    return { hits, first, last };
  }
  state.set(key, next, options);
  return undefined;
}

/** The distinct details of `hits`, most frequent first, at most `limit`. */
export function distinctDetails(hits: readonly Hit[], limit = 20): string[] {
  const counts = new Map<string, number>();
  for (const [, , detail] of hits) if (detail) counts.set(detail, (counts.get(detail) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, limit).map(([detail]) =>
    detail
  );
}

/** A window in words for titles: `10m`, `90s`, `2h`. */
export function formatWindow(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  return `${Math.round(ms / 1000)}s`;
}

/** Parses a detector's `window` option; throws a RangeError naming the detector if invalid. */
export function windowOption(type: string, window: string | number): number {
  const ms = parseDuration(window);
  if (ms === undefined || ms <= 0) {
    throw new RangeError(`${type}: window must be a positive duration, got ${window}`);
  }
  return ms;
}

/** The details every burst alert carries: threshold, window and the burst's first/last hit. */
export function burstFacts(
  burst: Burst,
  threshold: number,
  windowMs: number,
): Record<string, unknown> {
  return {
    threshold,
    window_seconds: windowMs / 1000,
    first: new Date(burst.first).toISOString(),
    last: new Date(burst.last).toISOString(),
  };
}
