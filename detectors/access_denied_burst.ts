/**
 * `access_denied_burst`: at least `threshold` calls denied for lack of permission (`errorCode`
 * AccessDenied, UnauthorizedOperation, or containing AccessDenied — `AccessDeniedException`,
 * `Client.UnauthorizedOperation`) within `window` by one principal (its ARN, else account and
 * user name). Stolen credentials probing what they may do look like this. One alert per burst.
 * Calls made by AWS services are not counted.
 *
 * @module
 */

import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import { burstFacts, countHit, distinctDetails, formatWindow, windowOption } from "./_burst.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `access_denied_burst`. */
export interface Options {
  /** Denied calls that make a burst. */
  threshold: number;
  /** Time within which they must fall (`"5m"`, `"1h"`, or seconds). */
  window: string | number;
  /** Severity of the alert. */
  severity: Severity;
  /** Principals not counted: user names or ARNs (exact), e.g. a scanner's role. */
  ignoredPrincipals: string[];
}

/** Defaults of `access_denied_burst`. */
export const defaults = {
  threshold: 20,
  window: "5m",
  severity: "medium",
  ignoredPrincipals: [],
} satisfies Options;

/** Whether an `errorCode` means the call was denied for lack of permission. */
export function isAccessDenied(errorCode: string | undefined): boolean {
  if (!errorCode) return false;
  return errorCode.includes("AccessDenied") || errorCode === "UnauthorizedOperation" ||
    errorCode.endsWith(".UnauthorizedOperation");
}

/**
 * Creates an `access_denied_burst` detector.
 *
 * @example Twenty denied calls in five minutes per principal
 * ```ts
 * import { createAccessDeniedBurst } from "./access_denied_burst.ts";
 * const detector = createAccessDeniedBurst({ threshold: 20, window: "5m" }, { name: "denied", baseDir: "." });
 * ```
 */
export function createAccessDeniedBurst(
  options: Partial<Options>,
  init: DetectorContextInit,
): Detector {
  const opts = { ...defaults, ...options };
  const windowMs = windowOption("access_denied_burst", opts.window);
  const ignored = new Set(opts.ignoredPrincipals);
  const threshold = opts.threshold;
  const span = formatWindow(windowMs);

  return {
    name: init.name,
    type: "access_denied_burst",
    prefetch(event: NormalizedEvent): Deno.KvKey | undefined {
      if (!isAccessDenied(event.error_code)) return undefined;
      return ["principal", event.user_arn ?? `${event.account_id ?? ""}:${event.username}`];
    },
    detect(event: NormalizedEvent, context: DetectorContext): Promise<void> | undefined {
      // Most events are no denial: answer them without a promise.
      if (!isAccessDenied(event.error_code) || event.user_type === "AWSService") return;
      if (ignored.has(event.username) || (event.user_arn && ignored.has(event.user_arn))) return;
      return onDenied(event, context);
    },
  };

  async function onDenied(event: NormalizedEvent, context: DetectorContext): Promise<void> {
    const principal = event.user_arn ?? `${event.account_id ?? ""}:${event.username}`;
    const action = `${event.event_source.replace(/\.amazonaws\.com$/, "")}:${event.event_name}`;
    const burst = await countHit(
      context.state,
      ["principal", principal],
      [event.time, event.event_id, action],
      threshold,
      windowMs,
    );
    if (!burst) return;
    context.alert({
      severity: opts.severity,
      title: `${burst.hits.length} access-denied errors for ${event.username} within ${span}`,
      event_ids: burst.hits.map(([, id]) => id),
      details: {
        principal,
        denied: burst.hits.length,
        ...burstFacts(burst, threshold, windowMs),
        actions: distinctDetails(burst.hits),
        error_code: event.error_code,
      },
    }, event);
  }
}

/** The `access_denied_burst` plugin. */
export const accessDeniedBurstDetector: DetectorPlugin = {
  description: "Bursts of AccessDenied/UnauthorizedOperation errors per principal",
  check(check: OptionsChecker) {
    check.integer("threshold", { min: 2, max: 1000 });
    const windowMs = check.duration("window");
    if (windowMs === 0) check.problem("window", "must be longer than 0");
    check.string("severity", { oneOf: SEVERITIES });
    check.strings("ignoredPrincipals");
  },
  create: (options: RawOptions, init) => createAccessDeniedBurst(options as Partial<Options>, init),
};
