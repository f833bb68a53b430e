/**
 * `atypical_country`: a successful login from a country the user logged in from before, but not
 * in the last `atypicalDays` days (BuffaLogs' "Atypical Country", 30 days). One alert per
 * (user, country, previous login from that country).
 *
 * Out-of-order delivery: each login is compared with the previous login from the same country in
 * event time, and the next login from that country is compared again with the new one; the alert
 * key names the previous login, so a login that arrives late between two others gives the same
 * alert as in time order. Alerts can still differ by arrival order when a login that arrives late
 * falls between a previous login and an alerted one and is itself within `atypicalDays` of the
 * previous login (the alert was right for what was known).
 *
 * State: `["user", account, user]` → the first login, the failed-login count and, per country, its
 * runs of logins (logins each within `atypicalDays` of the next, kept as first and last login: a
 * login inside a run changes nothing), at most `maxLogins` runs in all, expiring after
 * `idleExpiry` without logins.
 *
 * @module
 */

import type { NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import {
  before,
  checkLoginOptions,
  DAY_MS,
  iso,
  loginDefaults,
  type LoginOptions,
  LoginPolicy,
  type ProfileBase,
  subjectOf,
} from "./_login.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `atypical_country` (plus the shared login options). */
export interface Options extends LoginOptions {
  /** Days without a login from a country after which it is atypical again. */
  atypicalDays: number;
  /** Severity (VIP users: one level higher). */
  severity: Severity;
}

/** Defaults of `atypical_country`. */
export const defaults = { ...loginDefaults, atypicalDays: 30, severity: "low" } satisfies Options;

/**
 * A run of logins from one country, each within `atypicalDays` of the next: no login inside a run
 * is atypical, so only its first and last login are kept — time, event id, IP and per-login
 * filter ("" when none) of each.
 */
export type Run = [
  t0: number,
  id0: string,
  ip0: string,
  f0: string,
  t1: number,
  id1: string,
  ip1: string,
  f1: string,
];

/** The state of one user. */
export interface AtypicalProfile extends ProfileBase {
  /** Country → its runs of logins, by time. */
  c: Record<string, Run[]>;
  /** Countries whose older runs were dropped. */
  lost?: Record<string, 1>;
}

/**
 * Creates an `atypical_country` detector.
 *
 * @example Sixty days
 * ```ts
 * import { createAtypicalCountry } from "./atypical_country.ts";
 * const detector = createAtypicalCountry({ atypicalDays: 60 }, { name: "atypical_country", baseDir: "." });
 * ```
 */
export function createAtypicalCountry(
  options: Partial<Options>,
  init: DetectorContextInit,
): Detector {
  const opts = { ...defaults, ...options };
  const policy = new LoginPolicy(opts, init.name);
  const atypicalMs = opts.atypicalDays * DAY_MS;

  /**
   * Keeps at most `maxLogins` runs in all, dropping the runs that ended longest ago; returns
   * whether it dropped any.
   */
  function bound(profile: AtypicalProfile): boolean {
    let total = 0;
    for (const runs of Object.values(profile.c)) total += runs.length;
    const dropped = total > policy.maxLogins;
    while (total-- > policy.maxLogins) {
      let oldest = "";
      for (const [country, runs] of Object.entries(profile.c)) {
        if (runs.length && (!oldest || runs[0][4] < profile.c[oldest][0][4])) oldest = country;
      }
      profile.c[oldest].shift();
      if (!profile.c[oldest].length) delete profile.c[oldest];
      (profile.lost ??= {})[oldest] = 1;
    }
    return dropped;
  }

  /** A successful (`login`) or failed login. */
  async function handle(
    event: NormalizedEvent,
    context: DetectorContext,
    login: boolean,
  ): Promise<void> {
    const { account, user } = subjectOf(event);
    const key = ["user", account, user];
    if (!login) return policy.countFailure(context, key, event, (): AtypicalProfile => ({ c: {} }));
    const country = event.country;
    if (!country || !event.ip) return;
    const profile = await context.state.get<AtypicalProfile>(key) ?? { c: {} };
    const runs = profile.c[country] ?? [];
    const { time: t, event_id: id } = event;
    // Inside a run (or one of its ends): nothing changes.
    if (runs.some((r) => !before(t, id, r[0], r[1]) && !before(r[4], r[5], t, id))) return;
    let at = 0;
    while (at < runs.length && before(runs[at][4], runs[at][5], t, id)) at++;
    const previous = runs[at - 1] as Run | undefined;
    const next = runs[at] as Run | undefined;
    const f = policy.loginFilter(event.ip, event.agent) ?? "";
    const raise: [login: [number, string, string, string], last: [number, string, string]][] = [];
    if (previous && t - previous[4] >= atypicalMs) {
      raise.push([[t, id, event.ip, f], [previous[4], previous[5], previous[6]]]);
    }
    // x becomes the login before the next run, unless older runs of the country were dropped
    // (one of them may lie between).
    const unknown = !previous && profile.lost?.[country] === 1;
    if (next && !unknown && next[0] - t >= atypicalMs) {
      raise.push([[next[0], next[1], next[2], next[3]], [t, id, event.ip]]);
    }
    const joinsPrevious = previous && t - previous[4] < atypicalMs;
    const joinsNext = next && next[0] - t < atypicalMs;
    if (joinsPrevious && joinsNext) {
      previous![4] = next![4];
      previous![5] = next![5];
      previous![6] = next![6];
      previous![7] = next![7];
      runs.splice(at, 1);
    } else if (joinsPrevious) {
      // The common case: a login extends the run it follows (see `stretched` below).
      previous![4] = t;
      previous![5] = id;
      previous![6] = event.ip;
      previous![7] = f;
    } else if (joinsNext) {
      next![0] = t;
      next![1] = id;
      next![2] = event.ip;
      next![3] = f;
    } else runs.splice(at, 0, [t, id, event.ip, f, t, id, event.ip, f]);
    const stretched = joinsPrevious && !joinsNext && raise.length === 0;
    profile.c[country] = runs;
    let structural = !stretched;
    if (!profile.first || before(t, id, ...profile.first)) {
      profile.first = [t, id];
      structural = true;
    }
    if (bound(profile)) structural = true;
    // Only the end of a run moved: written lazily (see SetOptions.lazy). Lost in a crash, it is
    // off by less than one object's time span, far below `atypicalDays`.
    context.state.set(key, profile, { expireIn: policy.expireIn, lazy: !structural });
    for (const [[loginTime, loginId, ip, filter], [lastTime, lastId, lastIp]] of raise) {
      const days = Math.floor((loginTime - lastTime) / DAY_MS);
      const draft = {
        severity: policy.severity(opts.severity, user),
        title: `Login from an atypical country for ${user}: ${country}, not seen for ${days} days`,
        time: iso(loginTime),
        ip,
        user,
        account_id: account,
        key: `${user}|${country}|${lastId}`,
        event_ids: [lastId, loginId],
        idFromKey: true,
        details: {
          country,
          event_id: loginId,
          previous_login: { time: iso(lastTime), ip: lastIp, event_id: lastId },
          days_since: days,
          failed_logins: profile.failed,
        },
      };
      policy.decide(context, event, draft, {
        user,
        login: filter,
        country,
        time: loginTime,
        first: profile.first[0],
      });
    }
  }

  return policy.detector("atypical_country", handle);
}

/** The `atypical_country` plugin. */
export const atypicalCountryDetector: DetectorPlugin = {
  description: "Login from a country the user has not logged in from for a month",
  check(check: OptionsChecker) {
    checkLoginOptions(check);
    const days = check.number("atypicalDays", { min: 0 });
    if (days === 0) check.problem("atypicalDays", "must be greater than 0");
    check.string("severity", { oneOf: SEVERITIES });
  },
  create: (options: RawOptions, init) => createAtypicalCountry(options as Partial<Options>, init),
};
