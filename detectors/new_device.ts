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

import type { NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import {
  checkLoginOptions,
  deviceFingerprint,
  type FirstSeenProfile,
  iso,
  loginDefaults,
  type LoginOptions,
  LoginPolicy,
  observeFirstSeen,
  type Seen,
  subjectOf,
} from "./_login.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `new_device` (plus the shared login options). */
export interface Options extends LoginOptions {
  /** Severity (VIP users: one level higher). */
  severity: Severity;
}

/** Defaults of `new_device`. */
export const defaults = { ...loginDefaults, severity: "low" } satisfies Options;

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
  const opts = { ...defaults, ...options };
  const policy = new LoginPolicy(opts, init.name);
  /** A successful (`login`) or failed login. */
  async function handle(
    event: NormalizedEvent,
    context: DetectorContext,
    login: boolean,
  ): Promise<void> {
    const { account, user } = subjectOf(event);
    const key = ["user", account, user];
    if (!login) {
      const profile = await context.state.get<FirstSeenProfile>(key) ?? { seen: {} };
      policy.noteFailure(profile, event);
      context.state.set(key, profile, { expireIn: policy.expireIn });
      return;
    }
    if (!event.agent) return;
    const fingerprint = deviceFingerprint(event.agent);
    const profile = await context.state.get<FirstSeenProfile>(key) ?? { seen: {} };
    const seen: Seen = { t: event.time, id: event.event_id };
    if (event.ip) seen.ip = event.ip;
    if (event.country) seen.c = event.country;
    const filter = policy.loginFilter(event.ip, event.agent);
    if (filter) seen.f = filter;
    const { changed, raise } = observeFirstSeen(profile, fingerprint, seen, policy.maxLogins);
    if (!changed) return;
    context.state.set(key, profile, { expireIn: policy.expireIn });
    for (const [device, first] of raise) {
      const draft = {
        severity: policy.severity(opts.severity, user),
        title: `Login from a new device for ${user}: ${device}`,
        time: iso(first.t),
        ip: first.ip,
        user,
        account_id: account,
        key: `${user}|${device}`,
        event_ids: [],
        details: {
          device,
          user_agent: device === fingerprint ? event.agent : undefined,
          country: first.c,
          event_id: first.id,
          known_devices: Object.keys(profile.seen).filter((d) => d !== device).sort(),
          failed_logins: profile.failed,
        },
      };
      const stop = policy.userFilter(user) ?? first.f ??
        (policy.isAllowedCountry(first.c) ? "allowedCountries" : undefined) ??
        policy.learning(first.t, profile.first?.[0]);
      if (stop) context.suppress(draft, event, stop);
      else context.alert(draft, event);
    }
  }

  return {
    name: init.name,
    type: "new_device",
    detect(event: NormalizedEvent, context: DetectorContext): Promise<void> | undefined {
      const login = policy.isLogin(event);
      if (!login && !policy.isFailedLogin(event)) return undefined;
      return handle(event, context, login);
    },
  };
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
