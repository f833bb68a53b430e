/**
 * CloudTrail key layout (private helpers of the `s3` source).
 *
 * CloudTrail writes `[prefix/]AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/
 * <account>_CloudTrail_<region>_YYYYMMDDTHHmmZ_<unique>.json.gz`, digests under
 * `CloudTrail-Digest/` and Insights events under `CloudTrail-Insight/`. Within one
 * account/region folder ("stream") key order is time order, which is what lets the source list a
 * stream from its checkpoint with `StartAfter`.
 *
 * @module
 */

/** A 12-digit AWS account folder. */
export const ACCOUNT_DIR: RegExp = /^\d{12}$/;
/** An AWS Organizations folder of an organization trail. */
export const ORG_DIR: RegExp = /^o-[a-z0-9]{10,32}$/;
/** The folders of an account that hold log files (digests are skipped). */
export const LOG_KINDS = ["CloudTrail", "CloudTrail-Insight"] as const;
/** A log folder kind. */
export type LogKind = typeof LOG_KINDS[number];

/** Whether a key is a CloudTrail digest file (never read: it holds hashes, not events). */
export function isDigestKey(key: string): boolean {
  return /(^|\/)CloudTrail-Digest\//.test(key) || /_CloudTrail-Digest_/.test(key);
}

/** Whether a key holds CloudTrail Insights events. */
export function isInsightKey(key: string): boolean {
  return /(^|\/)CloudTrail-Insight\//.test(key) || /_CloudTrail-Insight_/.test(key);
}

const FILE_NAME = /^(.*?_)(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})Z_[^/]+$/;
const DAY_FILE = /^(\d{4})\/(\d{2})\/(\d{2})\/([^/]+)$/;

/** A log file name, split: the part before the timestamp, and the timestamp (epoch ms). */
export interface LogFileName {
  /** E.g. `111122223333_CloudTrail_us-east-1_`. */
  namePrefix: string;
  /** The file name's `YYYYMMDDTHHmmZ`, as epoch milliseconds. */
  time: number;
}

/** Parses a CloudTrail log file name; undefined if it does not have the CloudTrail form. */
export function parseLogFileName(name: string): LogFileName | undefined {
  const m = FILE_NAME.exec(name);
  if (!m) return undefined;
  const time = Date.UTC(+m[2], +m[3] - 1, +m[4], +m[5], +m[6]);
  return Number.isFinite(time) ? { namePrefix: m[1], time } : undefined;
}

/**
 * Parses a key relative to its stream folder (`YYYY/MM/DD/<file>`); undefined for anything
 * else (folder markers, stray files).
 */
export function parseStreamKey(rel: string): LogFileName | undefined {
  const m = DAY_FILE.exec(rel);
  if (!m) return undefined;
  return parseLogFileName(m[4]);
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** The day folder of a time: `YYYY/MM/DD/`. */
export function dayFolder(time: number): string {
  const d = new Date(time);
  return `${d.getUTCFullYear()}/${pad(d.getUTCMonth() + 1)}/${pad(d.getUTCDate())}/`;
}

/** The file-name timestamp of a time: `YYYYMMDDTHHmmZ`. */
export function fileStamp(time: number): string {
  const d = new Date(time);
  return `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}T` +
    `${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}Z`;
}

/** Rounds a time down to its minute (file names have minute precision). */
export function floorMinute(time: number): number {
  return Math.floor(time / 60_000) * 60_000;
}

/**
 * The stream-relative key every file stamped at or after `time` sorts after: the day folder plus
 * the file name up to the timestamp, e.g. `2026/11/18/111122223333_CloudTrail_us-east-1_
 * 20261118T0600Z`. Without a name prefix, the start of the day folder.
 */
export function startKeyFor(time: number, namePrefix?: string): string {
  const t = floorMinute(time);
  return namePrefix === undefined ? dayFolder(t) : `${dayFolder(t)}${namePrefix}${fileStamp(t)}`;
}

/** Where CloudTrail's `AWSLogs/` folder is for a configured prefix, and what must match. */
export interface LayoutRoot {
  /** The `…AWSLogs/` folder to discover accounts in. */
  root: string;
  /** Streams (and keys) must start with this, or contain it (when it is deeper than a stream). */
  within: string;
}

/**
 * The `AWSLogs/` folder for a configured prefix: `cloudtrail` → `cloudtrail/AWSLogs/`;
 * `AWSLogs/o-abc/` → `AWSLogs/` restricted to `AWSLogs/o-abc/`.
 */
export function layoutRoot(prefix: string): LayoutRoot {
  const clean = prefix.replace(/^\/+/, "");
  const at = clean.indexOf("AWSLogs/");
  if (at === 0 || (at > 0 && clean[at - 1] === "/")) {
    return { root: clean.slice(0, at + "AWSLogs/".length), within: clean };
  }
  if (clean === "AWSLogs") return { root: "AWSLogs/", within: "AWSLogs/" };
  const base = clean === "" || clean.endsWith("/") ? clean : `${clean}/`;
  return { root: `${base}AWSLogs/`, within: `${base}AWSLogs/` };
}

/** An account/region folder of one kind: the unit a checkpoint is kept for. */
export interface Stream {
  /** The folder, e.g. `AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/`; also the stream id. */
  prefix: string;
  /** The prefix to list (deeper than `prefix` when the configured prefix points inside it). */
  listPrefix: string;
  /** The account id. */
  account: string;
  /** The region. */
  region: string;
  /** `CloudTrail` or `CloudTrail-Insight`. */
  kind: LogKind;
}

/** The last path segment of a folder prefix (`a/b/c/` → `c`). */
export function lastSegment(folder: string): string {
  const trimmed = folder.endsWith("/") ? folder.slice(0, -1) : folder;
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/** Whether a folder is compatible with the configured restriction (one contains the other). */
export function folderMatches(folder: string, within: string): boolean {
  return folder.startsWith(within) || within.startsWith(folder);
}
