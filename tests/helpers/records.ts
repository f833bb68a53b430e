/**
 * Test helpers: CloudTrail records and files for the spine's tests.
 *
 * @module
 */

import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { DEFERRED_PAYLOADS, hasDeferred, RecordSplitter } from "../../core/decode.ts";
import type { CloudTrailRecord } from "../../core/types.ts";

let counter = 0;

/** A CloudTrail record with sensible defaults; `overrides` replace top-level fields. */
export function ctRecord(overrides: Record<string, unknown> = {}): CloudTrailRecord {
  counter++;
  return {
    eventVersion: "1.10",
    userIdentity: {
      type: "IAMUser",
      principalId: "AIDAEXAMPLE",
      arn: "arn:aws:iam::111122223333:user/alice",
      accountId: "111122223333",
      accessKeyId: "AKIAEXAMPLE0000000001",
      userName: "alice",
    },
    eventTime: "2026-11-18T08:00:00Z",
    eventSource: "ec2.amazonaws.com",
    eventName: "DescribeInstances",
    awsRegion: "us-east-1",
    sourceIPAddress: "81.2.69.142",
    userAgent: "aws-cli/2.22.0",
    requestParameters: null,
    responseElements: null,
    eventID: `00000000-0000-4000-8000-${String(counter).padStart(12, "0")}`,
    eventType: "AwsApiCall",
    recipientAccountId: "111122223333",
    ...overrides,
  };
}

/** A root console login. */
export function rootLogin(overrides: Record<string, unknown> = {}): CloudTrailRecord {
  return ctRecord({
    userIdentity: {
      type: "Root",
      principalId: "111122223333",
      arn: "arn:aws:iam::111122223333:root",
      accountId: "111122223333",
    },
    eventSource: "signin.amazonaws.com",
    eventName: "ConsoleLogin",
    eventType: "AwsConsoleSignIn",
    responseElements: { ConsoleLogin: "Success" },
    additionalEventData: { MFAUsed: "Yes" },
    ...overrides,
  });
}

/** `{"Records": [...]}` as bytes, gzipped unless `gzip` is false. */
export function trailFile(records: unknown[], gzip = true): Uint8Array {
  const bytes = new TextEncoder().encode(JSON.stringify({ Records: records }));
  return gzip ? new Uint8Array(gzipSync(bytes)) : bytes;
}

/** `record` as the pipeline decodes it: its payloads ({@link DEFERRED_PAYLOADS}) not parsed yet. */
export function deferred(record: Record<string, unknown>): CloudTrailRecord {
  const splitter = new RecordSplitter("t.json", { defer: DEFERRED_PAYLOADS });
  const [item] = splitter.push(new TextEncoder().encode(JSON.stringify({ Records: [record] })));
  assert.ok(item.record && hasDeferred(item.record), "the payloads were deferred");
  return item.record;
}

/** A temporary directory, removed by the returned cleanup. */
export async function tempDir(): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await Deno.makeTempDir({ prefix: "trailwatch-test-" });
  return { path, cleanup: () => Deno.remove(path, { recursive: true }).catch(() => undefined) };
}

/** Writes `files` (relative path → bytes or text) under `dir`. */
export async function writeFiles(
  dir: string,
  files: Record<string, Uint8Array | string>,
): Promise<void> {
  for (const [rel, data] of Object.entries(files)) {
    const path = `${dir}/${rel}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    if (typeof data === "string") await Deno.writeTextFile(path, data);
    else await Deno.writeFile(path, data);
  }
}
