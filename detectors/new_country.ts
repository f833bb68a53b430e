/**
 * `new_country`: a successful login from a country the user never logged in from (BuffaLogs'
 * "New Country"). The user's first login never alerts. One alert per (user, country).
 *
 * Out-of-order delivery: the profile keeps, per country, the earliest login seen, and the user's
 * earliest login. When a login earlier than the user's first one arrives from another country,
 * the previous first country becomes "new" and alerts then — so the alerts do not depend on the
 * arrival order, unless the user's very first login arrives after a later login from another
 * country (that country was new when it was seen; the learning period normally hides this).
 *
 * State: `["user", account, user]` → the first login, failed-login count and, per country, its first
 * login (at most `maxLogins` countries), expiring after `idleExpiry` without logins.
 *
 * @module
 */

import type { NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import {
  checkLoginOptions,
  type FirstSeenProfile,
  iso,
  loginDefaults,
  type LoginOptions,
  LoginPolicy,
  observeFirstSeen,
  type Seen,
  subjectOf,
} from "./_login.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `new_country` (plus the shared login options). */
export interface Options extends LoginOptions {
  /** Severity (VIP users: one level higher). */
  severity: Severity;
}

/** Defaults of `new_country`. */
export const defaults = { ...loginDefaults, severity: "medium" } satisfies Options;

/**
 * Creates a `new_country` detector.
 *
 * @example Ignoring the service accounts
 * ```ts
 * import { createNewCountry } from "./new_country.ts";
 * const detector = createNewCountry({ ignoredUsers: ["^svc-"] }, { name: "new_country", baseDir: "." });
 * ```
 */
export function createNewCountry(options: Partial<Options>, init: DetectorContextInit): Detector {
  const opts = { ...defaults, ...options };
  const policy = new LoginPolicy(opts, init.name);
  /** A successful (`login`) or failed login. */
  async function handle(
    event: NormalizedEvent,
    context: DetectorContext,
    login: boolean,
  ): Promise<void> {
    const { account, user } = subjectOf(event);
    const key = ["user", account, user];
    if (!login) {
      const profile = await context.state.get<FirstSeenProfile>(key) ?? { seen: {} };
      policy.noteFailure(profile, event);
      context.state.set(key, profile, { expireIn: policy.expireIn });
      return;
    }
    if (!event.country || !event.ip) return;
    const profile = await context.state.get<FirstSeenProfile>(key) ?? { seen: {} };
    const seen: Seen = { t: event.time, id: event.event_id, ip: event.ip, c: event.country };
    if (event.city) seen.y = event.city;
    const filter = policy.loginFilter(event.ip, event.agent);
    if (filter) seen.f = filter;
    const { changed, raise } = observeFirstSeen(profile, event.country, seen, policy.maxLogins);
    if (!changed) return;
    context.state.set(key, profile, { expireIn: policy.expireIn });
    for (const [country, first] of raise) {
      const known = Object.keys(profile.seen).filter((c) => c !== country).sort();
      const draft = {
        severity: policy.severity(opts.severity, user),
        title: `Login from a new country for ${user}: ${country}`,
        time: iso(first.t),
        ip: first.ip,
        user,
        account_id: account,
        key: `${user}|${country}`,
        event_ids: [],
        details: {
          country,
          city: first.y,
          event_id: first.id,
          known_countries: known,
          failed_logins: profile.failed,
        },
      };
      const stop = policy.userFilter(user) ?? first.f ??
        (policy.isAllowedCountry(country) ? "allowedCountries" : undefined) ??
        policy.learning(first.t, profile.first?.[0]);
      if (stop) context.suppress(draft, event, stop);
      else context.alert(draft, event);
    }
  }

  return {
    name: init.name,
    type: "new_country",
    detect(event: NormalizedEvent, context: DetectorContext): Promise<void> | undefined {
      const login = policy.isLogin(event);
      if (!login && !policy.isFailedLogin(event)) return undefined;
      return handle(event, context, login);
    },
  };
}

/** The `new_country` plugin. */
export const newCountryDetector: DetectorPlugin = {
  description: "Login from a country the user never logged in from",
  check(check: OptionsChecker) {
    checkLoginOptions(check);
    check.string("severity", { oneOf: SEVERITIES });
  },
  create: (options: RawOptions, init) => createNewCountry(options as Partial<Options>, init),
};
