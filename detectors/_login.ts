/**
 * Private helpers shared by the login-anomaly detectors (`impossible_travel`, `new_country`,
 * `atypical_country`, `new_device`, `anonymous_ip`, `user_risk`): which events are logins, the
 * shared BuffaLogs-style filters and their checking, the learning period, the severity raise for
 * VIP users, the user-agent fingerprint, bounded per-user profile helpers and the haversine
 * distance.
 *
 * @module
 */

import UAParser from "ua-parser-js";
import type { AlertDraft, NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import { type OptionsChecker, parseDuration } from "../core/validate.ts";
import { IpSet } from "../mapping/ip.ts";
import type { Detector, DetectorContext, DetectorContextInit } from "./mod.ts";

/** One UTC day in milliseconds. */
export const DAY_MS = 86_400_000;

/** Options every login detector accepts (the shared filters and profile bounds). */
export interface LoginOptions {
  /** Event names that count as logins when successful (BuffaLogs: console logins). */
  loginEvents: string[];
  /** Users whose alerts are filtered: exact names or regular expressions (searched). */
  ignoredUsers: string[];
  /** When not empty, only these users alert (exact names or regular expressions). */
  enabledUsers: string[];
  /** Users whose alerts are raised one severity level (exact names or regular expressions). */
  vipUsers: string[];
  /** Only VIP users alert (BuffaLogs' `alert_is_vip_only`). */
  vipOnly: boolean;
  /** Source IPs and CIDRs (IPv4 and IPv6) whose logins never alert. */
  ignoredIps: string[];
  /** ISO country codes whose logins never alert (impossible travel: when both ends are in it). */
  allowedCountries: string[];
  /** Logins from mobile devices (iOS, Android, Windows Phone) never alert. */
  ignoreMobile: boolean;
  /** Days after a user's first login (in event time) during which alerts are filtered. */
  learningDays: number;
  /** Logins (or observations) kept per user; the oldest are dropped. */
  maxLogins: number;
  /** A profile untouched for this long is forgotten (`"60d"`, or seconds). */
  idleExpiry: string | number;
}

/** Defaults of the shared login options (BuffaLogs' defaults where it has one). */
export const loginDefaults = {
  loginEvents: ["ConsoleLogin"],
  ignoredUsers: [],
  enabledUsers: [],
  vipUsers: [],
  vipOnly: false,
  ignoredIps: [],
  allowedCountries: [],
  ignoreMobile: false,
  learningDays: 14,
  maxLogins: 100,
  idleExpiry: "60d",
} satisfies LoginOptions;

/** Largest `maxLogins` accepted: a profile must fit one 64 KiB KV value. */
export const MAX_LOGINS_LIMIT = 200;

function regexProblem(item: string): string | undefined {
  try {
    new RegExp(item);
    return undefined;
  } catch (error) {
    return `not a valid regular expression: ${(error as Error).message}`;
  }
}

function ipProblem(item: string): string | undefined {
  try {
    IpSet.from([item]);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

const COUNTRY = /^[A-Z]{2}$/;

/** Checks the shared login options; `logins: false` for detectors that see alerts, not logins. */
export function checkLoginOptions(check: OptionsChecker, what: { logins?: boolean } = {}): void {
  check.strings("ignoredUsers", { each: regexProblem });
  check.strings("enabledUsers", { each: regexProblem });
  check.strings("vipUsers", { each: regexProblem });
  check.boolean("vipOnly");
  if (what.logins === false) return;
  check.strings("loginEvents", { nonEmpty: true });
  check.strings("ignoredIps", { each: ipProblem });
  check.strings("allowedCountries", {
    each: (c) => COUNTRY.test(c) ? undefined : `expected an ISO country code such as "DE"`,
  });
  check.boolean("ignoreMobile");
  check.number("learningDays", { min: 0 });
  check.integer("maxLogins", { min: 2, max: MAX_LOGINS_LIMIT });
  const idle = check.duration("idleExpiry");
  if (idle !== undefined && idle < 60_000) check.problem("idleExpiry", "must be at least 1m");
}

/** Parses a duration option or throws a RangeError naming it. */
export function durationOption(detector: string, key: string, value: string | number): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) {
    throw new RangeError(`${detector}: ${key} must be a positive duration, got ${value}`);
  }
  return ms;
}

/** Whether `word` equals an entry or matches it as a regular expression (BuffaLogs' rule). */
function matcher(entries: readonly string[]): (word: string) => boolean {
  const exact = new Set(entries);
  const patterns = entries.map((e) => new RegExp(e));
  return (word) => exact.has(word) || patterns.some((p) => p.test(word));
}

/** Raises a severity by one level (critical stays critical). */
export function raiseSeverity(severity: Severity): Severity {
  return SEVERITIES[Math.min(SEVERITIES.indexOf(severity) + 1, SEVERITIES.length - 1)];
}

const MOBILE_OS = new Set(["iOS", "Android", "Windows Phone"]);
const UA_CACHE_LIMIT = 2000;
const uaCache = new Map<string, { fingerprint: string; mobile: boolean }>();

function parseAgent(agent: string): { fingerprint: string; mobile: boolean } {
  let hit = uaCache.get(agent);
  if (hit) return hit;
  const ua = new UAParser(agent).getResult();
  const clean = (s: string | undefined) => (s ?? "").replace(/\s+/g, "").toLowerCase();
  const major = ua.os.version?.split(/[._]/)[0];
  const os = clean(ua.os.name) || "unknownos";
  const device = clean(ua.device.model) || clean(ua.device.type) || "other";
  const browser = clean(ua.browser.name) || "unknownbrowser";
  hit = {
    fingerprint: `${major ? `${os}-${clean(major)}` : os}-${device}-${browser}`,
    mobile: MOBILE_OS.has(ua.os.name ?? ""),
  };
  if (uaCache.size >= UA_CACHE_LIMIT) uaCache.clear();
  uaCache.set(agent, hit);
  return hit;
}

/**
 * The device fingerprint of a user agent, BuffaLogs' `os-osmajor-device-browser` (lower case,
 * no browser version), parsed with ua-parser-js 1.x (MIT).
 *
 * @example Fingerprinting a browser
 * ```ts
 * import { deviceFingerprint } from "./_login.ts";
 * deviceFingerprint("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36");
 * // "windows-10-other-chrome"
 * ```
 */
export function deviceFingerprint(agent: string | undefined): string {
  return agent ? parseAgent(agent).fingerprint : "unknownos-other-unknownbrowser";
}

/** Whether a user agent is a mobile device (BuffaLogs: iOS, Android, Windows Phone). */
export function isMobileAgent(agent: string | undefined): boolean {
  return agent ? parseAgent(agent).mobile : false;
}

const EARTH_RADIUS_KM = 6371.0088;
const RAD = Math.PI / 180;

/**
 * Great-circle distance in km between two points (haversine, mean Earth radius). Within 0.5% of
 * the WGS-84 geodesic BuffaLogs uses.
 *
 * @example London to São Paulo
 * ```ts
 * import { haversineKm } from "./_login.ts";
 * Math.round(haversineKm(51.5, -0.13, -23.55, -46.63)); // 9490
 * ```
 */
export function haversineKm(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const dLat = (lat2 - lat1) * RAD;
  const dLon = (lon2 - lon1) * RAD;
  const a = Math.sin(dLat / 2) ** 2 +
    Math.cos(lat1 * RAD) * Math.cos(lat2 * RAD) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_RADIUS_KM * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** The UTC day of an epoch-ms time, `YYYY-MM-DD`. */
export function utcDay(time: number): string {
  return new Date(Math.floor(time / DAY_MS) * DAY_MS).toISOString().slice(0, 10);
}

/** ISO 8601 text of an epoch-ms time. */
export function iso(time: number): string {
  // CloudTrail writes whole seconds ("2026-11-18T09:32:40Z"); keep alert times in that form.
  return new Date(time).toISOString().replace(".000Z", "Z");
}

/** Whether login (t1, id1) comes before (t2, id2): by time, then event id (a total order). */
export function before(t1: number, id1: string, t2: number, id2: string): boolean {
  return t1 < t2 || (t1 === t2 && id1 < id2);
}

/** What every login profile keeps besides the detector's own data. */
export interface ProfileBase {
  /** Time and event id of the earliest login known (the learning period starts there). */
  first?: [number, string];
  /** Failed logins seen (counted, never treated as logins). */
  failed?: number;
  /** Time of the latest failed login. */
  lastFailed?: number;
}

/**
 * The shared login policy of one detector instance: login selection, filters, learning period,
 * VIP severity and profile bounds.
 */
export class LoginPolicy {
  /** Detector instance name (for messages). */
  readonly name: string;
  /** Logins kept per profile. */
  readonly maxLogins: number;
  /** Idle expiry of a profile (ms), passed as `expireIn`. */
  readonly expireIn: number;
  /** Learning period (ms). */
  readonly learningMs: number;
  readonly #events: Set<string>;
  readonly #ignoredUser: (u: string) => boolean;
  readonly #enabledUser: ((u: string) => boolean) | undefined;
  readonly #vip: (u: string) => boolean;
  readonly #vipOnly: boolean;
  readonly #ignoredIps: IpSet | undefined;
  readonly #allowed: Set<string>;
  readonly #ignoreMobile: boolean;

  /** Builds the policy from the (checked) options. */
  constructor(options: Partial<LoginOptions>, name: string) {
    const opts = { ...loginDefaults, ...options };
    this.name = name;
    this.maxLogins = opts.maxLogins;
    this.expireIn = durationOption(name, "idleExpiry", opts.idleExpiry);
    this.learningMs = opts.learningDays * DAY_MS;
    this.#events = new Set(opts.loginEvents);
    this.#ignoredUser = matcher(opts.ignoredUsers);
    this.#enabledUser = opts.enabledUsers.length ? matcher(opts.enabledUsers) : undefined;
    this.#vip = matcher(opts.vipUsers);
    this.#vipOnly = opts.vipOnly;
    this.#ignoredIps = opts.ignoredIps.length ? IpSet.from(opts.ignoredIps) : undefined;
    this.#allowed = new Set(opts.allowedCountries);
    this.#ignoreMobile = opts.ignoreMobile;
  }

  /**
   * `true` for a successful login, `false` for a failed one (counted in the profile, never
   * treated as a login), undefined for any other event (one set lookup: this runs for every
   * event, in every login detector).
   */
  loginOutcome(event: NormalizedEvent): boolean | undefined {
    if (!this.#events.has(event.event_name)) return undefined;
    const outcome = event.outcome;
    return outcome === "success" ? true : outcome === "failure" ? false : undefined;
  }

  /** The user filter that stops alerts about `user` (`vipOnly`, `enabledUsers`, `ignoredUsers`). */
  userFilter(user: string): string | undefined {
    if (this.#vipOnly) return this.#vip(user) ? undefined : "vipOnly";
    if (this.#enabledUser && !this.#enabledUser(user)) return "enabledUsers";
    return this.#ignoredUser(user) ? "ignoredUsers" : undefined;
  }

  /** The per-login filter that stops alerts about a login (`ignoredIps`, `ignoreMobile`). */
  loginFilter(ip: string | undefined, agent: string | undefined): string | undefined {
    if (ip && this.#ignoredIps?.has(ip)) return "ignoredIps";
    if (this.#ignoreMobile && isMobileAgent(agent)) return "ignoreMobile";
    return undefined;
  }

  /** Whether `country` is in `allowedCountries`. */
  isAllowedCountry(country: string | undefined): boolean {
    return country !== undefined && country !== "" && this.#allowed.has(country);
  }

  /** `"learningDays"` when `time` falls in the learning period that starts at `first`. */
  learning(time: number, first: number | undefined): string | undefined {
    if (this.learningMs <= 0 || first === undefined) return undefined;
    return time - first < this.learningMs ? "learningDays" : undefined;
  }

  /** The severity for `user`: `base`, raised one level for VIP users. */
  severity(base: Severity, user: string): Severity {
    return this.#vip(user) ? raiseSeverity(base) : base;
  }

  /** Counts a failed login in `profile`. */
  noteFailure(profile: ProfileBase, event: NormalizedEvent): void {
    profile.failed = (profile.failed ?? 0) + 1;
    if (profile.lastFailed === undefined || event.time > profile.lastFailed) {
      profile.lastFailed = event.time;
    }
  }

  /** Counts a failed login in the profile stored at `key` (created by `empty` if missing). */
  async countFailure<P extends ProfileBase>(
    context: DetectorContext,
    key: Deno.KvKey,
    event: NormalizedEvent,
    empty: () => P,
  ): Promise<void> {
    const profile = await context.state.get<P>(key) ?? empty();
    this.noteFailure(profile, event);
    context.state.set(key, profile, { expireIn: this.expireIn });
  }

  /**
   * Raises `draft`, or records it as suppressed by the first filter that applies, in BuffaLogs'
   * order: the user filters, the login's own filter (`ignoredIps`, `ignoreMobile`),
   * `allowedCountries`, the learning period (from the user's first login).
   */
  decide(
    context: DetectorContext,
    event: NormalizedEvent,
    draft: AlertDraft,
    why: { user: string; login?: string; country?: string; time: number; first?: number },
  ): void {
    const stop = this.userFilter(why.user) ?? (why.login || undefined) ??
      (this.isAllowedCountry(why.country) ? "allowedCountries" : undefined) ??
      this.learning(why.time, why.first);
    if (stop) context.suppress(draft, event, stop);
    else context.alert(draft, event);
  }

  /**
   * A detector that sees only logins: `handle(event, context, login)` gets successful logins
   * (`login` true) and failed ones (false); every other event is answered without a promise.
   */
  detector(
    type: string,
    handle: (event: NormalizedEvent, context: DetectorContext, login: boolean) => Promise<void>,
  ): Detector {
    return {
      name: this.name,
      type,
      prefetch: (event) => {
        if (this.loginOutcome(event) === undefined) return undefined;
        const { account, user } = subjectOf(event);
        return ["user", account, user];
      },
      detect: (event, context) => {
        const login = this.loginOutcome(event);
        if (login === undefined) return undefined;
        return handle(event, context, login);
      },
    };
  }
}

/** How a first-seen detector (new_country, new_device) observes logins. */
export interface FirstSeenKind {
  /** Plugin type. */
  type: string;
  /** Severity option default. */
  severity: Severity;
  /** The attribute a login is observed by (country, device fingerprint); undefined skips it. */
  valueOf(event: NormalizedEvent): string | undefined;
  /** What is remembered of the login that first showed a value. */
  seenOf(event: NormalizedEvent): Seen;
  /** The alert's title. */
  title(user: string, value: string): string;
  /** The alert's details (besides `event_id` and `failed_logins`). */
  details(
    value: string,
    first: Seen,
    others: string[],
    event: NormalizedEvent,
  ): Record<string, unknown>;
  /** The country `allowedCountries` is checked against. */
  countryOf(value: string, first: Seen): string | undefined;
}

/**
 * Creates a first-seen detector: an alert when a user logs in with a value (a country, a device)
 * never seen for them; the user's first login never alerts.
 */
export function createFirstSeen(
  kind: FirstSeenKind,
  options: Partial<LoginOptions & { severity: Severity }>,
  init: DetectorContextInit,
): Detector {
  const severity = options.severity ?? kind.severity;
  const policy = new LoginPolicy(options, init.name);
  return policy.detector(kind.type, async (event, context, login) => {
    const { account, user } = subjectOf(event);
    const key = ["user", account, user];
    const empty = (): FirstSeenProfile => ({ seen: {} });
    if (!login) return policy.countFailure(context, key, event, empty);
    const value = kind.valueOf(event);
    if (value === undefined) return;
    const profile = await context.state.get<FirstSeenProfile>(key) ?? empty();
    const seen = kind.seenOf(event);
    const filter = policy.loginFilter(event.ip, event.agent);
    if (filter) seen.f = filter;
    const { changed, raise } = observeFirstSeen(profile, value, seen, policy.maxLogins);
    if (!changed) return;
    context.state.set(key, profile, { expireIn: policy.expireIn });
    for (const [found, first] of raise) {
      const others = Object.keys(profile.seen).filter((v) => v !== found).sort();
      const draft: AlertDraft = {
        severity: policy.severity(severity, user),
        title: kind.title(user, found),
        time: iso(first.t),
        ip: first.ip,
        user,
        account_id: account,
        key: `${user}|${found}`,
        event_ids: [first.id],
        idFromKey: true,
        details: {
          ...kind.details(found, first, others, event),
          event_id: first.id,
          failed_logins: profile.failed,
        },
      };
      policy.decide(context, event, draft, {
        user,
        login: first.f,
        country: kind.countryOf(found, first),
        time: first.t,
        first: profile.first?.[0],
      });
    }
  });
}

/** The first login seen with one attribute value (a country, a device fingerprint). */
export interface Seen {
  /** Event time (epoch ms). */
  t: number;
  /** Event id. */
  id: string;
  /** Source IP. */
  ip?: string;
  /** Country. */
  c?: string;
  /** City. */
  y?: string;
  /** Per-login filter (`ignoredIps`, `ignoreMobile`) of that login. */
  f?: string;
  /** 1 once an alert (or a filtered alert) was raised for this value. */
  r?: 1;
}

/** A profile of first-seen attribute values (new_country, new_device). */
export interface FirstSeenProfile extends ProfileBase {
  /** Value → its first login. */
  seen: Record<string, Seen>;
  /** The value of the user's first login (never alerts). */
  fv?: string;
}

/**
 * Records a login with attribute `value` in `profile` and returns the values that became "new
 * for the user": the login's value if it was never seen and the login is not the user's first,
 * and, when a login arrives that is earlier than the user's first one, the previous first value
 * (which is now new too). Each value is returned at most once per profile. Order-independent: for
 * the same logins, any arrival order returns the same values, unless the user's very first login
 * arrives after a later login with another value (that value was new when it was seen).
 */
export function observeFirstSeen(
  profile: FirstSeenProfile,
  value: string,
  login: Seen,
  maxValues: number,
): { changed: boolean; raise: [string, Seen][] } {
  const raise: [string, Seen][] = [];
  let changed = false;
  const known = profile.seen[value];
  const isFirst = !profile.first || before(login.t, login.id, profile.first[0], profile.first[1]);
  const previousFirst = profile.fv;
  if (!known || before(login.t, login.id, known.t, known.id)) {
    profile.seen[value] = known?.r ? { ...login, r: 1 } : { ...login };
    changed = true;
  }
  if (isFirst) {
    profile.first = [login.t, login.id];
    profile.fv = value;
    changed = true;
  }
  if (!known && !isFirst) raise.push([value, profile.seen[value]]);
  if (isFirst && previousFirst !== undefined && previousFirst !== value) {
    const entry = profile.seen[previousFirst];
    if (entry && !entry.r) raise.push([previousFirst, entry]);
  }
  for (const [, entry] of raise) entry.r = 1;
  const values = Object.keys(profile.seen);
  if (values.length > maxValues) {
    // Forget the values first seen longest ago, but never the first login's value.
    values.filter((v) => v !== profile.fv).sort((a, b) => profile.seen[a].t - profile.seen[b].t)
      .slice(0, values.length - maxValues).forEach((v) => delete profile.seen[v]);
  }
  return { changed, raise };
}

/** Whose login an event is: the account and the user (a role session counts as its own user). */
export interface Subject {
  /** The account logged into (`recipientAccountId`). */
  account: string;
  /** The user name; `role/session` for assumed-role sessions (each person of a shared role). */
  user: string;
}

/**
 * The subject of a login: profiles are kept per account and user, so `root` of two accounts, or
 * two people using one role, are never compared with each other.
 */
export function subjectOf(event: NormalizedEvent): Subject {
  const user = event.user_type === "AssumedRole" && event.session_name
    ? `${event.username}/${event.session_name}`
    : event.username;
  return { account: event.account_id ?? "", user };
}

/** The account an access key belongs to: from the caller's ARN, else the event's account. */
export function keyAccountOf(event: NormalizedEvent): string {
  const account = event.user_arn?.split(":")[4];
  return account || event.account_id || "";
}
