/**
 * Test helpers: CloudTrail log files with known eventIDs, laid out as CloudTrail writes them to
 * S3 (`AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/<file>`).
 *
 * @module
 */

import { gzipSync } from "node:zlib";

/** A log file to upload: its key, its bytes, and the eventIDs of its records. */
export interface TrailFile {
  /** The S3 key. */
  key: string;
  /** The gzipped `{"Records": [...]}`. */
  body: Uint8Array;
  /** eventIDs of the records (empty for digest files). */
  eventIds: string[];
  /** Whether the file holds Insights events. */
  insight: boolean;
}

/** Where a file lies and what it holds. */
export interface TrailFileSpec {
  /** File-name time. */
  time: Date;
  /** Account id (12 digits). */
  account: string;
  /** Region. */
  region: string;
  /** Organization id of an organization trail (`o-…`). */
  org?: string;
  /** The trail's key prefix (before `AWSLogs/`). */
  prefix?: string;
  /** Folder kind. */
  kind?: "CloudTrail" | "CloudTrail-Insight" | "CloudTrail-Digest";
  /** Records in the file. */
  records?: number;
  /** A distinct tag, part of the eventIDs and the file's unique suffix. */
  tag: string;
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** `YYYYMMDDTHHmmZ`. */
export function stamp(time: Date): string {
  return `${time.getUTCFullYear()}${pad(time.getUTCMonth() + 1)}${pad(time.getUTCDate())}T` +
    `${pad(time.getUTCHours())}${pad(time.getUTCMinutes())}Z`;
}

/** A hex string derived from `text` (stable, 16 chars). */
function unique(text: string): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x12345678;
  for (let i = 0; i < text.length; i++) {
    h1 = Math.imul(h1 ^ text.charCodeAt(i), 16777619) >>> 0;
    h2 = Math.imul(h2 ^ text.charCodeAt(i), 2246822507) >>> 0;
  }
  return h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0");
}

/** The S3 key CloudTrail would give a file. */
export function trailKey(spec: TrailFileSpec): string {
  const kind = spec.kind ?? "CloudTrail";
  const t = spec.time;
  const base = spec.prefix ? (spec.prefix.endsWith("/") ? spec.prefix : `${spec.prefix}/`) : "";
  const org = spec.org ? `${spec.org}/` : "";
  const day = `${t.getUTCFullYear()}/${pad(t.getUTCMonth() + 1)}/${pad(t.getUTCDate())}`;
  return `${base}AWSLogs/${org}${spec.account}/${kind}/${spec.region}/${day}/` +
    `${spec.account}_${kind}_${spec.region}_${stamp(t)}_${unique(spec.tag)}.json.gz`;
}

/** A root-user API call (every record raises exactly one `root_activity` alert). */
export function rootRecord(
  eventId: string,
  time: Date,
  account: string,
  region: string,
): Record<string, unknown> {
  return {
    eventVersion: "1.10",
    userIdentity: {
      type: "Root",
      principalId: account,
      arn: `arn:aws:iam::${account}:root`,
      accountId: account,
    },
    eventTime: time.toISOString().replace(/\.\d{3}Z$/, "Z"),
    eventSource: "iam.amazonaws.com",
    eventName: "ListUsers",
    awsRegion: region,
    sourceIPAddress: "198.51.100.7",
    userAgent: "aws-cli/2.22.0",
    requestParameters: null,
    responseElements: null,
    eventID: eventId,
    eventType: "AwsApiCall",
    recipientAccountId: account,
  };
}

/** An Insights event. */
export function insightRecord(eventId: string, time: Date, account: string, region: string) {
  return {
    eventVersion: "1.08",
    eventTime: time.toISOString().replace(/\.\d{3}Z$/, "Z"),
    awsRegion: region,
    eventID: eventId,
    eventType: "AwsCloudTrailInsight",
    recipientAccountId: account,
    sharedEventID: `shared-${eventId}`,
    eventCategory: "Insight",
    eventName: "CreateAccessKey",
    eventSource: "iam.amazonaws.com",
    userIdentity: { type: "Root", principalId: account, accountId: account },
    sourceIPAddress: "AWS Internal",
    insightDetails: {
      state: "Start",
      eventSource: "iam.amazonaws.com",
      eventName: "CreateAccessKey",
      insightType: "ApiCallRateInsight",
    },
  };
}

/** gzipped `{"Records": [...]}`. */
export function gzipRecords(records: unknown[]): Uint8Array {
  return new Uint8Array(gzipSync(new TextEncoder().encode(JSON.stringify({ Records: records }))));
}

/** A log file; eventIDs are `<tag>-<n>`. Digest files hold a digest, no records. */
export function trailFile(spec: TrailFileSpec): TrailFile {
  const key = trailKey(spec);
  const kind = spec.kind ?? "CloudTrail";
  if (kind === "CloudTrail-Digest") {
    const digest = {
      awsAccountId: spec.account,
      digestStartTime: spec.time.toISOString(),
      logFiles: [],
      // A digest must never be read as events: give it a Records array that would be noticed.
      Records: [rootRecord(`digest-${spec.tag}`, spec.time, spec.account, spec.region)],
    };
    return {
      key,
      body: new Uint8Array(gzipSync(new TextEncoder().encode(JSON.stringify(digest)))),
      eventIds: [],
      insight: false,
    };
  }
  const eventIds: string[] = [];
  const records: unknown[] = [];
  for (let i = 0; i < (spec.records ?? 2); i++) {
    const id = `${spec.tag}-${i}`;
    eventIds.push(id);
    const time = new Date(spec.time.getTime() - 60_000 * (i + 1));
    records.push(
      kind === "CloudTrail-Insight"
        ? insightRecord(id, time, spec.account, spec.region)
        : rootRecord(id, time, spec.account, spec.region),
    );
  }
  return { key, body: gzipRecords(records), eventIds, insight: kind === "CloudTrail-Insight" };
}

/** What {@link orgTrail} lays out. */
export interface OrgTrailSpec {
  /** Organization id, e.g. `o-abcdefghij`; none for an account trail. */
  org?: string;
  /** Trail key prefix. */
  prefix?: string;
  /** Account ids. */
  accounts: string[];
  /** Regions. */
  regions: string[];
  /** First day (UTC midnight). */
  start: Date;
  /** Days. */
  days: number;
  /** Files per account/region/day, evenly spread over the day. */
  filesPerDay: number;
  /** Records per file. */
  records?: number;
  /** A digest file per account/region/day. */
  digests?: boolean;
}

/** Log files of an (organization) trail. */
export function orgTrail(spec: OrgTrailSpec): TrailFile[] {
  const files: TrailFile[] = [];
  const step = Math.floor(86_400_000 / spec.filesPerDay / 60_000) * 60_000 || 60_000;
  for (const account of spec.accounts) {
    for (const region of spec.regions) {
      for (let d = 0; d < spec.days; d++) {
        const day = spec.start.getTime() + d * 86_400_000;
        for (let f = 0; f < spec.filesPerDay; f++) {
          const time = new Date(day + 5 * 60_000 + f * step);
          files.push(trailFile({
            time,
            account,
            region,
            org: spec.org,
            prefix: spec.prefix,
            records: spec.records,
            tag: `${account}-${region}-${d}-${f}`,
          }));
        }
        if (spec.digests) {
          files.push(trailFile({
            time: new Date(day + 3_600_000),
            account,
            region,
            org: spec.org,
            prefix: spec.prefix,
            kind: "CloudTrail-Digest",
            tag: `digest-${account}-${region}-${d}`,
          }));
        }
      }
    }
  }
  return files;
}

/** UTC midnight `days` days before today. */
export function daysAgo(days: number): Date {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - days));
}
