/**
 * `root_activity`: any action by the account's root user. AWS recommends never using root for
 * everyday work, so every root call (console login included) is worth a look. Calls AWS services
 * make on root's behalf (`invokedBy`) and service events are not root activity.
 *
 * @module
 */

import type { AlertDraft, NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { Detector, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `root_activity`. */
export interface Options {
  /** Severity of the alert. */
  severity: Severity;
  /** Event names ignored (e.g. read-only calls you accept from root). */
  ignoreEvents: string[];
}

/** Defaults of `root_activity`. */
export const defaults = { severity: "high", ignoreEvents: [] } satisfies Options;

/** Creates a `root_activity` detector. */
export function createRootActivity(options: Partial<Options>, init: DetectorContextInit): Detector {
  const opts = { ...defaults, ...options };
  const ignored = new Set(opts.ignoreEvents);
  return {
    name: init.name,
    type: "root_activity",
    match(event: NormalizedEvent): AlertDraft[] | undefined {
      if (event.user_type !== "Root" || event.invoked_by || ignored.has(event.event_name)) {
        return undefined;
      }
      if (event.event_type === "AwsServiceEvent") return undefined;
      const failed = event.outcome === "failure"
        ? ` (failed: ${event.error_code ?? "Failure"})`
        : "";
      return [{
        severity: opts.severity,
        title: `Root account used: ${event.event_name}${failed}`,
        details: {
          event_name: event.event_name,
          event_source: event.event_source,
          outcome: event.outcome,
          error_code: event.error_code,
          user_agent: event.agent,
          mfa_used: event.mfa_used,
        },
      }];
    },
  };
}

/** The `root_activity` plugin. */
export const rootActivityDetector: DetectorPlugin = {
  description: "Any action by the root user",
  check(check: OptionsChecker) {
    check.string("severity", { oneOf: SEVERITIES });
    check.strings("ignoreEvents");
  },
  create: (options: RawOptions, init) => createRootActivity(options as Partial<Options>, init),
};
