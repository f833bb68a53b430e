/**
 * `console_login_failures`: at least `threshold` failed console logins (`ConsoleLogin` with
 * `responseElements.ConsoleLogin` = Failure) within `window`, per user (within an account) and
 * per source IP — password guessing or spraying. One alert per burst: further failures while the
 * burst goes on (each within `window` of the previous one) do not alert again.
 *
 * @module
 */

import { parseDuration } from "../core/validate.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import { countHit, distinctDetails, formatWindow } from "./_burst.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** What failures are grouped by. */
export type LoginFailureKey = "user" | "ip";

/** Options of `console_login_failures`. */
export interface Options {
  /** Failures that make a burst. */
  threshold: number;
  /** Time within which they must fall (`"10m"`, `"1h"`, or seconds). */
  window: string | number;
  /** Severity of the alert. */
  severity: Severity;
  /** Count per user (within an account), per source IP, or both. */
  by: LoginFailureKey[];
}

/** Defaults of `console_login_failures`. */
export const defaults = {
  threshold: 5,
  window: "10m",
  severity: "medium",
  by: ["user", "ip"],
} satisfies Options;

/**
 * Creates a `console_login_failures` detector.
 *
 * @example Five failures in ten minutes, per user and per IP
 * ```ts
 * import { createConsoleLoginFailures } from "./login_failures.ts";
 * const detector = createConsoleLoginFailures({ threshold: 5, window: "10m" }, { name: "logins", baseDir: "." });
 * ```
 */
export function createConsoleLoginFailures(
  options: Partial<Options>,
  init: DetectorContextInit,
): Detector {
  const opts = { ...defaults, ...options };
  const windowMs = parseDuration(opts.window);
  if (windowMs === undefined || windowMs <= 0) {
    throw new RangeError(
      `console_login_failures: window must be a positive duration, got ${opts.window}`,
    );
  }
  const by = new Set(opts.by);
  const threshold = opts.threshold;
  const span = formatWindow(windowMs);

  return {
    name: init.name,
    type: "console_login_failures",
    async detect(event: NormalizedEvent, context: DetectorContext): Promise<void> {
      if (event.event_name !== "ConsoleLogin" || event.outcome !== "failure") return;
      const account = event.account_id ?? "";
      if (by.has("user")) {
        const burst = await countHit(
          context.state,
          ["user", account, event.username],
          [event.time, event.event_id, event.ip ?? event.source_host ?? ""],
          threshold,
          windowMs,
        );
        if (burst) {
          context.alert({
            severity: opts.severity,
            title:
              `${burst.hits.length} failed console logins for ${event.username} within ${span}`,
            key: "user",
            event_ids: burst.hits.map(([, id]) => id),
            details: {
              by: "user",
              failures: burst.hits.length,
              threshold,
              window_seconds: windowMs / 1000,
              first: new Date(burst.first).toISOString(),
              last: new Date(burst.last).toISOString(),
              source_ips: distinctDetails(burst.hits),
            },
          }, event);
        }
      }
      if (by.has("ip") && event.ip) {
        const burst = await countHit(
          context.state,
          ["ip", event.ip],
          [event.time, event.event_id, account ? `${event.username} (${account})` : event.username],
          threshold,
          windowMs,
        );
        if (burst) {
          context.alert({
            severity: opts.severity,
            title: `${burst.hits.length} failed console logins from ${event.ip} within ${span}`,
            key: "ip",
            event_ids: burst.hits.map(([, id]) => id),
            details: {
              by: "ip",
              failures: burst.hits.length,
              threshold,
              window_seconds: windowMs / 1000,
              first: new Date(burst.first).toISOString(),
              last: new Date(burst.last).toISOString(),
              users: distinctDetails(burst.hits),
            },
          }, event);
        }
      }
    },
  };
}

/** The `console_login_failures` plugin. */
export const consoleLoginFailuresDetector: DetectorPlugin = {
  description: "Bursts of failed console logins per user and per source IP",
  check(check: OptionsChecker) {
    check.integer("threshold", { min: 2, max: 1000 });
    const windowMs = check.duration("window");
    if (windowMs === 0) check.problem("window", "must be longer than 0");
    check.strings("by", {
      nonEmpty: true,
      each: (item) =>
        item === "user" || item === "ip" ? undefined : `expected "user" or "ip", got "${item}"`,
    });
    check.string("severity", { oneOf: SEVERITIES });
  },
  create: (options: RawOptions, init) =>
    createConsoleLoginFailures(options as Partial<Options>, init),
};
