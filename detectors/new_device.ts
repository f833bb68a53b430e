/**
 * `new_device`: a successful login from a device the user never logged in from (BuffaLogs' "New
 * Device"). The device is BuffaLogs' user-agent fingerprint `os-osmajor-device-browser` (no
 * browser version, so browser updates do not alert), parsed with ua-parser-js 1.x (MIT). The
 * user's first login never alerts. One alert per (user, fingerprint).
 *
 * Out-of-order delivery is handled as in `new_country`: per fingerprint the earliest login is
 * kept, and a login earlier than the user's first one turns the previous first device into a new
 * one.
 *
 * State: `["user", account, user]` → the first login, failed-login count and, per fingerprint, its first
 * login (at most `maxLogins` fingerprints), expiring after `idleExpiry` without logins.
 *
 * @module
 */

import type { Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import {
  checkLoginOptions,
  createFirstSeen,
  deviceFingerprint,
  type FirstSeenKind,
  loginDefaults,
  type LoginOptions,
  type Seen,
} from "./_login.ts";
import type { Detector, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `new_device` (plus the shared login options). */
export interface Options extends LoginOptions {
  /** Severity (VIP users: one level higher). */
  severity: Severity;
}

/** Defaults of `new_device`. */
export const defaults = { ...loginDefaults, severity: "low" } satisfies Options;

const kind: FirstSeenKind = {
  type: "new_device",
  severity: defaults.severity,
  valueOf: (event) => (event.agent ? deviceFingerprint(event.agent) : undefined),
  seenOf(event) {
    const seen: Seen = { t: event.time, id: event.event_id };
    if (event.ip) seen.ip = event.ip;
    if (event.country) seen.c = event.country;
    return seen;
  },
  title: (user, device) => `Login from a new device for ${user}: ${device}`,
  details: (device, first, others, event) => ({
    device,
    user_agent: event.agent && deviceFingerprint(event.agent) === device ? event.agent : undefined,
    country: first.c,
    known_devices: others,
  }),
  countryOf: (_device, first) => first.c,
};

/**
 * Creates a `new_device` detector.
 *
 * @example Phones never alert
 * ```ts
 * import { createNewDevice } from "./new_device.ts";
 * const detector = createNewDevice({ ignoreMobile: true }, { name: "new_device", baseDir: "." });
 * ```
 */
export function createNewDevice(options: Partial<Options>, init: DetectorContextInit): Detector {
  return createFirstSeen(kind, { ...defaults, ...options }, init);
}

/** The `new_device` plugin. */
export const newDeviceDetector: DetectorPlugin = {
  description: "Login from a device (OS, device, browser) the user never logged in from",
  check(check: OptionsChecker) {
    checkLoginOptions(check);
    check.string("severity", { oneOf: SEVERITIES });
  },
  create: (options: RawOptions, init) => createNewDevice(options as Partial<Options>, init),
};
