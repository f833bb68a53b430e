/**
 * Test helpers: an in-process S3/SQS emulator (fauxqs) on 127.0.0.1, S3 clients for it, and
 * uploads of CloudTrail files.
 *
 * @module
 */

import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startFauxqs } from "fauxqs";
import type { TrailFile } from "./cloudtrail.ts";

/** Test credentials (fauxqs does not check them). */
export const TEST_CREDENTIALS = {
  accessKeyId: "AKIATRAILWATCHTEST01",
  secretAccessKey: "trailwatch-test-secret-key-0000000000000",
};

/** A running fauxqs. */
export interface Fauxqs {
  /** `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** The port. */
  port: number;
  /** An S3 client for it (path style, test credentials). */
  client: S3Client;
  /** Creates a bucket (names must be valid S3 names). */
  createBucket(name: string): void;
  /** Uploads files, a few at a time. */
  put(bucket: string, files: readonly TrailFile[]): Promise<void>;
  /** Stops the server and the client. */
  stop(): Promise<void>;
  /** Stops it at the end of a `using` block. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** An S3 client for `endpoint` (path style, test credentials, no retries unless asked). */
export function s3ClientFor(endpoint: string, maxAttempts = 3): S3Client {
  return new S3Client({
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: { ...TEST_CREDENTIALS },
    maxAttempts,
  });
}

/** Uploads `files` to `bucket` with `client`, `concurrency` at a time. */
export async function putFiles(
  client: S3Client,
  bucket: string,
  files: readonly TrailFile[],
  concurrency = 16,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const file = files[next++];
      await client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: file.key,
          Body: file.body,
          ContentType: "application/json",
        }),
      );
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Starts fauxqs on 127.0.0.1 (a free port). */
export async function startS3(): Promise<Fauxqs> {
  const server = await startFauxqs({ port: 0, logger: false, host: "127.0.0.1" });
  const endpoint = server.address.replace("localhost", "127.0.0.1");
  const client = s3ClientFor(endpoint);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    client.destroy();
    await server.stop();
  };
  return {
    endpoint,
    port: server.port,
    client,
    createBucket: (name) => void server.createBucket(name),
    put: (bucket, files) => putFiles(client, bucket, files),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** The options of an `s3` source pointed at `endpoint`. */
export function s3SourceOptions(
  endpoint: string,
  bucket: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    type: "s3",
    bucket,
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    credentials: { ...TEST_CREDENTIALS },
    ...extra,
  };
}
