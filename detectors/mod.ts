/**
 * Detectors: normalized event + own state → zero or more alerts. The contract and the registry.
 *
 * A detector has a stateless part, `match()`, a pure function of one event that may run in a
 * decode worker, and/or a stateful part, `detect()`, that runs on the main thread in event order
 * with its own KV state. Stateless rules and stateful profiles share this one contract.
 *
 * @module
 */

import type { DetectorState } from "../core/state.ts";
import type { Alert, AlertDraft, NormalizedEvent } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { GeoCache } from "../mapping/geo.ts";
import { consoleLoginNoMfaDetector } from "./console_login_no_mfa.ts";
import { rootActivityDetector } from "./root_activity.ts";
import { rulesDetector } from "./rules.ts";
import { consoleLoginFailuresDetector } from "./login_failures.ts";
import { accessDeniedBurstDetector } from "./access_denied_burst.ts";
import { anonymousIpDetector } from "./anonymous_ip.ts";
import { atypicalCountryDetector } from "./atypical_country.ts";
import { impossibleTravelDetector } from "./impossible_travel.ts";
import { newCountryDetector } from "./new_country.ts";
import { newDeviceDetector } from "./new_device.ts";
import { userRiskDetector } from "./user_risk.ts";

/** What a stateful detector gets with each event. */
export interface DetectorContext {
  /** This detector's state (namespaced; committed atomically with the chunk's alerts). */
  readonly state: DetectorState;
  /** Raises an alert about `event` (fields left out of the draft come from the event). */
  alert(draft: AlertDraft, event: NormalizedEvent): void;
  /**
   * Records an alert that a filter stopped: it is not delivered, it is counted in the summary
   * and kept in state with the filter's name.
   */
  suppress(draft: AlertDraft, event: NormalizedEvent, filter: string): void;
  /** GeoIP (cached per IP), for detectors that need locations of other IPs. */
  readonly geo: GeoCache;
}

/** A detector instance, created from its config block. */
export interface Detector {
  /** Instance name (the key under `detectors`). */
  readonly name: string;
  /** Plugin type. */
  readonly type: string;
  /** Stateless check of one event; may run in a decode worker, so it must not use state. */
  match?(event: NormalizedEvent): AlertDraft[] | undefined;
  /** Stateful check, in event order, on the main thread. Reads every event field but `raw`. */
  detect?(event: NormalizedEvent, context: DetectorContext): void | Promise<void>;
  /**
   * The state keys `detect` will read for `event`, if it knows them cheaply: the pipeline reads
   * the keys of a whole batch of events in a few parallel KV calls before running `detect`, so
   * the first event of each user or access key does not wait for its own KV round trip.
   */
  prefetch?(event: NormalizedEvent): Deno.KvKey | undefined;
  /** Sees every alert raised by the other detectors (after filters), e.g. to score user risk. */
  onAlert?(alert: Alert, context: DetectorContext): void | Promise<void>;
  /** Frees timers and watchers. */
  close?(): void | Promise<void>;
}

/** What a detector factory receives besides its options. */
export interface DetectorContextInit {
  /** Instance name. */
  name: string;
  /** Folder that relative paths in the config are resolved against. */
  baseDir: string;
}

/** A detector plugin. */
export interface DetectorPlugin {
  /** One line for docs and `--help`. */
  description: string;
  /** Reports every problem of the raw options (unknown keys included) on the checker. */
  check(check: OptionsChecker): void;
  /** Creates an instance from checked options. */
  create(options: RawOptions, init: DetectorContextInit): Detector | Promise<Detector>;
  /** Whether this detector runs when the config has no `detectors` block (default true). */
  builtin?: boolean;
}

/** The detector registry: type name → plugin. */
export const detectors: Record<string, DetectorPlugin> = {
  root_activity: rootActivityDetector,
  console_login_no_mfa: consoleLoginNoMfaDetector,
  rules: rulesDetector,
  console_login_failures: consoleLoginFailuresDetector,
  access_denied_burst: accessDeniedBurstDetector,
  impossible_travel: impossibleTravelDetector,
  new_country: newCountryDetector,
  atypical_country: atypicalCountryDetector,
  new_device: newDeviceDetector,
  anonymous_ip: anonymousIpDetector,
  user_risk: userRiskDetector,
};
