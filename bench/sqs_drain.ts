/**
 * End-to-end throughput of draining an SQS queue: starts fauxqs on 127.0.0.1, fills a queue with
 * 1,000 notifications, runs one `ingest --once` pass of the `sqs` source through the real pipeline
 * (a `:memory:` state, the built-in detectors, no geo lookups, no sinks), and prints messages/s
 * and events/s.
 *
 * - `--shape s3` (default): S3 event notifications, each naming one CloudTrail file of `--records`
 *   records (uploaded first), read through the S3 source's reader with `--workers` downloads.
 * - `--shape eventbridge`: EventBridge "AWS API Call via CloudTrail" events (one record each).
 *
 * The records are ordinary API calls, as in `s3_backfill.ts`; `--alerts` makes one in ten a root
 * call, so every tenth event also puts an alert in the outbox.
 *
 * The pass ends with one empty long poll (`waitTimeSeconds` 1 s); "drained" is the time until the
 * last message was deleted, "pass" includes that final poll.
 *
 * Run: `deno run -A bench/sqs_drain.ts [--messages 1000] [--records 20] [--workers 4]
 * [--shape s3|eventbridge] [--alerts]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { SendMessageBatchCommand, SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";
import { resolveConfig } from "../core/config.ts";
import { setLogLevel } from "../core/log.ts";
import { Runtime } from "../core/pipeline.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    messages: { type: "string", default: "1000" },
    records: { type: "string", default: "20" },
    workers: { type: "string", default: "4" },
    shape: { type: "string", default: "s3" },
    alerts: { type: "boolean", default: false },
  },
});
const MESSAGES = Number(values.messages);
const RECORDS = Number(values.records);
const WORKERS = Number(values.workers);
const SHAPE = values.shape === "eventbridge" ? "eventbridge" : "s3";
const ALERTS = values.alerts;
const ACCOUNT = "111122223333";
const BUCKET = "bench-trail";
const QUEUE = "bench-queue";
const CREDENTIALS = { accessKeyId: "AKIABENCH00000000001", secretAccessKey: "bench-secret-0001" };

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** An ordinary API call (with `--alerts`, one in ten by root: each raises an alert). */
function record(n: number, i: number, time: Date) {
  const root = ALERTS && i % 10 === 0;
  return {
    eventVersion: "1.10",
    userIdentity: root
      ? {
        type: "Root",
        principalId: ACCOUNT,
        arn: `arn:aws:iam::${ACCOUNT}:root`,
        accountId: ACCOUNT,
      }
      : {
        type: "IAMUser",
        principalId: "AIDABENCH",
        arn: `arn:aws:iam::${ACCOUNT}:user/deploy-${i % 7}`,
        accountId: ACCOUNT,
        accessKeyId: `AKIABENCH${pad(i % 7, 11)}`,
        userName: `deploy-${i % 7}`,
      },
    eventTime: new Date(time.getTime() - i * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"),
    eventSource: "ec2.amazonaws.com",
    eventName: ["DescribeInstances", "DescribeVolumes", "GetObject", "ListBuckets"][i % 4],
    awsRegion: "us-east-1",
    sourceIPAddress: `198.51.100.${i % 200}`,
    userAgent: "aws-cli/2.22.0 md/awscrt#0.23.4 ua/2.0 os/linux#6.8.0",
    requestParameters: { maxResults: 100 },
    responseElements: null,
    requestID: crypto.randomUUID(),
    eventID: `${n}-${i}-${crypto.randomUUID()}`,
    readOnly: true,
    eventType: "AwsApiCall",
    managementEvent: true,
    recipientAccountId: ACCOUNT,
    eventCategory: "Management",
  };
}

const server = await startFauxqs({ port: 0, logger: false, host: "127.0.0.1" });
const endpoint = server.address.replace("localhost", "127.0.0.1");
server.createBucket(BUCKET);
const { queueUrl } = server.createQueue(QUEUE, { attributes: { VisibilityTimeout: "60" } });
const client = { region: "us-east-1", endpoint, credentials: { ...CREDENTIALS } };
const s3 = new S3Client({ ...client, forcePathStyle: true });
const sqs = new SQSClient(client);

const start = Date.UTC(2026, 10, 1);
const bodies: string[] = [];
const uploads: { key: string; body: Uint8Array }[] = [];
for (let n = 0; n < MESSAGES; n++) {
  const time = new Date(start + n * 5 * 60_000);
  if (SHAPE === "eventbridge") {
    bodies.push(JSON.stringify({
      version: "0",
      id: crypto.randomUUID(),
      "detail-type": "AWS API Call via CloudTrail",
      source: "aws.ec2",
      account: ACCOUNT,
      time: time.toISOString(),
      region: "us-east-1",
      resources: [],
      detail: record(n, 0, time),
    }));
    continue;
  }
  const day = `${time.getUTCFullYear()}/${pad(time.getUTCMonth() + 1)}/${pad(time.getUTCDate())}`;
  const key = `AWSLogs/${ACCOUNT}/CloudTrail/us-east-1/${day}/${ACCOUNT}_CloudTrail_us-east-1_` +
    `${n.toString(16).padStart(16, "0")}.json.gz`;
  const records = Array.from({ length: RECORDS }, (_, i) => record(n, i, time));
  uploads.push({ key, body: new Uint8Array(gzipSync(JSON.stringify({ Records: records }))) });
  bodies.push(JSON.stringify({
    Records: [{
      eventVersion: "2.1",
      eventSource: "aws:s3",
      awsRegion: "us-east-1",
      eventTime: time.toISOString(),
      eventName: "ObjectCreated:Put",
      s3: {
        s3SchemaVersion: "1.0",
        bucket: { name: BUCKET, arn: `arn:aws:s3:::${BUCKET}` },
        object: { key: encodeURIComponent(key).replace(/%2F/g, "/"), size: 0 },
      },
    }],
  }));
}
let next = 0;
await Promise.all(Array.from({ length: 16 }, async () => {
  while (next < uploads.length) {
    const u = uploads[next++];
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: u.key, Body: u.body }));
  }
}));
for (let i = 0; i < bodies.length; i += 10) {
  await sqs.send(
    new SendMessageBatchCommand({
      QueueUrl: queueUrl,
      Entries: bodies.slice(i, i + 10).map((body, j) => ({ Id: String(j), MessageBody: body })),
    }),
  );
}
s3.destroy();
sqs.destroy();

setLogLevel("warn");
const config = resolveConfig({
  sources: {
    queue: {
      type: "sqs",
      queueUrl,
      region: "us-east-1",
      endpoint,
      forcePathStyle: true,
      credentials: { ...CREDENTIALS },
      workers: WORKERS,
      waitTimeSeconds: 1,
      visibilityTimeout: 60,
      maxRunSeconds: 0,
    },
  },
  sinks: {},
  geo: { provider: "none" },
}, Deno.cwd());
const runtime = await Runtime.create(config, { statePath: ":memory:" });
const depth = () => {
  const q = server.inspectQueue(QUEUE)!.messages;
  return q.ready.length + q.inflight.length + q.delayed.length;
};
let drained = 0;
const started = performance.now();
const watch = setInterval(() => {
  if (!drained && depth() === 0) drained = performance.now() - started;
}, 5);
const summary = await runtime.runOnce();
const seconds = (performance.now() - started) / 1000;
clearInterval(watch);
const drainSeconds = (drained || performance.now() - started) / 1000;
const left = depth();
await runtime.close();
await server.stop();

const result = {
  shape: SHAPE,
  messages: MESSAGES,
  objects: summary.objects_read,
  events: summary.events,
  workers: WORKERS,
  alerts: summary.alerts,
  drain_seconds: +drainSeconds.toFixed(2),
  pass_seconds: +seconds.toFixed(2),
  messages_per_s: Math.round(MESSAGES / drainSeconds),
  events_per_s: Math.round(summary.events / drainSeconds),
};
console.log(
  `sqs drain (${SHAPE}): ${MESSAGES} messages, ${result.events} events drained in ` +
    `${result.drain_seconds} s → ${result.messages_per_s} messages/s, ${result.events_per_s} ` +
    `events/s, ${summary.alerts} alerts (pass ${result.pass_seconds} s incl. the final empty ` +
    `poll; workers ${WORKERS}; ` +
    `fauxqs on loopback)`,
);
console.log(JSON.stringify(result));
if (left !== 0 || summary.failures.length) {
  console.error(`drain incomplete: ${left} message(s) left`, JSON.stringify(summary.failures));
  Deno.exit(1);
}
