/**
 * `console_login_no_mfa`: a successful console login (`ConsoleLogin`, `responseElements.ConsoleLogin`
 * = Success) with `additionalEventData.MFAUsed` = "No" (compared case-insensitively). Logins
 * through an identity provider (SAML/Identity Center) carry MFA outside AWS and are skipped.
 *
 * @module
 */

import type { AlertDraft, NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { Detector, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `console_login_no_mfa`. */
export interface Options {
  /** Severity of the alert (root logins are always raised one level, to at least high). */
  severity: Severity;
  /** Users (exact names) allowed to log in without MFA. */
  ignoredUsers: string[];
}

/** Defaults of `console_login_no_mfa`. */
export const defaults = { severity: "medium", ignoredUsers: [] } satisfies Options;

/** Creates a `console_login_no_mfa` detector. */
export function createConsoleLoginNoMfa(
  options: Partial<Options>,
  init: DetectorContextInit,
): Detector {
  const opts = { ...defaults, ...options };
  const ignored = new Set(opts.ignoredUsers);
  return {
    name: init.name,
    type: "console_login_no_mfa",
    match(event: NormalizedEvent): AlertDraft[] | undefined {
      if (event.event_name !== "ConsoleLogin" || event.outcome !== "success") return undefined;
      if (event.mfa_used?.toLowerCase() !== "no" || ignored.has(event.username)) return undefined;
      if (event.raw.additionalEventData && isFederated(event)) return undefined;
      const root = event.user_type === "Root";
      return [{
        severity: root ? "critical" : opts.severity,
        title: `Console login without MFA by ${root ? "the root user" : event.username}`,
        details: { user_type: event.user_type, user_agent: event.agent, country: event.country },
      }];
    },
  };
}

function isFederated(event: NormalizedEvent): boolean {
  const extra = event.raw.additionalEventData as Record<string, unknown> | undefined;
  return typeof extra?.SamlProviderArn === "string" || event.user_type === "IdentityCenterUser";
}

/** The `console_login_no_mfa` plugin. */
export const consoleLoginNoMfaDetector: DetectorPlugin = {
  description: "Successful console login without MFA",
  check(check: OptionsChecker) {
    check.string("severity", { oneOf: SEVERITIES });
    check.strings("ignoredUsers");
  },
  create: (options: RawOptions, init) => createConsoleLoginNoMfa(options as Partial<Options>, init),
};
