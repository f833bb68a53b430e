/**
 * `user_risk`: BuffaLogs' user risk score. It counts, per user, the alerts the other detectors
 * deliver (instances named in `countDetectors`; filtered alerts do not count) and maps the count
 * to a level — 0: `no_risk`, 1–3: `low`, 4–6: `medium`, ≥ 7: `high` — and raises a
 * `user_risk_threshold` alert each time the level rises to or above `threshold` (default
 * `medium`): severity `high` when the level is high, else `medium` (VIP users: one level higher).
 *
 * The score decays: only alerts within `window` (default 45 days, BuffaLogs' alert retention)
 * of the user's latest counted alert, in event time, count. The level is recomputed when an alert
 * arrives, so a user whose old alerts aged out drops to a lower level at their next alert, and a
 * later rise alerts again. One alert per (user, level, UTC day).
 *
 * State: `["user", account, user]` → the level and the counted alerts (time, id; at most `maxAlerts`),
 * expiring after `idleExpiry` without alerts.
 *
 * @module
 */

import type { Alert, NormalizedEvent } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import {
  checkLoginOptions,
  durationOption,
  loginDefaults,
  type LoginOptions,
  LoginPolicy,
  utcDay,
} from "./_login.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Risk levels, lowest first. */
export const RISK_LEVELS = ["no_risk", "low", "medium", "high"] as const;

/** A user's risk level. */
export type RiskLevel = typeof RISK_LEVELS[number];

/** BuffaLogs' level for a number of alerts: 0 none, 1–3 low, 4–6 medium, ≥ 7 high. */
export function riskLevel(count: number): RiskLevel {
  if (count <= 0) return "no_risk";
  if (count <= 3) return "low";
  if (count <= 6) return "medium";
  return "high";
}

/** Options of `user_risk`. */
export interface Options extends
  Pick<
    LoginOptions,
    "ignoredUsers" | "enabledUsers" | "vipUsers" | "vipOnly" | "idleExpiry"
  > {
  /** Detector instance names whose alerts count. */
  countDetectors: string[];
  /** Level from which a rise alerts. */
  threshold: "low" | "medium" | "high";
  /** Alerts older than this before the user's latest counted alert no longer count. */
  window: string | number;
  /** Counted alerts kept per user. */
  maxAlerts: number;
}

/** Defaults of `user_risk`. */
export const defaults = {
  ignoredUsers: loginDefaults.ignoredUsers,
  enabledUsers: loginDefaults.enabledUsers,
  vipUsers: loginDefaults.vipUsers,
  vipOnly: loginDefaults.vipOnly,
  idleExpiry: loginDefaults.idleExpiry,
  countDetectors: ["new_country", "atypical_country", "impossible_travel", "anonymous_ip"],
  threshold: "medium",
  window: "45d",
  maxAlerts: 100,
} satisfies Options;

/** The state of one user. */
export interface RiskProfile {
  /** Level after the latest counted alert. */
  level: RiskLevel;
  /** Counted alerts: event time (epoch ms) and alert id, by time. */
  a: [number, string][];
}

/**
 * Creates a `user_risk` detector.
 *
 * @example Alert from the first rise to "low", counting a renamed instance too
 * ```ts
 * import { createUserRisk } from "./user_risk.ts";
 * const detector = createUserRisk(
 *   { threshold: "low", countDetectors: ["impossible_travel", "travel_eu"] },
 *   { name: "user_risk", baseDir: "." },
 * );
 * ```
 */
export function createUserRisk(options: Partial<Options>, init: DetectorContextInit): Detector {
  const opts = { ...defaults, ...options };
  const policy = new LoginPolicy({ ...opts, loginEvents: [] }, init.name);
  const counted = new Set(opts.countDetectors);
  const windowMs = durationOption(init.name, "window", opts.window);
  const threshold = RISK_LEVELS.indexOf(opts.threshold);

  return {
    name: init.name,
    type: "user_risk",
    async onAlert(alert: Alert, context: DetectorContext): Promise<void> {
      if (!counted.has(alert.detector) || !alert.user) return;
      const time = Date.parse(alert.time);
      if (Number.isNaN(time)) return;
      const user = alert.user;
      const account = alert.account_id ?? "";
      const key = ["user", account, user];
      const profile = await context.state.get<RiskProfile>(key) ?? { level: "no_risk", a: [] };
      if (profile.a.some(([, id]) => id === alert.id)) return;
      profile.a.push([time, alert.id]);
      profile.a.sort((x, y) => x[0] - y[0]);
      if (profile.a.length > opts.maxAlerts) profile.a.splice(0, profile.a.length - opts.maxAlerts);
      const latest = profile.a[profile.a.length - 1][0];
      const recent = profile.a.filter(([t]) => t >= latest - windowMs);
      const level = riskLevel(recent.length);
      const previous = profile.level;
      profile.level = level;
      context.state.set(key, profile, { expireIn: policy.expireIn });
      const rank = RISK_LEVELS.indexOf(level);
      if (rank <= RISK_LEVELS.indexOf(previous) || rank < threshold) return;
      const event: NormalizedEvent = {
        timestamp: alert.time,
        time,
        event_id: alert.id,
        event_name: "user_risk",
        event_source: "trailwatch",
        username: user,
        outcome: "success",
        account_id: alert.account_id,
        region: alert.region,
        ip: alert.ip,
        raw: {},
      };
      const draft = {
        severity: policy.severity(level === "high" ? "high" : "medium", user),
        title: `Risk level of ${user} rose from ${previous} to ${level} (${recent.length} alerts)`,
        account_id: account,
        key: `${user}|${level}|${utcDay(time)}`,
        event_ids: alert.event_ids,
        idFromKey: true,
        details: {
          previous_level: previous,
          level,
          alerts_counted: recent.length,
          alert_ids: recent.map(([, id]) => id),
          triggered_by: { detector: alert.detector, id: alert.id, title: alert.title },
        },
      };
      const stop = policy.userFilter(user);
      if (stop) context.suppress(draft, event, stop);
      else context.alert(draft, event);
    },
  };
}

/** The `user_risk` plugin. */
export const userRiskDetector: DetectorPlugin = {
  description: "User risk score from the login-anomaly alerts; alerts when it rises",
  check(check: OptionsChecker) {
    checkLoginOptions(check, { logins: false });
    check.strings("countDetectors", { nonEmpty: true });
    check.string("threshold", { oneOf: ["low", "medium", "high"] });
    const windowMs = check.duration("window");
    if (windowMs === 0) check.problem("window", "must be longer than 0");
    check.integer("maxAlerts", { min: 1, max: 1000 });
    check.duration("idleExpiry");
  },
  create: (options: RawOptions, init) => createUserRisk(options as Partial<Options>, init),
};
