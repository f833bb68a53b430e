import assert from "node:assert/strict";
import { PublishCommand, SNSClient } from "@aws-sdk/client-sns";
import { ReceiveMessageCommand, SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";
import { resolveConfig } from "../core/config.ts";
import { captureLog } from "../core/log.ts";
import { Runtime, type Summary } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import type { Alert, NormalizedEvent } from "../core/types.ts";
import { staticGeoProvider } from "../mapping/geo.ts";
import { createSqsSource, queueRegion, s3Options } from "../sources/sqs.ts";
import { rootRecord, type TrailFile, trailFile } from "./helpers/cloudtrail.ts";
import { putFiles, s3ClientFor, TEST_CREDENTIALS } from "./helpers/fauxqs.ts";
import { runCli, spawnCli } from "./helpers/cli.ts";
import { startFaultProxy } from "./helpers/fault_proxy.ts";

const ACCOUNT = "111122223333";
const BUCKET = "org-trail";
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** fauxqs on loopback with SQS, SNS and S3 clients for it. */
async function startWorld() {
  const server = await startFauxqs({ port: 0, logger: false, host: "127.0.0.1" });
  const endpoint = server.address.replace("localhost", "127.0.0.1");
  const client = { region: "us-east-1", endpoint, credentials: { ...TEST_CREDENTIALS } };
  const sqs = new SQSClient({ ...client, maxAttempts: 2 });
  const sns = new SNSClient({ ...client, maxAttempts: 2 });
  const s3 = s3ClientFor(endpoint);
  server.createBucket(BUCKET);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    sqs.destroy();
    sns.destroy();
    s3.destroy();
    await server.stop();
  };
  return {
    server,
    endpoint,
    sqs,
    sns,
    s3,
    /** Creates a queue; `visibility` in seconds. */
    queue(name: string, attributes: Record<string, string> = {}): string {
      return server.createQueue(name, { attributes: { VisibilityTimeout: "30", ...attributes } })
        .queueUrl;
    },
    send: (queueUrl: string, body: unknown) =>
      sqs.send(
        new SendMessageCommand({
          QueueUrl: queueUrl,
          MessageBody: typeof body === "string" ? body : JSON.stringify(body),
        }),
      ),
    publish: (topicArn: string, body: unknown) =>
      sns.send(new PublishCommand({ TopicArn: topicArn, Message: JSON.stringify(body) })),
    put: (files: readonly TrailFile[]) => putFiles(s3, BUCKET, files),
    /** Messages in the queue: ready, delayed and in flight. */
    depth(name: string): number {
      const q = server.inspectQueue(name);
      assert.ok(q, `no queue ${name}`);
      return q.messages.ready.length + q.messages.delayed.length + q.messages.inflight.length;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

type World = Awaited<ReturnType<typeof startWorld>>;

function sqsOptions(
  world: World,
  queueUrl: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    type: "sqs",
    queueUrl,
    region: "us-east-1",
    endpoint: world.endpoint,
    forcePathStyle: true,
    credentials: { ...TEST_CREDENTIALS },
    waitTimeSeconds: 1,
    visibilityTimeout: 3,
    maxRunSeconds: 30,
    ...extra,
  };
}

let fileCounter = 0;
/** A CloudTrail log file of `records` root calls (each raises one `root_activity` alert). */
function logFile(records = 2, region = "us-east-1"): TrailFile {
  fileCounter++;
  return trailFile({
    time: new Date(Date.UTC(2026, 0, 2, 1, 0) + fileCounter * 60_000),
    account: ACCOUNT,
    region,
    records,
    tag: `f${fileCounter}-${crypto.randomUUID().slice(0, 8)}`,
  });
}

function s3Event(key: string, eventName = "ObjectCreated:Put", bucket = BUCKET) {
  return {
    eventVersion: "2.1",
    eventSource: "aws:s3",
    awsRegion: "us-east-1",
    eventTime: new Date().toISOString(),
    eventName,
    s3: {
      s3SchemaVersion: "1.0",
      bucket: { name: bucket, arn: `arn:aws:s3:::${bucket}` },
      object: { key, size: 100 },
    },
  };
}

/** The key as S3 writes it into an event notification: URL-encoded, spaces as `+`. */
function encodeKey(key: string): string {
  return encodeURIComponent(key).replace(/%2F/g, "/").replace(/%20/g, "+");
}

function s3Notification(...keys: string[]) {
  return { Records: keys.map((key) => s3Event(encodeKey(key))) };
}

interface Pass {
  summary: Summary;
  events: string[];
  alerts: Alert[];
}

/** One `ingest --once` pass of the source named `queue`, recording events and alerts. */
async function ingest(
  store: StateStore,
  source: Record<string, unknown>,
  options: {
    signal?: AbortSignal;
    onEvent?: (event: NormalizedEvent) => void | Promise<void>;
    /** Decode workers of the pipeline (objects are pulled ahead of the one processed). */
    decodeWorkers?: number;
  } = {},
): Promise<Pass> {
  const config = resolveConfig(
    {
      sources: { queue: source },
      detectors: { root_activity: {} },
      sinks: {},
      geo: { provider: "none" },
      pipeline: { workers: options.decodeWorkers ?? 0 },
    },
    "/",
  );
  const alerts: Alert[] = [];
  const runtime = await Runtime.create(config, {
    store,
    geo: staticGeoProvider({}),
    onAlert: (alert) => alerts.push(alert),
  });
  if (options.decodeWorkers) await runtime.warmUp();
  const events: string[] = [];
  runtime.detectors.push({
    name: "recorder",
    type: "recorder",
    detect(event) {
      events.push(event.event_id);
      return options.onEvent?.(event) ?? undefined;
    },
  });
  try {
    const summary = await runtime.runOnce({ signal: options.signal });
    return { summary, events, alerts };
  } finally {
    await runtime.close();
  }
}

function sorted(ids: readonly string[]): string[] {
  return [...ids].sort();
}

function eventIdsOf(files: readonly TrailFile[]): string[] {
  return sorted(files.flatMap((f) => f.eventIds));
}

async function withStore<T>(fn: (store: StateStore) => Promise<T>): Promise<T> {
  const store = await StateStore.open(":memory:");
  try {
    return await fn(store);
  } finally {
    store.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Message shapes
// ---------------------------------------------------------------------------------------------

Deno.test("sqs source reads the objects of S3 event notifications and deletes the messages", async () => {
  await using world = await startWorld();
  const url = world.queue("s3-events");
  const plain = logFile(3);
  const spaced = { ...logFile(2), key: "custom logs/2026 01/file+1 é.json.gz" };
  const digest = "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/01/02/" +
    "111122223333_CloudTrail-Digest_us-east-1_trail_us-east-1_20260102T0100Z.json.gz";
  await world.put([plain, spaced]);
  await world.send(url, s3Notification(plain.key));
  await world.send(url, s3Notification(spaced.key));
  await world.send(url, {
    Service: "Amazon S3",
    Event: "s3:TestEvent",
    Time: new Date().toISOString(),
    Bucket: BUCKET,
  });
  await world.send(url, { Records: [s3Event(encodeKey(plain.key), "ObjectRemoved:Delete")] });
  await world.send(url, s3Notification(digest));

  await withStore(async (store) => {
    const pass = await ingest(store, sqsOptions(world, url));
    assert.deepEqual(pass.summary.failures, []);
    assert.equal(pass.summary.objects_read, 2);
    assert.deepEqual(sorted(pass.events), eventIdsOf([plain, spaced]));
    assert.equal(pass.alerts.length, 5, "one root_activity alert per record");
    assert.equal(world.depth("s3-events"), 0, "every message was deleted");
  });
});

Deno.test("sqs source reads S3 notifications published through an SNS topic", async () => {
  await using world = await startWorld();
  const url = world.queue("sns-s3");
  const { topicArn } = world.server.createTopic("bucket-events");
  world.server.subscribe({ topic: "bucket-events", queue: "sns-s3" });
  const files = [logFile(2), logFile(2)];
  await world.put(files);
  for (const file of files) await world.publish(topicArn, s3Notification(file.key));
  // The queue holds SNS envelopes, not the bare notification.
  const peek = world.server.inspectQueue("sns-s3")!.messages.ready[0];
  assert.equal(JSON.parse(peek.body).Type, "Notification");

  await withStore(async (store) => {
    const pass = await ingest(store, sqsOptions(world, url));
    assert.deepEqual(pass.summary.failures, []);
    assert.deepEqual(sorted(pass.events), eventIdsOf(files));
    assert.equal(world.depth("sns-s3"), 0);
  });
});

Deno.test("sqs source reads CloudTrail's SNS notifications, enveloped or raw-delivered", async () => {
  await using world = await startWorld();
  const wrapped = world.queue("ct-envelope");
  const raw = world.queue("ct-raw");
  const { topicArn } = world.server.createTopic("cloudtrail");
  world.server.subscribe({ topic: "cloudtrail", queue: "ct-envelope" });
  world.server.subscribe({
    topic: "cloudtrail",
    queue: "ct-raw",
    attributes: { RawMessageDelivery: "true" },
  });
  const files = [logFile(2), logFile(3), logFile(1)];
  await world.put(files);
  await world.publish(topicArn, { s3Bucket: BUCKET, s3ObjectKey: [files[0].key, files[1].key] });
  await world.publish(topicArn, { s3Bucket: BUCKET, s3ObjectKey: [files[2].key] });
  assert.ok(
    JSON.parse(world.server.inspectQueue("ct-raw")!.messages.ready[0].body).s3Bucket,
    "the raw subscription delivers the bare notification",
  );

  for (const url of [wrapped, raw]) {
    await withStore(async (store) => {
      const pass = await ingest(store, sqsOptions(world, url));
      assert.deepEqual(pass.summary.failures, []);
      assert.equal(pass.summary.objects_read, 3);
      assert.deepEqual(sorted(pass.events), eventIdsOf(files));
    });
  }
  assert.equal(world.depth("ct-envelope"), 0);
  assert.equal(world.depth("ct-raw"), 0);
});

Deno.test("sqs source processes the CloudTrail records of EventBridge events", async () => {
  await using world = await startWorld();
  const url = world.queue("eventbridge");
  const apiCall = rootRecord("eb-api-1", new Date("2026-01-02T01:00:00Z"), ACCOUNT, "us-east-1");
  const signIn = {
    ...rootRecord("eb-signin-1", new Date("2026-01-02T01:01:00Z"), ACCOUNT, "us-east-1"),
    eventSource: "signin.amazonaws.com",
    eventName: "ConsoleLogin",
    eventType: "AwsConsoleSignIn",
    responseElements: { ConsoleLogin: "Success" },
  };
  const envelope = (type: string, detail: unknown, source: string) => ({
    version: "0",
    id: crypto.randomUUID(),
    "detail-type": type,
    source,
    account: ACCOUNT,
    time: "2026-01-02T01:00:00Z",
    region: "us-east-1",
    resources: [],
    detail,
  });
  await world.send(url, envelope("AWS API Call via CloudTrail", apiCall, "aws.iam"));
  await world.send(url, envelope("AWS Console Sign In via CloudTrail", signIn, "aws.signin"));
  await world.send(
    url,
    envelope("EC2 Instance State-change Notification", { state: "running" }, "aws.ec2"),
  );

  await withStore(async (store) => {
    const pass = await ingest(store, sqsOptions(world, url));
    assert.deepEqual(pass.summary.failures, []);
    assert.deepEqual(sorted(pass.events), ["eb-api-1", "eb-signin-1"]);
    assert.deepEqual(sorted(pass.alerts.flatMap((a) => a.event_ids)), ["eb-api-1", "eb-signin-1"]);
    assert.equal(world.depth("eventbridge"), 0);
  });
});

Deno.test("sqs source processes raw CloudTrail JSON: one record or a Records list", async () => {
  await using world = await startWorld();
  const url = world.queue("raw");
  const at = new Date("2026-01-02T02:00:00Z");
  await world.send(url, rootRecord("raw-single", at, ACCOUNT, "eu-west-1"));
  await world.send(url, {
    Records: [
      rootRecord("raw-list-1", at, ACCOUNT, "eu-west-1"),
      rootRecord("raw-list-2", at, ACCOUNT, "eu-west-1"),
    ],
  });

  await withStore(async (store) => {
    const pass = await ingest(store, sqsOptions(world, url));
    assert.deepEqual(pass.summary.failures, []);
    assert.equal(pass.summary.objects_read, 2);
    assert.deepEqual(sorted(pass.events), ["raw-list-1", "raw-list-2", "raw-single"]);
    assert.equal(world.depth("raw"), 0);
  });
});

Deno.test("sqs source leaves an unknown message to the redrive policy and reports it as poison", async () => {
  await using world = await startWorld();
  world.queue("poison-dlq");
  const url = world.queue("poison", {
    VisibilityTimeout: "2",
    RedrivePolicy: JSON.stringify({
      deadLetterTargetArn: "arn:aws:sqs:us-east-1:000000000000:poison-dlq",
      maxReceiveCount: "2",
    }),
  });
  const { MessageId } = await world.send(url, { orderId: 7, status: "paid" });
  const options = sqsOptions(world, url, { visibilityTimeout: 2, maxReceiveCount: 2 });
  const lines: string[] = [];
  const restore = captureLog((line) => lines.push(line), "warn");
  try {
    await withStore(async (store) => {
      const first = await ingest(store, options);
      assert.deepEqual(first.summary.failures, [], "not poison yet after one receive");
      assert.ok(
        lines.some((l) => l.includes(`sqs://poison/${MessageId}`) && l.includes("not deleted")),
        lines.join("\n"),
      );
      assert.equal(world.depth("poison"), 1, "the message was not deleted");
      await sleep(1_100);
      const second = await ingest(store, options);
      assert.equal(second.summary.failures.length, 1);
      assert.equal(second.summary.failures[0].object, `sqs://poison/${MessageId}`);
      assert.match(second.summary.failures[0].reason, /^poison message: received 2 times/);
      assert.equal(world.depth("poison"), 1, "a poison message is not deleted either");
    });
  } finally {
    restore();
  }
  // Its next receive moves it to the dead-letter queue (the queue's redrive policy).
  await sleep(2_100);
  await world.sqs.send(new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 0 }));
  assert.equal(world.depth("poison"), 0);
  assert.equal(world.depth("poison-dlq"), 1);
});

// ---------------------------------------------------------------------------------------------
// Failures, duplicates, visibility
// ---------------------------------------------------------------------------------------------

Deno.test("sqs source keeps a message naming a missing object and processes it once it appears", async () => {
  await using world = await startWorld();
  const url = world.queue("missing");
  const present = logFile(2);
  const missing = logFile(3);
  await world.put([present]);
  await world.send(url, { s3Bucket: BUCKET, s3ObjectKey: [present.key, missing.key] });
  const options = sqsOptions(world, url, { visibilityTimeout: 2 });

  await withStore(async (store) => {
    const first = await ingest(store, options);
    assert.equal(first.summary.objects_read, 1);
    assert.equal(first.summary.objects_failed, 1);
    assert.deepEqual(first.summary.failures.map((f) => f.object), [
      `s3://${BUCKET}/${missing.key}`,
    ]);
    assert.match(first.summary.failures[0].reason, /no longer exists|NoSuchKey/);
    assert.deepEqual(sorted(first.events), eventIdsOf([present]));
    assert.equal(world.depth("missing"), 1, "the message was not deleted");
    const early = await world.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 0 }),
    );
    assert.equal(early.Messages, undefined, "invisible until its visibility timeout");

    await world.put([missing]);
    await sleep(2_100);
    const second = await ingest(store, options);
    assert.deepEqual(second.summary.failures, []);
    assert.equal(second.summary.objects_read, 1, "the file read before is not read again");
    assert.equal(second.summary.duplicates_skipped, 0);
    assert.deepEqual(sorted(second.events), eventIdsOf([missing]));
    assert.equal(world.depth("missing"), 0);
  });
});

Deno.test("sqs source reads an object named by several notifications once", async () => {
  await using world = await startWorld();
  const url = world.queue("duplicates");
  const { topicArn } = world.server.createTopic("ct-dup");
  world.server.subscribe({ topic: "ct-dup", queue: "duplicates" });
  const files = [logFile(2), logFile(2)];
  await world.put(files);
  // The bucket notifies, CloudTrail notifies, and S3 sends one notification twice.
  await world.send(url, s3Notification(files[0].key));
  await world.send(url, s3Notification(files[0].key));
  await world.publish(topicArn, { s3Bucket: BUCKET, s3ObjectKey: [files[0].key, files[1].key] });
  await world.send(url, s3Notification(files[1].key));

  await withStore(async (store) => {
    const first = await ingest(store, sqsOptions(world, url));
    assert.deepEqual(first.summary.failures, []);
    assert.equal(first.summary.objects_read, 2, "each object read once");
    assert.equal(first.summary.duplicates_skipped, 0);
    assert.deepEqual(sorted(first.events), eventIdsOf(files));
    assert.equal(first.alerts.length, 4);
    assert.equal(world.depth("duplicates"), 0);

    // A late duplicate, in a later pass: acknowledged from the marker, not read again.
    await world.send(url, s3Notification(files[1].key));
    const second = await ingest(store, sqsOptions(world, url));
    assert.deepEqual(second.summary.failures, []);
    assert.equal(second.summary.objects_read, 0);
    assert.equal(second.events.length, 0);
    assert.equal(world.depth("duplicates"), 0);
  });
});

Deno.test("sqs source keeps a slow message invisible with its heartbeat", async () => {
  await using world = await startWorld();
  const url = world.queue("slow");
  const file = logFile(1);
  await world.put([file]);
  await world.send(url, s3Notification(file.key));
  let processing = false;
  let stolen = 0;
  let polls = 0;
  await withStore(async (store) => {
    const pass = ingest(store, sqsOptions(world, url, { visibilityTimeout: 2 }), {
      // Processing takes 3× the visibility timeout.
      onEvent: async () => {
        processing = true;
        await sleep(6_000);
        processing = false;
      },
    });
    // A second consumer polls the queue the whole time.
    while (!processing) await sleep(20);
    while (processing) {
      const out = await world.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 1, VisibilityTimeout: 30 }),
      );
      polls++;
      stolen += out.Messages?.length ?? 0;
    }
    const { summary, events } = await pass;
    assert.deepEqual(summary.failures, []);
    assert.deepEqual(events, file.eventIds);
  });
  assert.ok(polls >= 4, `the second consumer polled ${polls} times`);
  assert.equal(stolen, 0, "the second consumer received the message being processed");
  assert.equal(world.depth("slow"), 0);
});

Deno.test("sqs source gives back unprocessed messages when maxRunSeconds runs out", async () => {
  await using world = await startWorld();
  const url = world.queue("budget");
  const at = new Date("2026-01-02T03:00:00Z");
  for (let i = 0; i < 12; i++) {
    await world.send(url, rootRecord(`budget-${i}`, at, ACCOUNT, "us-east-1"));
  }
  const options = sqsOptions(world, url, { visibilityTimeout: 60, maxRunSeconds: 1 });
  await withStore(async (store) => {
    const started = performance.now();
    const first = await ingest(store, options, { onEvent: () => sleep(300) });
    const took = performance.now() - started;
    assert.deepEqual(first.summary.failures, []);
    assert.ok(first.events.length >= 1 && first.events.length < 12, `${first.events.length}`);
    assert.ok(took < 5_000, `the pass took ${took} ms`);
    // The rest is visible again at once, not after the 60 s visibility timeout.
    const rest = world.server.inspectQueue("budget")!.messages;
    assert.equal(rest.inflight.length, 0);
    assert.equal(rest.ready.length, 12 - first.events.length);

    const second = await ingest(store, { ...options, maxRunSeconds: 0 });
    assert.deepEqual(second.summary.failures, []);
    assert.equal(second.summary.duplicates_skipped, 0);
    const all = sorted([...first.events, ...second.events]);
    assert.deepEqual(all, sorted(Array.from({ length: 12 }, (_, i) => `budget-${i}`)));
    assert.equal(world.depth("budget"), 0);
  });
});

Deno.test("sqs source stops after the object in hand when aborted and gives back the rest", async () => {
  await using world = await startWorld();
  const url = world.queue("abort");
  const files = Array.from({ length: 8 }, () => logFile(1));
  await world.put(files);
  for (const file of files) await world.send(url, s3Notification(file.key));
  const controller = new AbortController();
  await withStore(async (store) => {
    const first = await ingest(store, sqsOptions(world, url, { visibilityTimeout: 60 }), {
      onEvent: () => {
        controller.abort();
        return sleep(200);
      },
      signal: controller.signal,
    });
    assert.equal(first.events.length, 1, "only the object in hand was finished");
    const rest = world.server.inspectQueue("abort")!.messages;
    assert.equal(rest.inflight.length, 0, "nothing left invisible");
    assert.equal(rest.ready.length, 7);
    const second = await ingest(store, sqsOptions(world, url));
    assert.deepEqual(sorted([...first.events, ...second.events]), eventIdsOf(files));
    assert.equal(world.depth("abort"), 0);
  });
});

Deno.test("sqs source gives back what decode workers pulled ahead when a pass stops", async () => {
  await using world = await startWorld();
  const url = world.queue("ahead");
  const files = Array.from({ length: 6 }, () => logFile(1));
  await world.put(files);
  for (const file of files) await world.send(url, s3Notification(file.key));
  const controller = new AbortController();
  await withStore(async (store) => {
    const first = await ingest(store, sqsOptions(world, url, { visibilityTimeout: 60 }), {
      decodeWorkers: 2,
      onEvent: () => controller.abort(),
      signal: controller.signal,
    });
    assert.deepEqual(first.summary.failures, []);
    assert.equal(first.events.length, 1);
    const rest = world.server.inspectQueue("ahead")!.messages;
    assert.equal(rest.inflight.length, 0, "nothing left invisible");
    assert.equal(rest.ready.length, 5);
    // More decode workers than the source buffers: the pipeline pulls objects ahead of what it
    // commits, and the source keeps receiving for it.
    const second = await ingest(store, sqsOptions(world, url, { maxMessages: 1, workers: 1 }), {
      decodeWorkers: 3,
    });
    assert.deepEqual(second.summary.failures, []);
    assert.deepEqual(sorted([...first.events, ...second.events]), eventIdsOf(files));
    assert.equal(world.depth("ahead"), 0);
  });
});

Deno.test("sqs source deletes nothing in a dry run", async () => {
  await using world = await startWorld();
  const url = world.queue("dry", { VisibilityTimeout: "60" });
  await world.send(
    url,
    rootRecord("dry-1", new Date("2026-01-02T04:00:00Z"), ACCOUNT, "us-east-1"),
  );
  await world.send(url, { Service: "Amazon S3", Event: "s3:TestEvent", Bucket: BUCKET });
  const store = await StateStore.open(":memory:", { dryRun: true });
  try {
    const pass = await ingest(store, sqsOptions(world, url, { visibilityTimeout: 60 }));
    assert.deepEqual(pass.events, ["dry-1"]);
    const left = world.server.inspectQueue("dry")!.messages;
    assert.equal(left.ready.length, 2, "both messages are back in the queue at once");
    assert.equal(left.inflight.length, 0);
  } finally {
    store.close();
  }
});

Deno.test("sqs source preflight names a missing queue", async () => {
  await using world = await startWorld();
  const url = world.queue("exists").replace(/exists$/, "nope");
  const source = createSqsSource(sqsOptions(world, url), { name: "q", baseDir: "/" });
  try {
    await assert.rejects(
      () => source.preflight!(),
      (error: Error) => {
        assert.match(error.message, /^Cannot open queue .*nope: the queue does not exist/);
        assert.match(error.message, /sources\.q\.queueUrl/);
        return true;
      },
    );
  } finally {
    await source.close?.();
  }
});

Deno.test("sqs source options: LimaCharlie's sqs block maps onto it, bad values are named", () => {
  const config = resolveConfig({
    sqs: {
      queue_url: "https://sqs.eu-west-1.amazonaws.com/111122223333/trail",
      region: "eu-west-1",
      access_key: "AKIAEXAMPLEEXAMPLE01",
      secret_key: "secret-example-secret-example",
      client_options: { hostname: "lc-trail" },
    },
  }, "/");
  assert.equal(config.sources[0].name, "lc-trail");
  assert.equal(config.sources[0].type, "sqs");
  assert.throws(
    () =>
      resolveConfig({
        sources: {
          q: {
            type: "sqs",
            queueUrl: "not a url",
            maxMessages: 11,
            waitTimeSeconds: 21,
            visibilityTimeout: 0,
            s3: { roleArn: "nope" },
            queue_url: "x",
          },
        },
      }, "/"),
    (error: Error & { problems: { path: string }[] }) => {
      assert.deepEqual(error.problems.map((p) => p.path).sort(), [
        "sources.q.maxMessages",
        "sources.q.queueUrl",
        "sources.q.queue_url",
        "sources.q.s3.roleArn",
        "sources.q.visibilityTimeout",
        "sources.q.waitTimeSeconds",
      ]);
      return true;
    },
  );
});

Deno.test("sqs source options: the s3 block inherits the queue's settings, credentials whole", () => {
  const queue = {
    region: "eu-west-1",
    endpoint: "http://localhost:4566",
    forcePathStyle: true,
    maxAttempts: 3,
    credentials: { accessKeyId: "AKIAQUEUE00000000001", secretAccessKey: "queue-secret" },
  };
  assert.deepEqual(s3Options({ ...queue, queueUrl: "x" }), {
    region: "eu-west-1",
    endpoint: "http://localhost:4566",
    forcePathStyle: true,
    maxAttempts: 3,
    credentials: queue.credentials,
  });
  const role = "arn:aws:iam::444455556666:role/trail-reader";
  assert.deepEqual(
    s3Options({ ...queue, queueUrl: "x", s3: { roleArn: role, region: "us-east-2" } }),
    {
      region: "us-east-2",
      endpoint: "http://localhost:4566",
      forcePathStyle: true,
      maxAttempts: 3,
      roleArn: role,
    },
  );
  assert.equal(queueRegion("https://sqs.ap-south-1.amazonaws.com/111122223333/q"), "ap-south-1");
  assert.equal(queueRegion("https://eu-west-3.queue.amazonaws.com/111122223333/q"), "eu-west-3");
  assert.equal(queueRegion("https://sqs.cn-north-1.amazonaws.com.cn/111122223333/q"), "cn-north-1");
  assert.equal(queueRegion("http://localhost:4566/000000000000/q"), undefined);
});

// ---------------------------------------------------------------------------------------------
// Processes: two consumers, a kill
// ---------------------------------------------------------------------------------------------

interface JsonlAlert {
  id: string;
  event_ids: string[];
}

async function readAlerts(path: string): Promise<JsonlAlert[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
}

async function writeConfig(
  dir: string,
  source: Record<string, unknown>,
): Promise<{ config: string; state: string; alerts: string }> {
  const config = `${dir}/config.json`;
  const state = `${dir}/state.kv`;
  const alerts = `${dir}/alerts.jsonl`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      sources: { queue: source },
      detectors: { root_activity: {} },
      sinks: { out: { type: "jsonl", path: alerts } },
      geo: { provider: "none" },
      state: { path: state, leaseTtl: "1s", leaseWait: "60s" },
    }),
  );
  return { config, state, alerts };
}

Deno.test("sqs source: two processes on one queue and one state process every event once", async () => {
  await using world = await startWorld();
  const url = world.queue("shared");
  // Enough work that two 1-second passes cannot drain it: ~8 objects fit in one pass.
  const files = Array.from({ length: 40 }, () => logFile(2));
  await world.put(files);
  for (const file of files) await world.send(url, s3Notification(file.key));
  // Slow downloads, and a short time budget: each pass stops mid-queue and gives back the rest.
  await using proxy = await startFaultProxy({
    target: world.endpoint,
    seed: 7,
    rates: { slow: 1 },
    slowMs: 250,
    eligible: (r) => r.method === "GET" && r.path.includes(".json.gz"),
  });
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-sqs-two-" });
  try {
    const paths = await writeConfig(
      dir,
      sqsOptions(world, url, { maxRunSeconds: 1, workers: 2, s3: { endpoint: proxy.url } }),
    );
    const args = ["ingest", "--once", "--config", paths.config];
    let rounds = 0;
    while (world.depth("shared") > 0 && rounds < 8) {
      rounds++;
      // The second starts a moment later: two processes creating one KV file at the same instant
      // can fail with "database is locked" (a Deno KV limit, not what this test is about).
      const [a, b] = await Promise.all([runCli(args), sleep(400).then(() => runCli(args))]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
    }
    assert.ok(rounds >= 2, `drained in ${rounds} round(s): the budget did not cut a pass short`);
    assert.equal(world.depth("shared"), 0);
    const alerts = await readAlerts(paths.alerts);
    const ids = alerts.map((a) => a.id);
    assert.equal(new Set(ids).size, ids.length, "an alert was delivered twice");
    assert.deepEqual(sorted(alerts.flatMap((a) => a.event_ids)), eventIdsOf(files));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("sqs source loses and duplicates nothing when the process is killed mid-batch", async () => {
  await using world = await startWorld();
  const url = world.queue("killed");
  const files = Array.from({ length: 40 }, () => logFile(3));
  await world.put(files);
  for (let i = 0; i < files.length; i += 2) {
    // CloudTrail notifications naming two files each.
    await world.send(url, { s3Bucket: BUCKET, s3ObjectKey: [files[i].key, files[i + 1].key] });
  }
  await using proxy = await startFaultProxy({
    target: world.endpoint,
    seed: 11,
    rates: { slow: 1 },
    slowMs: 80,
    eligible: (r) => r.method === "GET" && r.path.includes(".json.gz"),
  });
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-sqs-kill-" });
  try {
    const paths = await writeConfig(
      dir,
      sqsOptions(world, url, { visibilityTimeout: 2, workers: 2, s3: { endpoint: proxy.url } }),
    );
    const args = (n: number) => [
      "ingest",
      "--once",
      "--config",
      paths.config,
      "--summary",
      `${dir}/summary-${n}.json`,
    ];
    // Messages deleted so far: each was deleted after both its objects were committed. (The
    // queue is watched rather than the KV file, which a second process must not open meanwhile.)
    const deleted = () => files.length / 2 - world.depth("killed");
    const kills: number[] = [];
    for (const threshold of [3, 9]) {
      const child = spawnCli(args(kills.length));
      const drained = Promise.all([
        child.stdout.pipeTo(new WritableStream()),
        child.stderr.pipeTo(new WritableStream()),
      ]);
      for (let i = 0; i < 600 && deleted() < threshold; i++) await sleep(10);
      child.kill("SIGKILL");
      await child.status;
      await drained;
      kills.push(deleted());
    }
    assert.ok(
      kills[0] >= 3 && kills[1] > kills[0] && kills[1] < files.length / 2,
      `killed after ${kills.join(", ")} messages were deleted`,
    );
    const summaries: Summary[] = [];
    for (let run = 0; run < 6 && (summaries.length === 0 || world.depth("killed") > 0); run++) {
      // Messages the killed processes held come back after their visibility timeout.
      if (run > 0) await sleep(1_000);
      const result = await runCli(args(10 + run));
      assert.equal(result.code, 0, result.stderr);
      summaries.push(JSON.parse(await Deno.readTextFile(`${dir}/summary-${10 + run}.json`)));
    }
    assert.equal(world.depth("killed"), 0, "the queue was drained");
    for (const summary of summaries) {
      assert.equal(summary.duplicates_skipped, 0, "a restarted run read an object again");
    }
    // An alert may be appended twice if a process died between writing and marking it delivered;
    // by alert id, every event is there exactly once.
    const byId = new Map((await readAlerts(paths.alerts)).map((a) => [a.id, a]));
    assert.deepEqual(sorted([...byId.values()].flatMap((a) => a.event_ids)), eventIdsOf(files));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
