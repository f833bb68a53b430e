/**
 * `impossible_travel`: BuffaLogs' Impossible Travel, for users' logins and (credential travel) for
 * access keys. Two logins of one user — or two API calls signed with one access key — more than
 * `minDistanceKm` apart (haversine) at a speed above `maxSpeedKmh` (Δt = 0 counts as 0.001 h)
 * raise one alert per (user or key, unordered pair of countries, UTC day of the later login).
 *
 * BuffaLogs compares each login with the latest stored one, so logs delivered out of order give
 * both missed and false alerts. Here a new login at location A is compared, for every other known
 * location B, with its neighbours among the logins at A or B in event time: the nearest login at
 * B before it and after it, unless a login at A lies in between. That includes the previous and
 * the next login. A pair adjacent in the final A∪B sequence is always compared (when the later of
 * the two arrives, nothing lies between them); a pair compared while another login between them
 * was still missing is covered by a final pair between the same two locations, so its alert key
 * (countries and day) is the same — the id set does not depend on the arrival order, except when a
 * run of logins at one location crosses UTC midnight and its part before midnight arrives after its
 * part after midnight was compared (see the README, "Order independence"). Alert ids do not depend on the
 * pair that triggered them (`event_ids` is empty; `details.from/to.event_id` name the pair).
 *
 * State, per user (`["user", account, user]`): the earliest login, the failed-login count, the
 * days with logins and the alert keys raised; the last `maxLogins` logins (time, event id, IP,
 * place; each place once) are kept one value per UTC day (`["user", account, user, day]`), so a
 * login reads only the days within reach of an impossible speed and writes only its own. Per
 * access key (`["key", id]`): up to `maxKeyVisits` "visits" — calls at one place within one UTC
 * day, each within 15 minutes of the next, kept as first/last call — so a call inside a known
 * visit changes and writes nothing, which keeps credential travel cheap on busy keys. Logins
 * stopped by a per-login filter (`ignoredIps`, `ignoreMobile`) are compared (their alerts are
 * filtered) but not stored. Profiles expire after `idleExpiry` (temporary `ASIA…` keys: 3 days).
 *
 * @module
 */

import type { AlertDraft, NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import { describe, type OptionsChecker, type RawOptions } from "../core/validate.ts";
import {
  before,
  checkLoginOptions,
  DAY_MS,
  haversineKm,
  iso,
  keyAccountOf,
  loginDefaults,
  type LoginOptions,
  LoginPolicy,
  MAX_LOGINS_LIMIT,
  type ProfileBase,
  subjectOf,
  utcDay,
} from "./_login.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** What is tracked: users' logins, and access keys over every API call. */
export type Scope = "user" | "access_key";

/** Options of `impossible_travel` (plus the shared login options). */
export interface Options extends LoginOptions {
  /** `user` (logins) and/or `access_key` (credential travel over all API calls). */
  scopes: Scope[];
  /** Distance that must be exceeded (km). */
  minDistanceKm: number;
  /** Speed that must be exceeded (km/h). */
  maxSpeedKmh: number;
  /** Travel within one country is filtered (BuffaLogs' `ignored_impossible_travel_all_same_country`). */
  ignoreSameCountry: boolean;
  /** Country pairs (either direction) whose travel is filtered, e.g. `[["US", "CA"]]`. */
  ignoredCountryPairs: string[][];
  /** Severity (VIP users: one level higher). */
  severity: Severity;
  /** Visits kept per access key. */
  maxKeyVisits: number;
}

/** Defaults of `impossible_travel`. */
export const defaults = {
  ...loginDefaults,
  scopes: ["user", "access_key"],
  minDistanceKm: 100,
  maxSpeedKmh: 300,
  ignoreSameCountry: true,
  ignoredCountryPairs: [],
  severity: "high",
  maxKeyVisits: 50,
} satisfies Options;

/** Longest gap between two calls of one visit (access keys). */
const MAX_VISIT_GAP_MS = 15 * 60_000;
/** Alert keys remembered per user or key. */
const MAX_KEYS = 64;
/** Temporary credentials (ASIA…) live at most 36 h: their state expires after 3 days. */
const TEMPORARY_KEY_EXPIRY_MS = 3 * DAY_MS;

/** Where and when: one login, or one end of a visit (in memory only). */
export interface End {
  /** Event time (epoch ms). */
  t: number;
  /** Event id. */
  id: string;
  /** Source IP. */
  ip: string;
  /** Country ("" when unknown). */
  c: string;
  /** Latitude. */
  la: number;
  /** Longitude. */
  lo: number;
  /** City ("" when unknown). */
  y: string;
}

/**
 * A login as earlier versions stored it, a whole list of them per day: time, event id, IP,
 * country, lat, lon, city. Such a list is read as a {@link LoginDay}.
 */
export type Login = [
  t: number,
  id: string,
  ip: string,
  c: string,
  la: number,
  lo: number,
  y: string,
];

/** Where logins came from: IP, country ("" when unknown), latitude, longitude, city. */
export type LoginPlace = [ip: string, c: string, la: number, lo: number, y: string];

/**
 * The logins of one user in one UTC day (`[...key, day]`), in event-time order (then event id).
 * Each place is kept once: a day takes less than half the bytes of a list of whole logins.
 */
export interface LoginDay {
  /** The places of the day's logins. */
  p: LoginPlace[];
  /** Per login: milliseconds since the day began, then its place (an index into `p`). */
  l: number[];
  /** Per login: the event id. */
  i: string[];
}

/**
 * A stored visit of an access key: calls at one place within one UTC day, each within the visit
 * gap of the next, kept as the first (a) and the last (b) call, and the place.
 */
export type Visit = [
  a: number,
  b: number,
  ia: string,
  ea: string,
  ib: string,
  eb: string,
  c: string,
  la: number,
  lo: number,
  y: string,
];

/**
 * The state of one user or access key. A user's logins are kept in one value per UTC day
 * (`[...key, day]` → {@link LoginDay}), so that a login reads only the days within reach of an
 * impossible speed and writes only its own day; `d` lists those days.
 */
export interface Track extends ProfileBase {
  /** Access keys: the user the key belongs to. */
  u?: string;
  /** Access keys: the account the key belongs to. */
  acct?: string;
  /** Users: the days (epoch day numbers) with logins kept, and how many, by day. */
  d?: [day: number, count: number][];
  /** Access keys: the visits, by first call. */
  v?: Visit[];
  /** Alert keys raised: "" when delivered, else the filter that stopped it. */
  k?: Record<string, string>;
}

/** A login or call to compare, with its per-login filter. */
interface Point extends End {
  f: string;
}

/** A compared pair, earlier end first. */
interface Pair {
  from: End;
  to: End;
  /** The real gap is unknown but below the visit gap (the key was in use at both places). */
  concurrent?: boolean;
}

/** An impossible pair found for one alert key. */
interface Found extends Pair {
  key: string;
  km: number;
  kmh: number;
  filter: string | undefined;
}

/** Two places are the same when the GeoIP answers are (same country and coordinates). */
function place(c: string, la: number, lo: number): string {
  return `${c}@${la},${lo}`;
}

/** The logins of the days within reach of a new login, one after the other. */
interface LoginSpan {
  /** Event times (epoch ms). */
  t: number[];
  /** Event ids. */
  id: string[];
  /** Places. */
  p: LoginPlace[];
}

function loginEnd(span: LoginSpan, i: number): End {
  const p = span.p[i];
  return { t: span.t[i], id: span.id[i], ip: p[0], c: p[1], la: p[2], lo: p[3], y: p[4] };
}

/** A stored day of logins (empty when there is none); a list of the earlier format is converted. */
function loginDay(value: LoginDay | Login[] | undefined): LoginDay {
  if (value === undefined) return { p: [], l: [], i: [] };
  if (!Array.isArray(value)) return value;
  const day: LoginDay = { p: [], l: [], i: [] };
  for (const [t, id, ip, c, la, lo, y] of value) {
    const start = Math.floor(t / DAY_MS) * DAY_MS;
    insertLogin(day, start, { t, id, ip, c, la, lo, y });
  }
  return day;
}

/** Adds login `x` to `day` (which begins at `start`, epoch ms), in order. */
function insertLogin(day: LoginDay, start: number, x: End): void {
  const { p, l, i } = day;
  let at = i.length;
  while (at > 0 && before(x.t, x.id, start + l[2 * at - 2], i[at - 1])) at--;
  let k = 0;
  while (
    k < p.length &&
    !(p[k][0] === x.ip && p[k][1] === x.c && p[k][2] === x.la && p[k][3] === x.lo &&
      p[k][4] === x.y)
  ) k++;
  if (k === p.length) p.push([x.ip, x.c, x.la, x.lo, x.y]);
  l.splice(2 * at, 0, x.t - start, k);
  i.splice(at, 0, x.id);
}

/** Drops the `n` earliest logins of `day`, and the places only they came from. */
function dropEarliest(day: LoginDay, n: number): void {
  day.l.splice(0, 2 * n);
  day.i.splice(0, n);
  const renumbered = new Map<number, number>();
  const places: LoginPlace[] = [];
  for (let k = 1; k < day.l.length; k += 2) {
    let to = renumbered.get(day.l[k]);
    if (to === undefined) {
      renumbered.set(day.l[k], to = places.length);
      places.push(day.p[day.l[k]]);
    }
    day.l[k] = to;
  }
  day.p = places;
}

function visitStart(v: Visit): End {
  return { t: v[0], id: v[3], ip: v[2], c: v[6], la: v[7], lo: v[8], y: v[9] };
}

function visitEnd(v: Visit): End {
  return { t: v[1], id: v[5], ip: v[4], c: v[6], la: v[7], lo: v[8], y: v[9] };
}

/** Widens a visit to include a call at `t`. */
function stretch(v: Visit, t: number, ip: string, id: string): void {
  if (before(t, id, v[0], v[3])) {
    v[0] = t;
    v[2] = ip;
    v[3] = id;
  }
  if (before(v[1], v[5], t, id)) {
    v[1] = t;
    v[4] = ip;
    v[5] = id;
  }
}

function endDetails(end: End): Record<string, unknown> {
  return {
    ip: end.ip,
    time: iso(end.t),
    country: end.c || undefined,
    city: end.y || undefined,
    lat: end.la,
    lon: end.lo,
    event_id: end.id,
  };
}

function formatSpan(ms: number): string {
  if (ms < 120_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/**
 * The neighbours of `x` among time-sorted logins, per other place: the nearest login at each
 * place before `x` with no login at x's place in between, and the same after it. Undefined when
 * `x` is already among them.
 */
function loginNeighbours(span: LoginSpan, x: End): Pair[] | undefined {
  const { t, id, p } = span;
  let at = t.length;
  while (at > 0 && before(x.t, x.id, t[at - 1], id[at - 1])) at--;
  if (at > 0 && id[at - 1] === x.id && t[at - 1] === x.t) return undefined;
  const pairs: Pair[] = [];
  const here = (q: LoginPlace) => q[2] === x.la && q[3] === x.lo && q[1] === x.c;
  let seen: Set<string> | undefined;
  for (let i = at - 1; i >= 0 && !here(p[i]); i--) {
    const where = place(p[i][1], p[i][2], p[i][3]);
    if (!seen?.has(where)) pairs.push({ from: loginEnd(span, i), to: x });
    (seen ??= new Set()).add(where);
  }
  seen = undefined;
  for (let i = at; i < t.length && !here(p[i]); i++) {
    const where = place(p[i][1], p[i][2], p[i][3]);
    if (!seen?.has(where)) pairs.push({ from: x, to: loginEnd(span, i) });
    (seen ??= new Set()).add(where);
  }
  return pairs;
}

const NO_PAIRS: Pair[] = [];

/**
 * The same for an access key's visits: undefined when `x` falls inside (or is an end of) a visit
 * of its own place — nothing new can be learnt from it. A visit of another place that contains
 * `x` gives a "concurrent" pair when no call at x's place lies within the gap on one side.
 */
export function visitNeighbours(visits: readonly Visit[], x: End, gap: number): Pair[] | undefined {
  let elsewhere = false;
  let last: Visit | undefined;
  // Indexed loops: this runs for most API calls, and a for-of allocated here.
  for (let i = 0; i < visits.length; i++) {
    const v = visits[i];
    if (!last || before(last[1], last[5], v[1], v[5])) last = v;
    if (v[7] !== x.la || v[8] !== x.lo || v[6] !== x.c) {
      elsewhere = true;
      continue;
    }
    if (!before(x.t, x.id, v[0], v[3]) && !before(v[1], v[5], x.t, x.id)) return undefined;
  }
  // Most keys are used from one place: nothing to compare with (and nothing to allocate).
  if (!elsewhere) return NO_PAIRS;
  // Calls in order: x follows every visit and the latest visit is x's own place, so every other
  // place lies behind that visit and x has no neighbour elsewhere.
  if (
    last && last[7] === x.la && last[8] === x.lo && last[6] === x.c &&
    before(last[1], last[5], x.t, x.id)
  ) return NO_PAIRS;
  let aPrev: End | undefined;
  let aNext: End | undefined;
  const prev = new Map<string, End>();
  const next = new Map<string, End>();
  const inside = new Map<string, Visit>();
  for (let i = 0; i < visits.length; i++) {
    const v = visits[i];
    const startsBefore = before(v[0], v[3], x.t, x.id);
    const endsAfter = before(x.t, x.id, v[1], v[5]);
    if (v[7] === x.la && v[8] === x.lo && v[6] === x.c) {
      if (!endsAfter && (!aPrev || before(aPrev.t, aPrev.id, v[1], v[5]))) aPrev = visitEnd(v);
      if (!startsBefore && (!aNext || before(v[0], v[3], aNext.t, aNext.id))) {
        aNext = visitStart(v);
      }
      continue;
    }
    const where = place(v[6], v[7], v[8]);
    if (startsBefore && endsAfter) inside.set(where, v);
    else if (!endsAfter) {
      const p = prev.get(where);
      if (!p || before(p.t, p.id, v[1], v[5])) prev.set(where, visitEnd(v));
    } else {
      const n = next.get(where);
      if (!n || before(v[0], v[3], n.t, n.id)) next.set(where, visitStart(v));
    }
  }
  const pairs: Pair[] = [];
  for (const v of inside.values()) {
    // Calls at v's place lie within `gap` on both sides of x; one of them is next to x unless
    // calls at x's place lie within the gap on both sides too.
    if (!aPrev || aPrev.t < x.t - gap || !aNext || aNext.t > x.t + gap) {
      pairs.push({ from: visitStart(v), to: x, concurrent: true });
    }
  }
  for (const [where, p] of prev) {
    if (inside.has(where)) continue;
    if (!aPrev || before(aPrev.t, aPrev.id, p.t, p.id)) pairs.push({ from: p, to: x });
  }
  for (const [where, n] of next) {
    if (inside.has(where)) continue;
    if (!aNext || before(n.t, n.id, aNext.t, aNext.id)) pairs.push({ from: x, to: n });
  }
  return pairs;
}

function checkPairs(check: OptionsChecker): void {
  const value = check.any("ignoredCountryPairs");
  if (value === undefined) return;
  if (!Array.isArray(value)) {
    check.problem(
      "ignoredCountryPairs",
      `expected an array of country pairs, got ${describe(value)}`,
    );
    return;
  }
  value.forEach((pair, i) => {
    if (
      !Array.isArray(pair) || pair.length !== 2 ||
      !pair.every((c) => typeof c === "string" && /^[A-Z]{2}$/.test(c))
    ) {
      check.problems.push({
        path: `${check.at("ignoredCountryPairs")}[${i}]`,
        message: `expected two ISO country codes such as ["US", "CA"], got ${describe(pair)}`,
      });
    }
  });
}

/**
 * Creates an `impossible_travel` detector.
 *
 * @example Users only, 500 km/h, a week of learning
 * ```ts
 * import { createImpossibleTravel } from "./impossible_travel.ts";
 * const detector = createImpossibleTravel(
 *   { scopes: ["user"], maxSpeedKmh: 500, learningDays: 7 },
 *   { name: "impossible_travel", baseDir: "." },
 * );
 * ```
 */
export function createImpossibleTravel(
  options: Partial<Options>,
  init: DetectorContextInit,
  /** Tests turn `fastCalls` off to compare with the general path (see `extendLatest`). */
  tuning: { fastCalls?: boolean } = {},
): Detector {
  const opts = { ...defaults, ...options };
  const fastCalls = tuning.fastCalls ?? true;
  const policy = new LoginPolicy(opts, init.name);
  const byUser = opts.scopes.includes("user");
  const byKey = opts.scopes.includes("access_key");
  const minKm = opts.minDistanceKm;
  const maxKmh = opts.maxSpeedKmh;
  // Calls of a visit are at most `gap` apart, so a call at another place (> minKm away) within
  // the gap is certainly too fast: minKm / gap > maxKmh.
  const gap = Math.min(MAX_VISIT_GAP_MS, Math.floor(0.9 * (minKm / maxKmh) * 3_600_000));
  const ignoredPairs = new Set(opts.ignoredCountryPairs.map((p) => [...p].sort().join("|")));
  // No two points on Earth are farther apart than half its circumference (20,015 km).
  const horizonMs = (20_016 / maxKmh) * 3_600_000;

  /** The filter of an impossible pair, in BuffaLogs' order; undefined when it alerts. */
  function pairFilter(user: string, x: Point, p: Pair, first: number | undefined) {
    const other = p.from === x ? p.to : p.from;
    return policy.userFilter(user) ?? (x.f || undefined) ??
      (policy.isAllowedCountry(x.c) && policy.isAllowedCountry(other.c)
        ? "allowedCountries"
        : undefined) ??
      (opts.ignoreSameCountry && x.c && x.c === other.c ? "ignoreSameCountry" : undefined) ??
      (x.c && other.c && ignoredPairs.has([x.c, other.c].sort().join("|"))
        ? "ignoredCountryPairs"
        : undefined) ??
      policy.learning(p.to.t, first);
  }

  /** Keeps the impossible pairs, one per alert key (unfiltered first, then the fastest). */
  function judge(
    pairs: Pair[],
    x: Point,
    prefix: string,
    user: string,
    first: number | undefined,
  ): Found[] {
    const found = new Map<string, Found>();
    for (const p of pairs) {
      const km = haversineKm(p.from.la, p.from.lo, p.to.la, p.to.lo);
      if (!(km > minKm)) continue;
      const ms = p.concurrent ? gap : p.to.t - p.from.t;
      const kmh = km / (ms === 0 ? 0.001 : ms / 3_600_000);
      if (!(kmh > maxKmh)) continue;
      const a = p.from.c || place("", p.from.la, p.from.lo);
      const b = p.to.c || place("", p.to.la, p.to.lo);
      const key = `${prefix}|${a < b ? `${a}|${b}` : `${b}|${a}`}|${utcDay(p.to.t)}`;
      const filter = pairFilter(user, x, p, first);
      const previous = found.get(key);
      if (
        !previous || (previous.filter && !filter) ||
        (!previous.filter === !filter && kmh > previous.kmh)
      ) {
        found.set(key, { ...p, key, km, kmh, filter });
      }
    }
    return [...found.values()];
  }

  /** Raises (or files as filtered) each key not raised before; returns whether `track` changed. */
  function raise(
    found: Found[],
    track: Track,
    scope: Scope,
    subject: string,
    user: string,
    account: string,
    event: NormalizedEvent,
    context: DetectorContext,
  ): boolean {
    let changed = false;
    for (const f of found) {
      const done = track.k?.[f.key];
      if (done === "" || (f.filter && done !== undefined)) continue;
      const draft = buildDraft(f, scope, subject, user, track);
      draft.account_id = account;
      if (f.filter) context.suppress(draft, event, f.filter);
      else context.alert(draft, event);
      track.k ??= {};
      delete track.k[f.key];
      track.k[f.key] = f.filter ?? "";
      const keys = Object.keys(track.k);
      for (let i = 0; i < keys.length - MAX_KEYS; i++) delete track.k[keys[i]];
      changed = true;
    }
    return changed;
  }

  function buildDraft(
    f: Found,
    scope: Scope,
    subject: string,
    user: string,
    track: Track,
  ): AlertDraft {
    const span = formatSpan(f.to.t - f.from.t);
    const km = Math.round(f.km);
    const kmh = Math.round(f.kmh);
    const route = `${f.from.c || "?"} → ${f.to.c || "?"}`;
    const title = scope === "user"
      ? `Impossible travel for ${user}: ${route}, ${km} km in ${span} (${kmh} km/h)`
      : `Credential travel: access key ${subject} (${user}) used from ${route}, ${km} km ` +
        (f.concurrent ? "apart, at both places at once" : `in ${span} (${kmh} km/h)`);
    return {
      severity: policy.severity(opts.severity, user),
      title,
      time: iso(f.to.t),
      ip: f.to.ip,
      user,
      key: f.key,
      event_ids: [f.from.id, f.to.id],
      idFromKey: true,
      details: {
        scope,
        access_key_id: scope === "access_key" ? subject : undefined,
        country: f.to.c || undefined,
        from: endDetails(f.from),
        to: endDetails(f.to),
        distance_km: km,
        speed_kmh: kmh,
        concurrent: f.concurrent || undefined,
        failed_logins: scope === "user" ? track.failed : undefined,
      },
    };
  }

  function pointOf(event: NormalizedEvent, ip: string): Point | undefined {
    // The pipeline gives places to public IPs only (private, reserved and non-IP sources have
    // none), unless a custom mapping sets them on purpose.
    const { lat, lon } = event;
    if (lat === undefined || lon === undefined) return undefined;
    return {
      t: event.time,
      id: event.event_id,
      ip,
      c: event.country ?? "",
      y: event.city ?? "",
      la: lat,
      lo: lon,
      f: policy.loginFilter(ip, event.agent) ?? "",
    };
  }

  function remember(track: Track, x: Point): void {
    if (!track.first || before(x.t, x.id, track.first[0], track.first[1])) {
      track.first = [x.t, x.id];
    }
  }

  /** A user's login; writes the login's day and, when it changed, the user's track. */
  async function onLogin(
    key: Deno.KvKey,
    x: Point,
    user: string,
    account: string,
    event: NormalizedEvent,
    context: DetectorContext,
  ): Promise<void> {
    const { state } = context;
    const track = await state.get<Track>(key) ?? {};
    const days = track.d ??= [];
    // Only logins within the horizon can be too fast for x, or lie between x and such a login.
    const from = Math.floor((x.t - horizonMs) / DAY_MS);
    const to = Math.floor((x.t + horizonMs) / DAY_MS);
    const span: LoginSpan = { t: [], id: [], p: [] };
    for (const [day] of days) {
      if (day < from || day > to) continue;
      const logins = loginDay(await state.get<LoginDay | Login[]>([...key, day]));
      const start = day * DAY_MS;
      for (let k = 0; k < logins.i.length; k++) {
        span.t.push(start + logins.l[2 * k]);
        span.id.push(logins.i[k]);
        span.p.push(logins.p[logins.l[2 * k + 1]]);
      }
    }
    const pairs = loginNeighbours(span, x);
    if (!pairs) return;
    // Whether the track changed, and whether more than a day's login count did (see below).
    let changed = false;
    let structural = false;
    if (!x.f) {
      const first = track.first;
      remember(track, x);
      structural = track.first !== first;
      const day = Math.floor(x.t / DAY_MS);
      const dayKey = [...key, day];
      const logins = loginDay(await state.get<LoginDay | Login[]>(dayKey));
      insertLogin(logins, day * DAY_MS, x);
      let i = days.length;
      while (i > 0 && days[i - 1][0] > day) i--;
      if (i > 0 && days[i - 1][0] === day) days[i - 1][1] = logins.i.length;
      else {
        days.splice(i, 0, [day, logins.i.length]);
        structural = true;
      }
      // Keep the last maxLogins logins: drop whole days, oldest first, then the oldest logins.
      let excess = days.reduce((sum, [, count]) => sum + count, 0) - policy.maxLogins;
      if (excess > 0) structural = true;
      while (excess > 0 && days[0][1] <= excess) {
        const [oldest, count] = days.shift()!;
        state.delete([...key, oldest]);
        excess -= count;
      }
      if (excess > 0) {
        const oldestKey = [...key, days[0][0]];
        const oldest = days[0][0] === day
          ? logins
          : loginDay(await state.get<LoginDay | Login[]>(oldestKey));
        dropEarliest(oldest, excess);
        days[0][1] = oldest.i.length;
        if (oldest !== logins) state.set(oldestKey, oldest, { expireIn: policy.expireIn });
      }
      if (days.some(([d]) => d === day)) state.set(dayKey, logins, { expireIn: policy.expireIn });
      changed = true;
    }
    const found = judge(pairs, x, `user|${user}`, user, track.first?.[0]);
    if (raise(found, track, "user", user, user, account, event, context)) {
      changed = structural = true;
    }
    // Most logins only add one to their day's count: the track is then written lazily (see
    // SetOptions.lazy). A lost count is set again from the day's list at the next login that day.
    if (changed) state.set(key, track, { expireIn: policy.expireIn, lazy: !structural });
  }

  /**
   * Inserts a call into an access key's visits (extending or merging visits of its place);
   * returns true when only an existing visit was stretched.
   */
  function insertVisit(visits: Visit[], x: Point): boolean {
    const day = Math.floor(x.t / DAY_MS);
    let merged: Visit | undefined;
    let mergedMore = false;
    let startMoved = false;
    for (let i = 0; i < visits.length; i++) {
      const w = visits[i];
      if (w[7] !== x.la || w[8] !== x.lo || w[6] !== x.c) continue;
      if (Math.floor(w[0] / DAY_MS) !== day || x.t < w[0] - gap || x.t > w[1] + gap) continue;
      if (!merged) {
        merged = w;
        startMoved = before(x.t, x.id, w[0], w[3]);
        stretch(w, x.t, x.ip, x.id);
      } else {
        stretch(merged, w[0], w[2], w[3]);
        stretch(merged, w[1], w[4], w[5]);
        visits.splice(i--, 1);
        mergedMore = true;
      }
    }
    // Only the end of one visit moved: the order of the visits is unchanged.
    if (merged && !mergedMore && !startMoved) return true;
    if (!merged) visits.push([x.t, x.t, x.ip, x.id, x.ip, x.id, x.c, x.la, x.lo, x.y]);
    visits.sort((p, q) => p[0] - q[0] || (p[3] < q[3] ? -1 : p[3] > q[3] ? 1 : 0));
    while (visits.length > opts.maxKeyVisits) {
      let oldest = 0;
      for (let i = 1; i < visits.length; i++) if (visits[i][1] < visits[oldest][1]) oldest = i;
      visits.splice(oldest, 1);
    }
    return false;
  }

  /**
   * A call signed with an access key; returns how the track changed: not at all, only a known
   * visit stretched (a lazy write: most calls), or in structure (a new visit, an alert).
   */
  function onCall(
    track: Track,
    keyId: string,
    x: Point,
    event: NormalizedEvent,
    context: DetectorContext,
  ): "none" | "lazy" | "write" {
    const visits = track.v ??= [];
    const pairs = visitNeighbours(visits, x, gap);
    if (!pairs) return "none";
    let change: "none" | "lazy" | "write" = "none";
    if (!x.f) {
      const first = track.first;
      const stretched = insertVisit(visits, x);
      remember(track, x);
      const account = track.acct ?? keyAccountOf(event);
      change = stretched && track.first === first && track.u === event.username &&
          track.acct === account
        ? "lazy"
        : "write";
      track.u = event.username;
      track.acct = account;
    }
    if (pairs.length === 0) return change;
    const user = track.u ?? event.username;
    const account = track.acct ?? keyAccountOf(event);
    const found = judge(pairs, x, `key|${keyId}`, user, track.first?.[0]);
    return raise(found, track, "access_key", keyId, user, account, event, context)
      ? "write"
      : change;
  }

  async function onFailedLogin(event: NormalizedEvent, context: DetectorContext): Promise<void> {
    const { account, user } = subjectOf(event);
    const key = ["user", account, user];
    const track = await context.state.get<Track>(key) ?? {};
    policy.noteFailure(track, event);
    context.state.set(key, track, { expireIn: policy.expireIn });
  }

  /**
   * The usual call of a busy key: at the place of the visit that ends last, after that visit's
   * last call and within the visit gap on the same UTC day, with no other visit of that place
   * within the gap. Nothing is compared then, and only that visit's end moves: what `onCall` does
   * for such a call (and returns "lazy" for), without its two walks over the visits. Returns
   * false, changing nothing, for any other call.
   */
  function extendLatest(track: Track, x: Point, username: string): boolean {
    const visits = track.v;
    const first = track.first;
    if (
      visits === undefined || visits.length === 0 || x.f !== "" || first === undefined ||
      before(x.t, x.id, first[0], first[1]) || track.u !== username || track.acct === undefined
    ) return false;
    let w = visits[0];
    for (let i = 1; i < visits.length; i++) {
      if (before(w[1], w[5], visits[i][1], visits[i][5])) w = visits[i];
    }
    const day = Math.floor(x.t / DAY_MS);
    if (
      w[7] !== x.la || w[8] !== x.lo || w[6] !== x.c || !before(w[1], w[5], x.t, x.id) ||
      x.t > w[1] + gap || Math.floor(w[0] / DAY_MS) !== day
    ) return false;
    for (let i = 0; i < visits.length; i++) {
      const v = visits[i];
      // Another visit of x's place that x could join (insertVisit would merge them).
      if (
        v !== w && v[7] === x.la && v[8] === x.lo && v[6] === x.c && x.t <= v[1] + gap &&
        Math.floor(v[0] / DAY_MS) === day
      ) return false;
    }
    w[1] = x.t;
    w[4] = x.ip;
    w[5] = x.id;
    return true;
  }

  function callWithTrack(
    key: Deno.KvKey,
    track: Track,
    keyId: string,
    x: Point,
    event: NormalizedEvent,
    context: DetectorContext,
  ): void {
    const change = fastCalls && extendLatest(track, x, event.username)
      ? "lazy"
      : onCall(track, keyId, x, event, context);
    if (change !== "none") {
      const expireIn = keyId.startsWith("ASIA")
        ? Math.min(policy.expireIn, TEMPORARY_KEY_EXPIRY_MS)
        : policy.expireIn;
      context.state.set(key, track, { expireIn, lazy: change === "lazy" });
    }
  }

  /**
   * A call signed with an access key: synchronous when the key's track is in the pass cache.
   * (The waiting paths are functions of their own: a closure here would cost an allocation for
   * every call.)
   */
  function onKeyCall(
    keyId: string,
    x: Point,
    event: NormalizedEvent,
    context: DetectorContext,
  ): Promise<void> | undefined {
    const key = ["key", keyId];
    const cached = context.state.peek<Track>(key);
    if (!cached) return keyCallRead(key, keyId, x, event, context);
    callWithTrack(key, cached.value ?? {}, keyId, x, event, context);
    return undefined;
  }

  async function keyCallRead(
    key: Deno.KvKey,
    keyId: string,
    x: Point,
    event: NormalizedEvent,
    context: DetectorContext,
  ): Promise<void> {
    const track = await context.state.get<Track>(key);
    callWithTrack(key, track ?? {}, keyId, x, event, context);
  }

  async function keyCallAfter(
    pending: Promise<void>,
    keyId: string,
    x: Point,
    event: NormalizedEvent,
    context: DetectorContext,
  ): Promise<void> {
    await pending;
    await onKeyCall(keyId, x, event, context);
  }

  return {
    name: init.name,
    type: "impossible_travel",
    prefetch(event: NormalizedEvent): Deno.KvKey | undefined {
      if (event.access_key_id && event.ip && byKey && !event.invoked_by) {
        return ["key", event.access_key_id];
      }
      if (byUser && policy.loginOutcome(event) !== undefined) {
        const { account, user } = subjectOf(event);
        return ["user", account, user];
      }
      return undefined;
    },
    detect(event: NormalizedEvent, context: DetectorContext): Promise<void> | undefined {
      // Most events are neither logins nor usable key calls: answer them without a promise.
      let pending: Promise<void> | undefined;
      const login = byUser ? policy.loginOutcome(event) : undefined;
      if (login === true && event.ip) {
        const x = pointOf(event, event.ip);
        if (x) {
          const { account, user } = subjectOf(event);
          pending = onLogin(["user", account, user], x, user, account, event, context);
        }
      } else if (login === false) pending = onFailedLogin(event, context);
      const keyId = event.access_key_id;
      if (
        keyId && event.ip && event.lat !== undefined && byKey &&
        !event.invoked_by && event.user_type !== "AWSService" &&
        event.event_type !== "AwsServiceEvent"
      ) {
        const x = pointOf(event, event.ip);
        if (x) {
          pending = pending
            ? keyCallAfter(pending, keyId, x, event, context)
            : onKeyCall(keyId, x, event, context);
        }
      }
      return pending;
    },
  };
}

/** The `impossible_travel` plugin. */
export const impossibleTravelDetector: DetectorPlugin = {
  description:
    "Logins of one user, or calls with one access key, too far apart for the time between them",
  check(check: OptionsChecker) {
    checkLoginOptions(check);
    check.strings("scopes", {
      nonEmpty: true,
      each: (s) =>
        s === "user" || s === "access_key" ? undefined : `expected "user" or "access_key"`,
    });
    check.number("minDistanceKm", { min: 0 });
    const speed = check.number("maxSpeedKmh", { min: 0 });
    if (speed === 0) check.problem("maxSpeedKmh", "must be greater than 0");
    check.boolean("ignoreSameCountry");
    checkPairs(check);
    check.string("severity", { oneOf: SEVERITIES });
    check.integer("maxKeyVisits", { min: 2, max: MAX_LOGINS_LIMIT });
  },
  create: (options: RawOptions, init) => createImpossibleTravel(options as Partial<Options>, init),
};
