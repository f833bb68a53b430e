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

import type { Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import {
  checkLoginOptions,
  createFirstSeen,
  type FirstSeenKind,
  loginDefaults,
  type LoginOptions,
  type Seen,
} from "./_login.ts";
import type { Detector, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `new_country` (plus the shared login options). */
export interface Options extends LoginOptions {
  /** Severity (VIP users: one level higher). */
  severity: Severity;
}

/** Defaults of `new_country`. */
export const defaults = { ...loginDefaults, severity: "medium" } satisfies Options;

const kind: FirstSeenKind = {
  type: "new_country",
  severity: defaults.severity,
  valueOf: (event) => (event.country && event.ip ? event.country : undefined),
  seenOf(event) {
    const seen: Seen = { t: event.time, id: event.event_id, ip: event.ip, c: event.country };
    if (event.city) seen.y = event.city;
    return seen;
  },
  title: (user, country) => `Login from a new country for ${user}: ${country}`,
  details: (country, first, others) => ({ country, city: first.y, known_countries: others }),
  countryOf: (country) => country,
};

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
  return createFirstSeen(kind, { ...defaults, ...options }, init);
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
