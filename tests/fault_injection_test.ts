/**
 * Fault injection: seeded loopback fault proxies stand in front of fauxqs for an `s3` source, in
 * front of fauxqs for an `sqs` source (the queue and the S3 objects its notifications name) and
 * in front of the webhook receiver. About a quarter of the requests through each get a 500, a 503
 * SlowDown, a 429 throttle, a reset connection, a slow answer or a body cut in half. `ingest
 * --once` runs again (as its cron would) until every alert was delivered; the results must be
 * complete and duplicate-free: each eventID processed once and alerted once, by one alert id put
 * in the outbox once; each alert id at the receiver, twice only with the same `Idempotency-Key`
 * and only after the proxy cut the receiver's answer to an earlier attempt.
 */

import assert from "node:assert/strict";
import { SendMessageCommand, SQSClient } from "@aws-sdk/client-sqs";
import { startFauxqs } from "fauxqs";
import { alertId, type Summary } from "../core/pipeline.ts";
import { type TrailFile, trailFile } from "./helpers/cloudtrail.ts";
import { type FaultKind, type FaultProxy, startFaultProxy } from "./helpers/fault_proxy.ts";
import { putFiles, s3ClientFor, s3SourceOptions, TEST_CREDENTIALS } from "./helpers/fauxqs.ts";
import { tempDir } from "./helpers/records.ts";
import { Receiver, type RecordedRequest } from "./helpers/receiver.ts";
import {
  alertOf,
  pendingIds,
  readState,
  runToEnd,
  signatureValid,
  sleep,
} from "./helpers/reliability.ts";

const ACCOUNT = "111122223333";
const HMAC_SECRET = "fault-test-hmac-secret-93ab";
/** Share of the requests through each proxy that get each fault: 28% in all. */
const RATES: Partial<Record<FaultKind, number>> = {
  internalError: 0.06,
  slowDown: 0.06,
  throttle: 0.05,
  reset: 0.05,
  slow: 0.03,
  truncate: 0.03,
};
/** Runs before the test gives up. */
const MAX_RUNS = 30;

/** A log file of `records` root calls (one `root_activity` alert each), `minutes` into a day. */
function logFile(tag: string, minutes: number, records: number): TrailFile {
  return trailFile({
    time: new Date(Date.UTC(2026, 10, 17, 0, minutes)),
    account: ACCOUNT,
    region: "us-east-1",
    records,
    tag,
  });
}

/** An S3 event notification naming `key`. */
function s3Notification(bucket: string, key: string) {
  return {
    Records: [{
      eventVersion: "2.1",
      eventSource: "aws:s3",
      awsRegion: "us-east-1",
      eventTime: new Date().toISOString(),
      eventName: "ObjectCreated:Put",
      s3: {
        s3SchemaVersion: "1.0",
        bucket: { name: bucket, arn: `arn:aws:s3:::${bucket}` },
        object: { key, size: 100 },
      },
    }],
  };
}

function assertFaultsInjected(name: string, proxy: FaultProxy): void {
  const counts = proxy.counts();
  const faults = proxy.log.length - counts.none;
  assert.ok(
    faults >= proxy.log.length * 0.1 && faults >= 5,
    `${name}: only ${faults} of ${proxy.log.length} requests got a fault: ${
      JSON.stringify(counts)
    }`,
  );
  const kinds = Object.keys(counts).filter((k) => k !== "none");
  assert.ok(kinds.length >= 4, `${name}: only ${kinds.join(", ")} injected`);
}

Deno.test("fault injection: with a quarter of S3, SQS and webhook requests failing, ingest --once runs until done with complete, duplicate-free results", async () => {
  const server = await startFauxqs({ port: 0, logger: false, host: "127.0.0.1" });
  const endpoint = server.address.replace("localhost", "127.0.0.1");
  const s3 = s3ClientFor(endpoint);
  const sqs = new SQSClient({
    region: "us-east-1",
    endpoint,
    credentials: { ...TEST_CREDENTIALS },
    maxAttempts: 2,
  });
  const receiver = await Receiver.start({
    // A body the proxy can cut in half: the receiver took the alert, the sender sees an error.
    fallback: { status: 200, body: "accepted ".repeat(12) },
  });
  const proxies: FaultProxy[] = [];
  const tmp = await tempDir();
  try {
    // (a) an s3 source over a CloudTrail layout; (b) an sqs source with S3 notifications about
    // objects in another bucket.
    server.createBucket("trail-s3");
    server.createBucket("trail-sqs");
    const s3Files = Array.from({ length: 10 }, (_, i) => logFile(`s3-${i}`, 5 + i * 5, 2));
    const sqsFiles = Array.from({ length: 8 }, (_, i) => logFile(`sqs-${i}`, 7 + i * 5, 2));
    await putFiles(s3, "trail-s3", s3Files);
    await putFiles(s3, "trail-sqs", sqsFiles);
    const queueUrl = server.createQueue("trail-events", {
      attributes: { VisibilityTimeout: "30" },
    }).queueUrl;
    for (const file of sqsFiles) {
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: queueUrl,
          MessageBody: JSON.stringify(s3Notification("trail-sqs", file.key)),
        }),
      );
    }
    const depth = () => {
      const q = server.inspectQueue("trail-events")!;
      return q.messages.ready.length + q.messages.delayed.length + q.messages.inflight.length;
    };

    const s3Proxy = await startFaultProxy({ target: endpoint, seed: 101, rates: RATES });
    const sqsProxy = await startFaultProxy({ target: endpoint, seed: 202, rates: RATES });
    const hookProxy = await startFaultProxy({
      target: `http://127.0.0.1:${receiver.port}`,
      seed: 303,
      rates: RATES,
    });
    proxies.push(s3Proxy, sqsProxy, hookProxy);
    const hookUrl = `${hookProxy.url}${new URL(receiver.url).pathname}`;

    const statePath = `${tmp.path}/state.kv`;
    const configPath = `${tmp.path}/config.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        sources: {
          bucket: s3SourceOptions(s3Proxy.url, "trail-s3", { retryFailedAfter: "0s" }),
          queue: {
            type: "sqs",
            queueUrl,
            region: "us-east-1",
            endpoint: sqsProxy.url,
            forcePathStyle: true,
            credentials: { ...TEST_CREDENTIALS },
            waitTimeSeconds: 0,
            visibilityTimeout: 2,
            maxRunSeconds: 20,
            s3: { endpoint: sqsProxy.url },
          },
        },
        detectors: { root_activity: {} },
        sinks: { hook: { type: "webhook", url: hookUrl, secret: HMAC_SECRET, timeout: "5s" } },
        geo: { provider: "none" },
        delivery: { baseDelay: "10ms", maxDelay: "200ms", maxAttempts: 50 },
        state: { path: statePath },
      }),
    );

    const files = [...s3Files, ...sqsFiles];
    const eventIds = files.flatMap((f) => f.eventIds).sort();
    const expectedIds = eventIds.map((id) => alertId("root_activity", [id], "", ACCOUNT)).sort();
    const summaries: Summary[] = [];
    const log: string[] = [];
    let done = false;
    for (let run = 1; run <= MAX_RUNS && !done; run++) {
      const summaryPath = `${tmp.path}/summary-${run}.json`;
      const t0 = performance.now();
      const result = await runToEnd([
        "ingest",
        "--once",
        "--config",
        configPath,
        "--summary",
        summaryPath,
      ]);
      // 3: some object or a source failed in this pass (its cron would simply run again).
      assert.ok(
        result.code === 0 || result.code === 3,
        `run ${run}: exit ${result.code}\n${result.stderr}`,
      );
      const summary: Summary = JSON.parse(await Deno.readTextFile(summaryPath));
      summaries.push(summary);
      const view = await readState(statePath, "bucket");
      const received = new Set(receiver.accepted.map((r) => r.headers["idempotency-key"]));
      const ms = Math.round(performance.now() - t0);
      const pending = pendingIds(view).size;
      log.push(
        `run ${run} (${ms} ms): exit ${result.code}; ${summary.objects_read} objects, ` +
          `${summary.events} events, ${summary.failures.length} failures; ${pending} alerts ` +
          `pending, ${received.size} received; ${depth()} messages in the queue`,
      );
      done = depth() === 0 && pending === 0 && view.dead.size === 0 &&
        expectedIds.every((id) => received.has(id));
      // Messages whose receive answer was lost come back after their visibility timeout (2 s).
      const queue = server.inspectQueue("trail-events")!;
      if (!done && queue.messages.ready.length === 0 && queue.messages.inflight.length > 0) {
        await sleep(1_000);
      }
    }
    assert.ok(done, `not done after ${MAX_RUNS} runs:\n${log.join("\n")}`);

    // Each event processed once, each alert put in the outbox once.
    const total = (key: "events" | "alerts" | "objects_read") =>
      summaries.reduce((n, s) => n + s[key], 0);
    assert.equal(total("events"), eventIds.length, `events processed:\n${log.join("\n")}`);
    assert.equal(total("alerts"), eventIds.length, "an alert was enqueued twice");
    assert.equal(total("objects_read"), files.length, "an object was read twice");

    // Complete: every alert id at the receiver, covering every eventID once.
    const accepted = receiver.accepted;
    const byId = new Map<string, RecordedRequest[]>();
    for (const request of accepted) {
      const alert = alertOf(request);
      assert.equal(request.headers["idempotency-key"], alert.id);
      assert.ok(await signatureValid(HMAC_SECRET, request), `bad signature on ${alert.id}`);
      if (!byId.has(alert.id)) byId.set(alert.id, []);
      byId.get(alert.id)!.push(request);
    }
    assert.deepEqual([...byId.keys()].sort(), expectedIds);
    assert.deepEqual(
      [...byId.values()].flatMap((r) => alertOf(r[0]).event_ids).sort(),
      eventIds,
    );
    // Duplicate-free but for lost answers: an alert id reached the receiver again only as often
    // as the proxy had cut the receiver's answer to it.
    const cut = new Map<string, number>();
    for (const entry of hookProxy.log) {
      if (entry.fault !== "truncate") continue;
      const key = entry.headers["idempotency-key"];
      cut.set(key, (cut.get(key) ?? 0) + 1);
    }
    for (const [id, requests] of byId) {
      assert.ok(
        requests.length - 1 <= (cut.get(id) ?? 0),
        `alert ${id} reached the receiver ${requests.length} times, its answer was cut ${
          cut.get(id) ?? 0
        } time(s)`,
      );
    }

    assertFaultsInjected("s3 source proxy", s3Proxy);
    assertFaultsInjected("sqs source proxy", sqsProxy);
    assertFaultsInjected("webhook proxy", hookProxy);
    assert.ok(
      sqsProxy.log.some((r) => r.headers["x-amz-target"]?.startsWith("AmazonSQS.")) &&
        sqsProxy.log.some((r) => r.method === "GET" && r.path.includes("/trail-sqs/")),
      "the sqs source's queue and object requests did not both go through the proxy",
    );
  } finally {
    for (const proxy of proxies) await proxy.close();
    await receiver.stop();
    s3.destroy();
    sqs.destroy();
    await server.stop();
    await tmp.cleanup();
  }
});
