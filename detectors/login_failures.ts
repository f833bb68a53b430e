/**
 * `console_login_failures`: at least `threshold` failed console logins (`ConsoleLogin` with
 * `responseElements.ConsoleLogin` = Failure) within `window`, per user (within an account) and
 * per source IP — password guessing or spraying. One alert per burst: further failures while the
 * burst goes on (each within `window` of the previous one) do not alert again.
 *
 * @module
 */

import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import { burstFacts, countHit, distinctDetails, formatWindow, windowOption } from "./_burst.ts";
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
  const windowMs = windowOption("console_login_failures", opts.window);
  const by = new Set(opts.by);
  const threshold = opts.threshold;
  const span = formatWindow(windowMs);

  return {
    name: init.name,
    type: "console_login_failures",
    detect(event: NormalizedEvent, context: DetectorContext): Promise<void> | undefined {
      // Most events are no failed login: answer them without a promise.
      if (event.event_name !== "ConsoleLogin" || event.outcome !== "failure") return;
      return onFailure(event, context);
    },
  };

  async function onFailure(event: NormalizedEvent, context: DetectorContext): Promise<void> {
    const account = event.account_id ?? "";
    // Per user the burst lists the source IPs; per IP, the users.
    const scopes: [by: "user" | "ip", key: Deno.KvKey, label: string, detail: string][] = [];
    if (by.has("user")) {
      scopes.push([
        "user",
        ["user", account, event.username],
        `for ${event.username}`,
        event.ip ?? event.source_host ?? "",
      ]);
    }
    if (by.has("ip") && event.ip) {
      scopes.push([
        "ip",
        ["ip", event.ip],
        `from ${event.ip}`,
        account ? `${event.username} (${account})` : event.username,
      ]);
    }
    for (const [scope, key, label, detail] of scopes) {
      const burst = await countHit(
        context.state,
        key,
        [event.time, event.event_id, detail],
        threshold,
        windowMs,
      );
      if (!burst) continue;
      context.alert({
        severity: opts.severity,
        title: `${burst.hits.length} failed console logins ${label} within ${span}`,
        key: scope,
        event_ids: burst.hits.map(([, id]) => id),
        details: {
          by: scope,
          failures: burst.hits.length,
          ...burstFacts(burst, threshold, windowMs),
          [scope === "user" ? "source_ips" : "users"]: distinctDetails(burst.hits),
        },
      }, event);
    }
  }
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
