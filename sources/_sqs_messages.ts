/**
 * The message shapes an SQS queue carries for trailwatch, recognized from the body alone (pure:
 * no I/O). Every shape may also arrive wrapped in an SNS notification (`Type: "Notification"`,
 * `Message` a JSON string), or unwrapped by an SNS subscription with raw message delivery.
 *
 * 1. S3 event notification: `{"Records": [{"eventSource": "aws:s3", "eventName":
 *    "ObjectCreated:Put", "s3": {"bucket": {"name"}, "object": {"key"}}}]}`. Keys are
 *    URL-encoded with `+` for spaces; only `ObjectCreated:*` events name objects to read, and the
 *    `s3:TestEvent` S3 sends when a notification is configured is acknowledged.
 * 2. CloudTrail's own SNS notification: `{"s3Bucket": "…", "s3ObjectKey": ["…", …]}` (keys are
 *    not encoded).
 * 3. EventBridge events: `detail-type` "AWS API Call via CloudTrail", "AWS Console Sign In via
 *    CloudTrail", … carry the CloudTrail record in `detail`; S3's own EventBridge "Object Created"
 *    event names an object (its key is not encoded).
 * 4. Raw CloudTrail JSON: one record, `{"Records": [...]}` or an array of records. CloudTrail
 *    records are told apart from S3 event records by `eventSource: "aws:s3"` and the `s3` key.
 *
 * CloudTrail digest files are never named as objects to read.
 *
 * @module
 */

import { isDigestKey } from "./s3.ts";

/** An S3 object named by a message. */
export interface S3Ref {
  /** Bucket name. */
  bucket: string;
  /** Object key, decoded. */
  key: string;
  /** Size in bytes, when the notification says. */
  size?: number;
}

/** Which producer a message came from. */
export type MessageShape =
  | "s3-notification"
  | "cloudtrail-notification"
  | "eventbridge-cloudtrail"
  | "eventbridge-s3"
  | "cloudtrail-records";

/** What a message body means. */
export type ParsedMessage =
  | { kind: "objects"; shape: MessageShape; sns: boolean; objects: S3Ref[] }
  | {
    kind: "records";
    shape: MessageShape;
    sns: boolean;
    records: unknown[];
    /** The records are CloudTrail Insights events. */
    insight?: boolean;
  }
  | { kind: "test"; sns: boolean }
  | { kind: "ignored"; sns: boolean; reason: string }
  | { kind: "unknown"; reason: string };

/** SNS envelopes nested deeper than this are not unwrapped. */
const MAX_SNS_DEPTH = 2;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Decodes an S3 event notification key: `+` is a space, `%XX` an escaped byte (UTF-8).
 * Returns undefined for a malformed escape.
 *
 * @example Decoding a key with spaces and non-ASCII characters
 * ```ts
 * import { decodeS3EventKey } from "./_sqs_messages.ts";
 * console.log(decodeS3EventKey("logs/caf%C3%A9+2026.json.gz")); // "logs/café 2026.json.gz"
 * ```
 */
export function decodeS3EventKey(key: string): string | undefined {
  try {
    return decodeURIComponent(key.replace(/\+/g, " "));
  } catch {
    return undefined;
  }
}

/** Whether `value` is a record of an S3 event notification. */
function isS3EventRecord(value: unknown): boolean {
  return isObject(value) && (value.eventSource === "aws:s3" || isObject(value.s3));
}

/** Whether `value` looks like a CloudTrail record (the pipeline checks the rest). */
export function isCloudTrailRecord(value: unknown): value is Record<string, unknown> {
  return isObject(value) && typeof value.eventName === "string" &&
    typeof value.eventSource === "string" && value.eventSource !== "aws:s3" &&
    (typeof value.eventID === "string" || typeof value.eventTime === "string");
}

function keysOf(value: Record<string, unknown>): string {
  const keys = Object.keys(value).slice(0, 8).map((k) => JSON.stringify(k.slice(0, 40)));
  return keys.length ? keys.join(", ") + (Object.keys(value).length > 8 ? ", …" : "") : "none";
}

/** Drops digest files and repeated objects; `ignored` when nothing is left. */
function objectsOf(
  refs: S3Ref[],
  shape: MessageShape,
  sns: boolean,
): ParsedMessage {
  const seen = new Set<string>();
  const objects: S3Ref[] = [];
  let digests = 0;
  for (const ref of refs) {
    if (isDigestKey(ref.key)) {
      digests++;
      continue;
    }
    const id = `${ref.bucket}/${ref.key}`;
    if (seen.has(id)) continue;
    seen.add(id);
    objects.push(ref);
  }
  if (objects.length === 0) {
    return {
      kind: "ignored",
      sns,
      reason: digests ? "it names only CloudTrail digest files" : "it names no object",
    };
  }
  return { kind: "objects", shape, sns, objects };
}

function s3Notification(records: unknown[], sns: boolean): ParsedMessage {
  const refs: S3Ref[] = [];
  const other = new Set<string>();
  for (const [i, record] of records.entries()) {
    const r = record as Record<string, unknown>;
    const name = typeof r.eventName === "string" ? r.eventName : "";
    if (!name.startsWith("ObjectCreated:")) {
      other.add(name || "(no eventName)");
      continue;
    }
    const s3 = isObject(r.s3) ? r.s3 : {};
    const bucket = isObject(s3.bucket) ? s3.bucket.name : undefined;
    const object = isObject(s3.object) ? s3.object : {};
    if (typeof bucket !== "string" || !bucket || typeof object.key !== "string" || !object.key) {
      return {
        kind: "unknown",
        reason: `S3 event record ${i} has no s3.bucket.name or s3.object.key`,
      };
    }
    const key = decodeS3EventKey(object.key);
    if (key === undefined) {
      return {
        kind: "unknown",
        reason: `S3 event record ${i} has a key that is not valid URL encoding`,
      };
    }
    const ref: S3Ref = { bucket, key };
    if (typeof object.size === "number" && Number.isSafeInteger(object.size) && object.size >= 0) {
      ref.size = object.size;
    }
    refs.push(ref);
  }
  if (refs.length === 0) {
    return {
      kind: "ignored",
      sns,
      reason: `S3 event ${[...other].slice(0, 3).join(", ")} does not create an object`,
    };
  }
  return objectsOf(refs, "s3-notification", sns);
}

function cloudTrailNotification(value: Record<string, unknown>, sns: boolean): ParsedMessage {
  const bucket = value.s3Bucket;
  const keys = typeof value.s3ObjectKey === "string" ? [value.s3ObjectKey] : value.s3ObjectKey;
  if (typeof bucket !== "string" || !bucket) {
    return { kind: "unknown", reason: "CloudTrail notification without an s3Bucket name" };
  }
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string" && k)) {
    return {
      kind: "unknown",
      reason: "CloudTrail notification whose s3ObjectKey is not a list of keys",
    };
  }
  return objectsOf(
    keys.map((key) => ({ bucket, key: key as string })),
    "cloudtrail-notification",
    sns,
  );
}

function eventBridge(value: Record<string, unknown>, sns: boolean): ParsedMessage {
  const type = value["detail-type"] as string;
  const detail = value.detail;
  if (/ via CloudTrail$/.test(type)) {
    if (!isObject(detail)) {
      return { kind: "unknown", reason: `EventBridge "${type}" event without a detail object` };
    }
    const record: Record<string, unknown> = { ...detail };
    // The envelope says which account and region the event belongs to, should the detail not.
    if (record.recipientAccountId === undefined && typeof value.account === "string") {
      record.recipientAccountId = value.account;
    }
    if (record.awsRegion === undefined && typeof value.region === "string") {
      record.awsRegion = value.region;
    }
    return {
      kind: "records",
      shape: "eventbridge-cloudtrail",
      sns,
      records: [record],
      insight: type === "AWS Insight via CloudTrail" || undefined,
    };
  }
  if (value.source === "aws.s3" && type === "Object Created") {
    const bucket = isObject(detail) && isObject(detail.bucket) ? detail.bucket.name : undefined;
    const object = isObject(detail) && isObject(detail.object) ? detail.object : {};
    if (typeof bucket !== "string" || !bucket || typeof object.key !== "string" || !object.key) {
      return {
        kind: "unknown",
        reason:
          `EventBridge "Object Created" event without detail.bucket.name or detail.object.key`,
      };
    }
    const ref: S3Ref = { bucket, key: object.key };
    if (typeof object.size === "number" && Number.isSafeInteger(object.size) && object.size >= 0) {
      ref.size = object.size;
    }
    return objectsOf([ref], "eventbridge-s3", sns);
  }
  return {
    kind: "ignored",
    sns,
    reason: `EventBridge event "${type.slice(0, 80)}" from ${
      String(value.source).slice(0, 40)
    } is not a CloudTrail event`,
  };
}

function recordList(records: unknown[], sns: boolean): ParsedMessage {
  if (records.length === 0) return { kind: "ignored", sns, reason: "it holds no records" };
  const s3 = records.filter(isS3EventRecord).length;
  if (s3 === records.length) return s3Notification(records, sns);
  if (s3 > 0) {
    return { kind: "unknown", reason: "Records mixes S3 event records with other records" };
  }
  if (!records.some(isCloudTrailRecord)) {
    return {
      kind: "unknown",
      reason: "Records holds neither S3 event records nor CloudTrail records",
    };
  }
  // Records that are not CloudTrail records are reported by the pipeline, one by one.
  return { kind: "records", shape: "cloudtrail-records", sns, records };
}

function classify(value: unknown, sns: boolean, depth: number): ParsedMessage {
  if (Array.isArray(value)) return recordList(value, sns);
  if (!isObject(value)) return { kind: "unknown", reason: "the body is JSON but not an object" };
  if (value.Type === "Notification" && typeof value.Message === "string") {
    if (depth >= MAX_SNS_DEPTH) {
      return { kind: "unknown", reason: "SNS notifications nested too deep" };
    }
    let inner: unknown;
    try {
      inner = JSON.parse(value.Message);
    } catch {
      return { kind: "unknown", reason: "the SNS notification's Message is not JSON" };
    }
    return classify(inner, true, depth + 1);
  }
  if (value.Type === "SubscriptionConfirmation" || value.Type === "UnsubscribeConfirmation") {
    const topic = typeof value.TopicArn === "string" ? value.TopicArn : "an SNS topic";
    return {
      kind: "ignored",
      sns: true,
      reason: value.Type === "SubscriptionConfirmation"
        ? `SNS subscription confirmation for ${topic}: confirm the subscription with its ` +
          `SubscribeURL (${typeof value.SubscribeURL === "string" ? value.SubscribeURL : "?"})`
        : `SNS unsubscribe confirmation for ${topic}`,
    };
  }
  if (value.Event === "s3:TestEvent") return { kind: "test", sns };
  if ("s3Bucket" in value || "s3ObjectKey" in value) return cloudTrailNotification(value, sns);
  if (typeof value["detail-type"] === "string" && "detail" in value) {
    return eventBridge(value, sns);
  }
  if (Array.isArray(value.Records)) return recordList(value.Records, sns);
  if (isCloudTrailRecord(value)) {
    return { kind: "records", shape: "cloudtrail-records", sns, records: [value] };
  }
  return {
    kind: "unknown",
    reason: `not a known notification shape (a JSON object with keys ${keysOf(value)})`,
  };
}

/**
 * What an SQS message body means: S3 objects to read, CloudTrail records it carries, an S3 test
 * event, something to acknowledge and ignore, or an unknown shape (left in the queue).
 *
 * @example Reading a CloudTrail SNS notification delivered to SQS
 * ```ts
 * import { parseMessage } from "./_sqs_messages.ts";
 * const body = JSON.stringify({
 *   Type: "Notification",
 *   TopicArn: "arn:aws:sns:eu-west-1:111122223333:cloudtrail",
 *   Message: JSON.stringify({
 *     s3Bucket: "org-trail",
 *     s3ObjectKey: ["AWSLogs/111122223333/CloudTrail/eu-west-1/2026/01/02/f.json.gz"],
 *   }),
 * });
 * console.log(parseMessage(body));
 * // { kind: "objects", shape: "cloudtrail-notification", sns: true, objects: [{ bucket: … }] }
 * ```
 */
export function parseMessage(body: string): ParsedMessage {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    return { kind: "unknown", reason: "the body is not JSON" };
  }
  return classify(value, false, 0);
}
