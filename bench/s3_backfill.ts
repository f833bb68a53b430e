/**
 * End-to-end throughput of an S3 backfill: starts fauxqs on 127.0.0.1, uploads an organization
 * trail of 2,000 CloudTrail files (2 accounts × 5 regions × 2 days × 100 files, 50 records each),
 * runs one `ingest --once` pass of the `s3` source through the real pipeline (a `:memory:` state,
 * the built-in detectors, no geo lookups, no sinks), and prints objects/s and events/s.
 *
 * Run: `deno run -A bench/s3_backfill.ts [--objects 2000] [--records 50] [--concurrency 8]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { startFauxqs } from "fauxqs";
import { resolveConfig } from "../core/config.ts";
import { setLogLevel } from "../core/log.ts";
import { Runtime } from "../core/pipeline.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    objects: { type: "string", default: "2000" },
    records: { type: "string", default: "50" },
    concurrency: { type: "string", default: "8" },
  },
});
const OBJECTS = Number(values.objects);
const RECORDS = Number(values.records);
const CONCURRENCY = Number(values.concurrency);
const ACCOUNTS = ["111122223333", "444455556666"];
const REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-south-1"];
const DAYS = 2;
const ORG = "o-bench12345";
const BUCKET = "bench-org-trail";
const CREDENTIALS = { accessKeyId: "AKIABENCH00000000001", secretAccessKey: "bench-secret-0001" };

const pad = (n: number, w = 2) => String(n).padStart(w, "0");
const stamp = (t: Date) =>
  `${t.getUTCFullYear()}${pad(t.getUTCMonth() + 1)}${pad(t.getUTCDate())}T` +
  `${pad(t.getUTCHours())}${pad(t.getUTCMinutes())}Z`;

/** One file of `RECORDS` ordinary API calls. */
function file(account: string, region: string, time: Date, n: number): Uint8Array {
  const records = Array.from({ length: RECORDS }, (_, i) => ({
    eventVersion: "1.10",
    userIdentity: {
      type: "IAMUser",
      principalId: "AIDABENCH",
      arn: `arn:aws:iam::${account}:user/deploy-${i % 7}`,
      accountId: account,
      accessKeyId: `AKIABENCH${pad(i % 7, 11)}`,
      userName: `deploy-${i % 7}`,
    },
    eventTime: new Date(time.getTime() - i * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"),
    eventSource: "ec2.amazonaws.com",
    eventName: ["DescribeInstances", "DescribeVolumes", "GetObject", "ListBuckets"][i % 4],
    awsRegion: region,
    sourceIPAddress: `198.51.100.${i % 200}`,
    userAgent: "aws-cli/2.22.0 md/awscrt#0.23.4 ua/2.0 os/linux#6.8.0",
    requestParameters: { maxResults: 100, filterSet: { items: [{ name: "tag:env" }] } },
    responseElements: null,
    requestID: crypto.randomUUID(),
    eventID: `${account}-${region}-${n}-${i}-${crypto.randomUUID()}`,
    readOnly: true,
    eventType: "AwsApiCall",
    managementEvent: true,
    recipientAccountId: account,
    eventCategory: "Management",
  }));
  return new Uint8Array(gzipSync(JSON.stringify({ Records: records })));
}

const server = await startFauxqs({ port: 0, logger: false, host: "127.0.0.1" });
const endpoint = server.address.replace("localhost", "127.0.0.1");
server.createBucket(BUCKET);
const client = new S3Client({
  region: "us-east-1",
  endpoint,
  forcePathStyle: true,
  credentials: { ...CREDENTIALS },
});

const perStreamDay = Math.ceil(OBJECTS / (ACCOUNTS.length * REGIONS.length * DAYS));
const uploads: { key: string; body: Uint8Array }[] = [];
const start = Date.UTC(2026, 10, 1);
let n = 0;
outer: for (const account of ACCOUNTS) {
  for (const region of REGIONS) {
    for (let d = 0; d < DAYS; d++) {
      for (let f = 0; f < perStreamDay; f++) {
        if (uploads.length >= OBJECTS) break outer;
        const time = new Date(start + d * 86_400_000 + f * 5 * 60_000);
        const day = `${time.getUTCFullYear()}/${pad(time.getUTCMonth() + 1)}/${
          pad(time.getUTCDate())
        }`;
        const key = `AWSLogs/${ORG}/${account}/CloudTrail/${region}/${day}/` +
          `${account}_CloudTrail_${region}_${stamp(time)}_${
            (n++).toString(16).padStart(16, "0")
          }.json.gz`;
        uploads.push({ key, body: file(account, region, time, n) });
      }
    }
  }
}
const bytes = uploads.reduce((sum, u) => sum + u.body.length, 0);
const uploadStarted = performance.now();
let next = 0;
await Promise.all(Array.from({ length: 16 }, async () => {
  while (next < uploads.length) {
    const u = uploads[next++];
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: u.key, Body: u.body }));
  }
}));
const uploadSeconds = (performance.now() - uploadStarted) / 1000;
client.destroy();

setLogLevel("warn");
const config = resolveConfig({
  sources: {
    trail: {
      type: "s3",
      bucket: BUCKET,
      region: "us-east-1",
      endpoint,
      forcePathStyle: true,
      credentials: { ...CREDENTIALS },
      concurrency: CONCURRENCY,
    },
  },
  sinks: {},
  geo: { provider: "none" },
}, Deno.cwd());
const runtime = await Runtime.create(config, { statePath: ":memory:" });
const started = performance.now();
const summary = await runtime.runOnce();
const seconds = (performance.now() - started) / 1000;
await runtime.close();
await server.stop();

const result = {
  objects: summary.objects_read,
  objects_failed: summary.objects_failed,
  events: summary.events,
  compressed_mb: +(bytes / 1_048_576).toFixed(1),
  concurrency: CONCURRENCY,
  seconds: +seconds.toFixed(2),
  objects_per_s: Math.round(summary.objects_read / seconds),
  events_per_s: Math.round(summary.events / seconds),
  upload_seconds: +uploadSeconds.toFixed(2),
};
console.log(
  `s3 backfill: ${result.objects} objects (${result.compressed_mb} MB gzipped), ` +
    `${result.events} events in ${result.seconds} s → ${result.objects_per_s} objects/s, ` +
    `${result.events_per_s} events/s (concurrency ${CONCURRENCY}; fauxqs on loopback)`,
);
console.log(JSON.stringify(result));
if (summary.objects_read !== uploads.length || summary.failures.length) {
  console.error("backfill incomplete:", JSON.stringify(summary.failures.slice(0, 5)));
  Deno.exit(1);
}
