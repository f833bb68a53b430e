/**
 * CloudTrail record → normalized event (BuffaLogs' field names), plus the ECS projection.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { hasDeferred, materialize } from "../core/decode.ts";
import { RecordError } from "../core/errors.ts";
import type { CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { describe, isObject } from "../core/validate.ts";
import type { MappingFunction } from "./custom_mapping.ts";
import { isIp } from "./ip.ts";

/** Recent answers of {@link isIp}: a trail's events come from a few thousand addresses at most. */
const addressVerdicts = new Map<string, boolean>();

function isAddress(text: string): boolean {
  let verdict = addressVerdicts.get(text);
  if (verdict === undefined) {
    verdict = isIp(text);
    if (addressVerdicts.size >= 10_000) addressVerdicts.clear();
    addressVerdicts.set(text, verdict);
  }
  return verdict;
}

/** The last day {@link parseEventTime} parsed (`YYYYMMDD`), and its epoch ms (NaN: no such date). */
let lastDay = -1;
let lastDayMs = Number.NaN;

/** Two ASCII digits at `text[at]` as a number, or -1 when they are not digits. */
function twoDigits(text: string, at: number): number {
  const a = text.charCodeAt(at) - 48;
  const b = text.charCodeAt(at + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : -1;
}

/**
 * `Date.parse(text)`, faster for CloudTrail's own format (`2026-11-20T08:00:00Z`): the time of
 * day is read from its digits, and the day is parsed once for the run of events that share it.
 * Anything else (fractions, offsets, a field out of range) goes to `Date.parse`.
 */
export function parseEventTime(text: string): number {
  if (
    text.length !== 20 || text.charCodeAt(4) !== 0x2d || text.charCodeAt(7) !== 0x2d ||
    text.charCodeAt(10) !== 0x54 || text.charCodeAt(13) !== 0x3a ||
    text.charCodeAt(16) !== 0x3a || text.charCodeAt(19) !== 0x5a
  ) return Date.parse(text);
  const century = twoDigits(text, 0);
  const year = twoDigits(text, 2);
  const month = twoDigits(text, 5);
  const date = twoDigits(text, 8);
  const hours = twoDigits(text, 11);
  const minutes = twoDigits(text, 14);
  const seconds = twoDigits(text, 17);
  if (
    century < 0 || year < 0 || month < 0 || date < 0 || hours < 0 || hours > 23 ||
    minutes < 0 || minutes > 59 || seconds < 0 || seconds > 59
  ) return Date.parse(text);
  const day = ((century * 100 + year) * 100 + month) * 100 + date;
  if (day !== lastDay) {
    // Checks the date as Date.parse does (a 31 June is NaN).
    lastDayMs = Date.parse(`${text.slice(0, 10)}T00:00:00Z`);
    lastDay = day;
  }
  return lastDayMs + ((hours * 60 + minutes) * 60 + seconds) * 1000;
}

/** Options of {@link normalize}. */
export interface NormalizeOptions {
  /** A compiled `custom_mapping`, applied after the default mapping. */
  mapping?: MappingFunction;
  /** Marks every event as a CloudTrail Insights event (objects under `CloudTrail-Insight/`). */
  insight?: boolean;
}

function optionalString(record: CloudTrailRecord, field: string): string | undefined {
  const value = record[field];
  return typeof value === "string" && value !== "" ? value : undefined;
}

function lastArnPart(arn: unknown): string | undefined {
  if (typeof arn !== "string") return undefined;
  const slash = arn.lastIndexOf("/");
  return slash >= 0 && slash < arn.length - 1 ? arn.slice(slash + 1) : undefined;
}

function str(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

/**
 * The user as BuffaLogs names it, by identity type: IAMUser → userName; AssumedRole → role name
 * (session name kept apart); Root → `root`; AWSService → the service; others → what identifies
 * them (userName, principal, ARN).
 */
function identify(identity: Record<string, unknown>, event: NormalizedEvent): void {
  const type = str(identity.type);
  event.user_type = type;
  event.user_arn = str(identity.arn);
  event.access_key_id = str(identity.accessKeyId);
  event.invoked_by = str(identity.invokedBy);
  const context = isObject(identity.sessionContext) ? identity.sessionContext : undefined;
  const issuer = context && isObject(context.sessionIssuer) ? context.sessionIssuer : undefined;
  const principal = str(identity.principalId);
  switch (type) {
    case "Root":
      event.username = "root";
      return;
    case "IAMUser":
      event.username = str(identity.userName) ?? lastArnPart(identity.arn) ?? principal ??
        "unknown";
      return;
    case "AssumedRole":
      event.username = str(issuer?.userName) ?? roleFromAssumedArn(identity.arn) ?? principal ??
        "unknown";
      event.session_name = lastArnPart(identity.arn) ?? principal?.split(":")[1];
      return;
    case "FederatedUser":
      event.username = str(issuer?.userName) ?? principal?.split(":").pop() ?? "unknown";
      event.session_name = principal?.split(":").pop();
      return;
    case "AWSService":
      event.username = event.invoked_by ?? principal ?? "aws-service";
      return;
    case "AWSAccount":
      event.username = str(identity.accountId) ?? principal ?? "unknown";
      return;
    default:
      event.username = str(identity.userName) ?? str(issuer?.userName) ?? principal ??
        str(identity.arn) ??
        event.invoked_by ?? "unknown";
  }
}

function roleFromAssumedArn(arn: unknown): string | undefined {
  // arn:aws:sts::123456789012:assumed-role/RoleName/session
  if (typeof arn !== "string") return undefined;
  const parts = arn.split("/");
  return parts.length >= 3 ? parts[1] : undefined;
}

/** A stable id for a record that has no `eventID`. */
export function contentId(record: CloudTrailRecord): string {
  return "sha1:" + createHash("sha1").update(JSON.stringify(record)).digest("hex");
}

/**
 * Normalizes one record. Throws a {@link RecordError} naming the field when a required field is
 * missing or has the wrong type (`eventTime`, `eventName`, `eventID`, `userIdentity`,
 * `sourceIPAddress`).
 *
 * @example Normalizing a console login
 * ```ts
 * import { normalize } from "./normalize.ts";
 * const event = normalize({
 *   eventTime: "2026-11-20T08:00:00Z", eventName: "ConsoleLogin", eventSource: "signin.amazonaws.com",
 *   eventID: "e-1", sourceIPAddress: "203.0.113.9", userIdentity: { type: "IAMUser", userName: "alice" },
 *   responseElements: { ConsoleLogin: "Success" },
 * });
 * event.username; // "alice"
 * ```
 */
export function normalize(
  record: CloudTrailRecord,
  options: NormalizeOptions = {},
): NormalizedEvent {
  const eventTime = record.eventTime;
  if (eventTime === undefined) throw new RecordError("missing eventTime");
  if (typeof eventTime !== "string") {
    throw new RecordError(`eventTime: expected an ISO 8601 string, got ${describe(eventTime)}`);
  }
  const time = parseEventTime(eventTime);
  if (Number.isNaN(time)) {
    throw new RecordError(`eventTime: not a valid time: ${describe(eventTime)}`);
  }
  const eventName = record.eventName;
  if (eventName === undefined) throw new RecordError("missing eventName");
  if (typeof eventName !== "string" || eventName === "") {
    throw new RecordError(`eventName: expected a non-empty string, got ${describe(eventName)}`);
  }
  const eventId = record.eventID;
  if (eventId !== undefined && typeof eventId !== "string") {
    throw new RecordError(`eventID: expected a string, got ${describe(eventId)}`);
  }
  // Payloads deferred by the decoder are parsed when read here: by a console login's outcome, a
  // content id (no eventID) and a custom mapping.
  if (
    hasDeferred(record) && (eventName === "ConsoleLogin" || !eventId || options.mapping)
  ) materialize(record);
  const identity = record.userIdentity;
  if (identity !== undefined && !isObject(identity)) {
    throw new RecordError(`userIdentity: expected an object, got ${describe(identity)}`);
  }
  const source = record.sourceIPAddress;
  if (source !== undefined && typeof source !== "string") {
    throw new RecordError(`sourceIPAddress: expected a string, got ${describe(source)}`);
  }
  const errorCode = optionalString(record, "errorCode");
  const response = record.responseElements;
  const loginFailed = eventName === "ConsoleLogin" && isObject(response) &&
    response.ConsoleLogin === "Failure";
  const extra = record.additionalEventData;
  const eventType = optionalString(record, "eventType");

  const event: NormalizedEvent = {
    timestamp: eventTime,
    time,
    event_id: eventId || contentId(record),
    event_name: eventName,
    event_source: optionalString(record, "eventSource") ?? "",
    event_type: eventType,
    username: "unknown",
    user_type: undefined,
    session_name: undefined,
    user_arn: undefined,
    access_key_id: undefined,
    ip: undefined,
    source_host: undefined,
    invoked_by: undefined,
    region: optionalString(record, "awsRegion"),
    account_id: optionalString(record, "recipientAccountId"),
    agent: optionalString(record, "userAgent"),
    outcome: errorCode || loginFailed ? "failure" : "success",
    error_code: errorCode,
    mfa_used: isObject(extra) && typeof extra.MFAUsed === "string" ? extra.MFAUsed : undefined,
    insight: options.insight || eventType === "AwsCloudTrailInsight" || undefined,
    country: undefined,
    city: undefined,
    lat: undefined,
    lon: undefined,
    custom: undefined,
    raw: record,
  };
  if (identity) {
    identify(identity, event);
    event.account_id ??= str(identity.accountId);
  }
  if (source) {
    if (isAddress(source)) event.ip = source;
    else event.source_host = source;
  }
  options.mapping?.(record, event);
  return event;
}

/** The Elastic Common Schema view of an event. */
export interface EcsEvent {
  /** Event time. */
  "@timestamp": string;
  /** `event.*`: id, action (eventName), provider (eventSource), outcome. */
  event: {
    id: string;
    action: string;
    provider: string;
    outcome: "success" | "failure";
    kind: "event";
  };
  /** `source.*`: the IP (or the service address) and its location. */
  source?: { ip?: string; address?: string; geo?: Record<string, unknown> };
  /** `user.*`: name and ARN. */
  user: { name: string; id?: string };
  /** `user_agent.original`. */
  user_agent?: { original: string };
  /** `cloud.*`: account and region. */
  cloud: { provider: "aws"; account?: { id: string }; region?: string };
  /** `error.code` from errorCode. */
  error?: { code: string };
}

/**
 * The ECS projection of a normalized event (`event.action`, `event.provider`, `event.outcome`,
 * `source.ip`, `user.name`, `cloud.account.id`, `cloud.region`, `user_agent.original`, `event.id`).
 *
 * @example Projecting an event
 * ```ts
 * import { normalize, toEcs } from "./normalize.ts";
 * const ecs = toEcs(normalize({ eventTime: "2026-11-20T08:00:00Z", eventName: "ListBuckets" }));
 * ecs.event.action; // "ListBuckets"
 * ```
 */
export function toEcs(event: NormalizedEvent): EcsEvent {
  const ecs: EcsEvent = {
    "@timestamp": event.timestamp,
    event: {
      id: event.event_id,
      action: event.event_name,
      provider: event.event_source,
      outcome: event.outcome,
      kind: "event",
    },
    user: { name: event.username },
    cloud: { provider: "aws" },
  };
  if (event.user_arn) ecs.user.id = event.user_arn;
  if (event.ip || event.source_host) {
    ecs.source = event.ip ? { ip: event.ip } : { address: event.source_host };
    if (event.country) {
      ecs.source.geo = { country_iso_code: event.country, city_name: event.city };
      if (event.lat !== undefined) ecs.source.geo.location = { lat: event.lat, lon: event.lon };
    }
  }
  if (event.agent) ecs.user_agent = { original: event.agent };
  if (event.account_id) ecs.cloud.account = { id: event.account_id };
  if (event.region) ecs.cloud.region = event.region;
  if (event.error_code) ecs.error = { code: event.error_code };
  return ecs;
}
