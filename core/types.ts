/**
 * Types shared by every plugin kind: the raw CloudTrail record, the normalized event and the
 * alert. The per-kind contracts (Source, Detector, Sink) live in each kind's `mod.ts`.
 *
 * @module
 */

/** Alert severities, lowest first. */
export const SEVERITIES = ["info", "low", "medium", "high", "critical"] as const;

/** How serious an alert is. */
export type Severity = typeof SEVERITIES[number];

/** Rank of a severity (info = 0 … critical = 4), for comparisons. */
export function severityRank(severity: Severity): number {
  return SEVERITIES.indexOf(severity);
}

/** A CloudTrail record exactly as decoded from JSON. */
export type CloudTrailRecord = Record<string, unknown>;

/** How the call ended, from `errorCode` (and `responseElements.ConsoleLogin` for logins). */
export type Outcome = "success" | "failure";

/**
 * A CloudTrail record normalized to BuffaLogs' field names plus what the detectors need.
 * Field names follow BuffaLogs (`timestamp`, `ip`, `username`, `agent`, `country`, `lat`, `lon`).
 *
 * Stateful detectors may read every field except `raw`; stateless checks (`match`) may read `raw`.
 */
export interface NormalizedEvent {
  /** `eventTime` as written in the record (ISO 8601). */
  timestamp: string;
  /** `eventTime` in epoch milliseconds. */
  time: number;
  /** `eventID` (or a content hash when the record has none). */
  event_id: string;
  /** `eventName`, e.g. `ConsoleLogin`. */
  event_name: string;
  /** `eventSource`, e.g. `signin.amazonaws.com`. */
  event_source: string;
  /** `eventType`, e.g. `AwsApiCall`, `AwsConsoleSignIn`. */
  event_type?: string;
  /** The user as BuffaLogs names it: IAM user name, role name, `root`, or the service. */
  username: string;
  /** `userIdentity.type`: IAMUser, AssumedRole, Root, AWSService, … */
  user_type?: string;
  /** Session name for assumed roles. */
  session_name?: string;
  /** `userIdentity.arn`. */
  user_arn?: string;
  /** `userIdentity.accessKeyId` when the call was signed with an access key. */
  access_key_id?: string;
  /** Source IP, only when `sourceIPAddress` is an IP address (not "AWS Internal" or a service). */
  ip?: string;
  /** `sourceIPAddress` when it is not an IP (a service name such as `ec2.amazonaws.com`). */
  source_host?: string;
  /** `userIdentity.invokedBy`: the AWS service that made the call on the user's behalf. */
  invoked_by?: string;
  /** `awsRegion`. */
  region?: string;
  /** `recipientAccountId` (falls back to `userIdentity.accountId`). */
  account_id?: string;
  /** `userAgent`. */
  agent?: string;
  /** success, or failure when `errorCode` is set or a console login failed. */
  outcome: Outcome;
  /** `errorCode`. */
  error_code?: string;
  /** `additionalEventData.MFAUsed` for console logins ("Yes"/"No"). */
  mfa_used?: string;
  /** True for CloudTrail Insights events. */
  insight?: boolean;
  /** ISO country code from GeoIP, when the IP is public and known. */
  country?: string;
  /** City name from GeoIP. */
  city?: string;
  /** Latitude from GeoIP. */
  lat?: number;
  /** Longitude from GeoIP. */
  lon?: number;
  /** Fields added by `custom_mapping` that are not one of the names above. */
  custom?: Record<string, unknown>;
  /** The record as decoded. Not available to stateful detectors when decoding runs in workers. */
  raw: CloudTrailRecord;
}

/** The alert JSON every sink receives. `id` is deterministic: same detector + events ⇒ same id. */
export interface Alert {
  /** Deterministic id (hex), also the webhook `Idempotency-Key`. */
  id: string;
  /** Name of the detector instance that raised it. */
  detector: string;
  /** Severity. */
  severity: Severity;
  /** One-line human title. */
  title: string;
  /** Event time (ISO 8601) of the event that triggered the alert. */
  time: string;
  /** User the alert is about. */
  user?: string;
  /** AWS account id. */
  account_id?: string;
  /** AWS region. */
  region?: string;
  /** Source IP. */
  ip?: string;
  /** `eventID`s of the events behind the alert. */
  event_ids: string[];
  /** Detector-specific details. */
  details: Record<string, unknown>;
}

/**
 * What a detector hands to the pipeline; the pipeline fills in `id`, `detector` and anything
 * left out from the triggering event (`time`, `user`, `account_id`, `region`, `ip`, `event_ids`).
 */
export interface AlertDraft {
  /** Severity. */
  severity: Severity;
  /** One-line human title. */
  title: string;
  /** Detector-specific details. */
  details?: Record<string, unknown>;
  /** Overrides the triggering event's time. */
  time?: string;
  /** Overrides the triggering event's user. */
  user?: string;
  /** Overrides the triggering event's IP. */
  ip?: string;
  /** Overrides the triggering event's account id. */
  account_id?: string;
  /** Overrides the triggering event's region. */
  region?: string;
  /** Overrides `[event.event_id]` (e.g. both ends of an impossible travel). */
  event_ids?: string[];
  /** Extra input to the deterministic id when one event can raise several alerts. */
  key?: string;
  /**
   * The id comes from the detector, `key` and the account only, not from `event_ids`: for alerts
   * whose triggering events depend on the order in which events arrive (impossible travel), so
   * the id does not.
   */
  idFromKey?: boolean;
}
