import assert from "node:assert/strict";
import { DeleteObjectCommand } from "@aws-sdk/client-s3";
import { resolveConfig } from "../core/config.ts";
import { Runtime, type Summary } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import type { NormalizedEvent } from "../core/types.ts";
import { staticGeoProvider } from "../mapping/geo.ts";
import { captureLog } from "../core/log.ts";
import {
  isDigestKey,
  layoutRoot,
  parseStreamKey,
  startKeyFor,
} from "../sources/_cloudtrail_keys.ts";
import { createS3Source } from "../sources/s3.ts";
import {
  daysAgo,
  gzipRecords,
  orgTrail,
  rootRecord,
  type TrailFile,
  trailFile,
} from "./helpers/cloudtrail.ts";
import { s3SourceOptions, startS3, TEST_CREDENTIALS } from "./helpers/fauxqs.ts";
import { runCli, spawnCli } from "./helpers/cli.ts";
import { startFaultProxy } from "./helpers/fault_proxy.ts";

const A1 = "111122223333";
const A2 = "444455556666";
const A3 = "777788889999";
const ORG = "o-a1b2c3d4e5";

interface Seen {
  id: string;
  insight: boolean;
}

/** One `ingest --once` pass of an `s3` source named `trail`, recording every event processed. */
async function ingest(
  store: StateStore,
  source: Record<string, unknown>,
  options: { signal?: AbortSignal; onEvent?: (event: NormalizedEvent) => void } = {},
): Promise<{ summary: Summary; events: Seen[] }> {
  const config = resolveConfig(
    { sources: { trail: source }, detectors: {}, sinks: {}, geo: { provider: "none" } },
    "/",
  );
  const runtime = await Runtime.create(config, { store, geo: staticGeoProvider({}) });
  const events: Seen[] = [];
  runtime.detectors.push({
    name: "recorder",
    type: "recorder",
    detect(event) {
      events.push({ id: event.event_id, insight: event.insight === true });
      options.onEvent?.(event);
    },
  });
  try {
    const summary = await runtime.runOnce({ signal: options.signal });
    return { summary, events };
  } finally {
    await runtime.close();
  }
}

function ids(files: readonly TrailFile[]): string[] {
  return files.flatMap((f) => f.eventIds).sort();
}

function sorted(events: readonly Seen[]): string[] {
  return events.map((e) => e.id).sort();
}

function assertClean(summary: Summary): void {
  assert.deepEqual(summary.failures, []);
  assert.equal(summary.duplicates_skipped, 0, "an object was read twice");
}

Deno.test("s3 source reads every record of an org trail once, then nothing", async () => {
  await using s3 = await startS3();
  s3.createBucket("org-trail");
  const start = daysAgo(3);
  const files = orgTrail({
    org: ORG,
    prefix: "audit",
    accounts: [A1, A2],
    regions: ["us-east-1", "eu-west-1"],
    start,
    days: 2,
    filesPerDay: 3,
    digests: true,
  });
  // One folder with more than 1,000 files: the listing must paginate.
  for (let i = 0; i < 1_005; i++) {
    files.push(trailFile({
      time: new Date(start.getTime() + 86_400_000 + i * 60_000),
      account: A1,
      region: "ap-south-1",
      org: ORG,
      prefix: "audit",
      records: 1,
      tag: `big-${i}`,
    }));
  }
  const insight = trailFile({
    time: new Date(start.getTime() + 7_200_000),
    account: A2,
    region: "us-east-1",
    org: ORG,
    prefix: "audit",
    kind: "CloudTrail-Insight",
    records: 2,
    tag: "insight",
  });
  files.push(insight);
  await s3.put("org-trail", files);
  const logs = files.filter((f) => !f.key.includes("CloudTrail-Digest"));
  assert.ok(files.length - logs.length >= 8, "the bucket holds digest files");

  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "org-trail", { prefix: "audit" });
    const first = await ingest(store, options);
    assertClean(first.summary);
    assert.equal(first.summary.objects_read, logs.length);
    assert.deepEqual(sorted(first.events), ids(logs));
    const insights = first.events.filter((e) => e.insight).map((e) => e.id).sort();
    assert.deepEqual(insights, [...insight.eventIds].sort());

    const second = await ingest(store, options);
    assertClean(second.summary);
    assert.equal(second.summary.objects_read, 0);
    assert.equal(second.events.length, 0);
  } finally {
    store.close();
  }
});

Deno.test("s3 source reads a file that lands late, inside the lookback, exactly once", async () => {
  await using s3 = await startS3();
  s3.createBucket("late-files");
  const base = daysAgo(1).getTime() + 10 * 3_600_000;
  const at = (minutes: number, tag: string) =>
    trailFile({ time: new Date(base + minutes * 60_000), account: A1, region: "us-east-1", tag });
  const onTime = [at(0, "t0"), at(5, "t5"), at(10, "t10"), at(15, "t15")];
  await s3.put("late-files", onTime);
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "late-files", { lookback: "30m" });
    const first = await ingest(store, options);
    assertClean(first.summary);
    assert.deepEqual(sorted(first.events), ids(onTime));

    // Delivered after the pass, with keys before the tail: one inside the window (15 − 30 min),
    // one in the same day folder but far outside it.
    const late = at(-12, "late");
    const tooLate = at(-120, "too-late");
    await s3.put("late-files", [late, tooLate]);
    const second = await ingest(store, options);
    assertClean(second.summary);
    assert.equal(second.summary.objects_read, 1);
    assert.deepEqual(sorted(second.events), ids([late]));

    const third = await ingest(store, options);
    assert.equal(third.summary.objects_read, 0);
  } finally {
    store.close();
  }
});

Deno.test("s3 source keeps only the keys inside the lookback window in its checkpoint", async () => {
  await using s3 = await startS3();
  s3.createBucket("bounded-state");
  const base = daysAgo(2).getTime();
  const files = Array.from({ length: 48 }, (_, i) =>
    trailFile({
      time: new Date(base + i * 5 * 60_000),
      account: A1,
      region: "us-east-1",
      records: 1,
      tag: `f${i}`,
    }));
  await s3.put("bounded-state", files);
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "bounded-state", { lookback: "1h" });
    const first = await ingest(store, options);
    assertClean(first.summary);
    assert.equal(first.summary.objects_read, 48);
    const seen: number[] = [];
    for await (const entry of store.list<{ t: number }>(["src", "trail", "seen"])) {
      seen.push(entry.value.t);
    }
    const tail = base + 47 * 5 * 60_000;
    // 4 hours of files, 1 hour kept: the 13 keys within the window (a few deletions may wait
    // for the next commit).
    assert.ok(seen.length <= 13 + 2, `expected ~13 seen keys, found ${seen.length}`);
    assert.ok(seen.length >= 13);
    assert.ok(seen.filter((t) => t >= tail - 3_600_000).length === 13);
  } finally {
    store.close();
  }
});

Deno.test("s3 source reads only files from `from` on its first run", async () => {
  await using s3 = await startS3();
  s3.createBucket("from-limit");
  const now = Date.now();
  // One file every 10 hours back from now; "2d" keeps the ones up to 40 h old.
  const files = Array.from({ length: 8 }, (_, k) =>
    trailFile({
      time: new Date(now - k * 10 * 3_600_000),
      account: A1,
      region: "us-east-1",
      tag: `k${k}`,
    }));
  await s3.put("from-limit", files);
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "from-limit", { from: "2d" });
    const first = await ingest(store, options);
    assertClean(first.summary);
    assert.deepEqual(sorted(first.events), ids(files.slice(0, 5)));
    // `from` was resolved once: a later run does not go back further or re-read.
    const second = await ingest(store, options);
    assert.equal(second.summary.objects_read, 0);
  } finally {
    store.close();
  }
  // An ISO time works the same way.
  const iso = await StateStore.open(":memory:");
  try {
    const from = new Date(now - 25 * 3_600_000).toISOString();
    const options = s3SourceOptions(s3.endpoint, "from-limit", { from });
    const run = await ingest(iso, options);
    assert.deepEqual(sorted(run.events), ids(files.slice(0, 3)));
  } finally {
    iso.close();
  }
});

Deno.test("s3 source reads only the allowed accounts and regions", async () => {
  await using s3 = await startS3();
  s3.createBucket("filtered");
  const files = orgTrail({
    accounts: [A1, A2, A3],
    regions: ["us-east-1", "eu-west-1", "ap-south-1"],
    start: daysAgo(1),
    days: 1,
    filesPerDay: 2,
  });
  await s3.put("filtered", files);
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "filtered", {
      accounts: [A1, A3],
      regions: ["eu-west-1"],
    });
    const run = await ingest(store, options);
    assertClean(run.summary);
    const wanted = files.filter((f) =>
      (f.key.includes(`/${A1}/`) || f.key.includes(`/${A3}/`)) && f.key.includes("/eu-west-1/")
    );
    assert.equal(wanted.length, 4);
    assert.deepEqual(sorted(run.events), ids(wanted));
  } finally {
    store.close();
  }
  // A prefix that points inside the layout restricts it the same way.
  const deeper = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "filtered", { prefix: `AWSLogs/${A2}/` });
    const run = await ingest(deeper, options);
    assertClean(run.summary);
    assert.deepEqual(sorted(run.events), ids(files.filter((f) => f.key.includes(`/${A2}/`))));
  } finally {
    deeper.close();
  }
});

Deno.test("s3 source reads a bucket without the CloudTrail layout through a plain listing", async () => {
  await using s3 = await startS3();
  s3.createBucket("plain-logs");
  const file = (key: string, tag: string, n = 2): TrailFile => {
    const eventIds = Array.from({ length: n }, (_, i) => `${tag}-${i}`);
    const records = eventIds.map((id) => rootRecord(id, new Date(), A1, "us-east-1"));
    return { key, body: gzipRecords(records), eventIds, insight: false };
  };
  const files = [
    file("exports/2024/a.json.gz", "a"),
    file("exports/2024/b.json.gz", "b"),
    file("exports/c.json.gz", "c"),
    file("exports/deep/d/e.json.gz", "e"),
  ];
  const outside = file("elsewhere/x.json.gz", "x");
  await s3.put("plain-logs", [...files, outside]);
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "plain-logs", { prefix: "exports/" });
    const first = await ingest(store, options);
    assertClean(first.summary);
    assert.deepEqual(sorted(first.events), ids(files));

    const added = file("exports/2025/f.json.gz", "f");
    await s3.put("plain-logs", [added]);
    await s3.client.send(new DeleteObjectCommand({ Bucket: "plain-logs", Key: files[0].key }));
    const second = await ingest(store, options);
    assertClean(second.summary);
    assert.deepEqual(sorted(second.events), ids([added]));
    // The deleted object's mark is dropped; the others stay.
    const marks: string[] = [];
    for await (const entry of store.list(["src", "trail", "key"])) {
      marks.push(entry.key[3] as string);
    }
    assert.deepEqual(marks.sort(), [...files.slice(1), added].map((f) => f.key).sort());
  } finally {
    store.close();
  }
});

Deno.test("s3 source stops after the current object when aborted and resumes where it stopped", async () => {
  await using s3 = await startS3();
  s3.createBucket("aborted");
  const files = orgTrail({
    accounts: [A1],
    regions: ["us-east-1", "eu-west-1"],
    start: daysAgo(2),
    days: 2,
    filesPerDay: 10,
    records: 3,
  });
  await s3.put("aborted", files);
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(s3.endpoint, "aborted", { concurrency: 4 });
    const controller = new AbortController();
    let count = 0;
    const first = await ingest(store, options, {
      signal: controller.signal,
      onEvent: () => {
        if (++count === 10) controller.abort();
      },
    });
    assert.ok(first.summary.objects_read >= 4 && first.summary.objects_read < files.length);
    const second = await ingest(store, options);
    assertClean(second.summary);
    assert.equal(first.summary.objects_read + second.summary.objects_read, files.length);
    assert.deepEqual(sorted([...first.events, ...second.events]), ids(files));
  } finally {
    store.close();
  }
});

Deno.test("s3 source reads every object exactly once through 503 SlowDown, 500s and resets", async () => {
  await using s3 = await startS3();
  s3.createBucket("flaky");
  const files = orgTrail({
    accounts: [A1, A2],
    regions: ["us-east-1", "eu-west-1"],
    start: daysAgo(1),
    days: 1,
    filesPerDay: 12,
    records: 2,
  });
  await s3.put("flaky", files);
  await using proxy = await startFaultProxy({
    target: s3.endpoint,
    seed: 7,
    rates: { slowDown: 0.1, internalError: 0.07, reset: 0.06, truncate: 0.04, slow: 0.03 },
    slowMs: 100,
  });
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(proxy.url, "flaky", { retryFailedAfter: "0s" });
    const events: Seen[] = [];
    let read = 0;
    for (let pass = 0; pass < 5 && read < files.length; pass++) {
      const run = await ingest(store, options);
      assert.equal(run.summary.duplicates_skipped, 0, "an object was read twice");
      events.push(...run.events);
      read += run.summary.objects_read;
    }
    assert.equal(read, files.length);
    assert.deepEqual(sorted(events), ids(files));
    const counts = proxy.counts();
    for (const kind of ["slowDown", "internalError", "reset", "truncate"]) {
      assert.ok(
        (counts[kind] ?? 0) > 0,
        `no ${kind} fault was injected: ${JSON.stringify(counts)}`,
      );
    }
  } finally {
    store.close();
  }
});

Deno.test("s3 source retries an unreadable object in a later pass after the tail moved past it", async () => {
  await using s3 = await startS3();
  s3.createBucket("retry-later");
  const base = daysAgo(1).getTime();
  const files = Array.from({ length: 6 }, (_, i) =>
    trailFile({
      time: new Date(base + i * 3_600_000),
      account: A1,
      region: "us-east-1",
      tag: `h${i}`,
    }));
  await s3.put("retry-later", files);
  const broken = new URL(`${s3.endpoint}/retry-later/${files[1].key}`).pathname;
  await using proxy = await startFaultProxy({
    target: s3.endpoint,
    rates: { internalError: 1 },
    eligible: (r) => r.method === "GET" && r.path.split("?")[0] === broken,
  });
  const store = await StateStore.open(":memory:");
  try {
    // A 1-minute lookback: once later files are read, the broken one is far outside the window.
    const options = s3SourceOptions(proxy.url, "retry-later", {
      lookback: "1m",
      retryFailedAfter: "0s",
      maxAttempts: 1,
    });
    const first = await ingest(store, options);
    assert.equal(first.summary.objects_read, 5);
    assert.equal(first.summary.objects_failed, 1);
    assert.match(first.summary.failures[0].object, /^s3:\/\/retry-later\/AWSLogs\//);
    assert.equal(first.summary.failures[0].object, `s3://retry-later/${files[1].key}`);
    const failed = await store.get<{ attempts: number; reason: string }>([
      "src",
      "trail",
      "failed",
      files[1].key,
    ]);
    assert.equal(failed?.attempts, 1);
    assert.match(failed!.reason, /InternalError|server error/);

    proxy.setRates({});
    const second = await ingest(store, options);
    assertClean(second.summary);
    assert.equal(second.summary.objects_read, 1);
    assert.deepEqual(sorted(second.events), ids([files[1]]));
    assert.equal(await store.get(["src", "trail", "failed", files[1].key]), undefined);
    const third = await ingest(store, options);
    assert.equal(third.summary.objects_read, 0);
  } finally {
    store.close();
  }
});

Deno.test("s3 source names the missing permission for denied and KMS-encrypted objects", async () => {
  await using s3 = await startS3();
  s3.createBucket("guarded");
  const base = daysAgo(1).getTime();
  const files = ["ok", "denied", "kms"].map((tag, i) =>
    trailFile({ time: new Date(base + i * 600_000), account: A1, region: "us-east-1", tag })
  );
  await s3.put("guarded", files);
  const deniedPath = `/guarded/${files[1].key}`;
  const kmsPath = `/guarded/${files[2].key}`;
  const xml = (code: string, message: string) =>
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === deniedPath) {
      return new Response(xml("AccessDenied", "Access Denied"), { status: 403 });
    }
    if (request.method === "GET" && url.pathname === kmsPath) {
      return new Response(
        xml(
          "AccessDenied",
          "User: arn:aws:iam::111122223333:user/reader is not authorized to perform: kms:Decrypt",
        ),
        { status: 403 },
      );
    }
    return fetch(`${s3.endpoint}${url.pathname}${url.search}`, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
  });
  const store = await StateStore.open(":memory:");
  const lines: string[] = [];
  const restore = captureLog((line) => lines.push(line));
  try {
    const options = s3SourceOptions(`http://127.0.0.1:${server.addr.port}`, "guarded");
    const run = await ingest(store, options);
    restore();
    assert.ok(lines.length > 0);
    const secret = TEST_CREDENTIALS.secretAccessKey;
    assert.ok(!lines.some((l) => l.includes(secret)), "a secret was logged");
    assert.ok(!JSON.stringify(run.summary).includes(secret));
    assert.equal(run.summary.objects_read, 1);
    const reasons = new Map(run.summary.failures.map((f) => [f.object, f.reason]));
    const denied = reasons.get(`s3://guarded/${files[1].key}`) ?? "";
    assert.match(denied, /s3:GetObject/);
    assert.ok(denied.includes(`arn:aws:s3:::guarded/${files[1].key}`), denied);
    const kms = reasons.get(`s3://guarded/${files[2].key}`) ?? "";
    assert.match(kms, /kms:Decrypt/);
    assert.ok(kms.includes(`s3://guarded/${files[2].key}`), kms);
  } finally {
    restore();
    store.close();
    await server.shutdown();
  }
});

Deno.test("s3 source reports a missing bucket and a wrong region as clear startup errors", async () => {
  await using s3 = await startS3();
  const missing = createS3Source(
    s3SourceOptions(s3.endpoint, "no-such-bucket") as never,
    { name: "trail", baseDir: "/" },
  );
  await assert.rejects(missing.preflight!(), /no-such-bucket.*does not exist/);
  await missing.close?.();

  const store = await StateStore.open(":memory:");
  try {
    const run = await ingest(store, s3SourceOptions(s3.endpoint, "no-such-bucket"));
    assert.equal(run.summary.failures.length, 1);
    assert.equal(run.summary.failures[0].object, "source trail");
    assert.match(run.summary.failures[0].reason, /does not exist.*sources\.trail\.bucket/);
  } finally {
    store.close();
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const body = request.method === "HEAD" ? null : `<?xml version="1.0" encoding="UTF-8"?>\n` +
      `<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access ` +
      `must be addressed using the specified endpoint.</Message><Bucket>far-away</Bucket>` +
      `<Endpoint>far-away.s3.eu-central-1.amazonaws.com</Endpoint></Error>`;
    return new Response(body, { status: 301, headers: { "x-amz-bucket-region": "eu-central-1" } });
  });
  try {
    const wrong = createS3Source(
      s3SourceOptions(`http://127.0.0.1:${server.addr.port}`, "far-away", {
        maxAttempts: 1,
      }) as never,
      { name: "trail", baseDir: "/" },
    );
    await assert.rejects(wrong.preflight!(), /eu-central-1/);
    await wrong.close?.();
    const store2 = await StateStore.open(":memory:");
    try {
      const run = await ingest(
        store2,
        s3SourceOptions(`http://127.0.0.1:${server.addr.port}`, "far-away", { maxAttempts: 1 }),
      );
      assert.match(run.summary.failures[0].reason, /sources\.trail\.region to "eu-central-1"/);
    } finally {
      store2.close();
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("s3 source keeps up to `concurrency` downloads in flight", async () => {
  await using s3 = await startS3();
  s3.createBucket("parallel");
  const files = orgTrail({
    accounts: [A1],
    regions: ["us-east-1"],
    start: daysAgo(1),
    days: 1,
    filesPerDay: 24,
    records: 1,
  });
  await s3.put("parallel", files);
  let inFlight = 0;
  let most = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      const download = request.method === "GET" && url.pathname.endsWith(".json.gz");
      if (download) {
        most = Math.max(most, ++inFlight);
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
      try {
        const response = await fetch(`${s3.endpoint}${url.pathname}${url.search}`, {
          method: request.method,
          headers: request.headers,
        });
        return new Response(await response.arrayBuffer(), {
          status: response.status,
          headers: response.headers,
        });
      } finally {
        if (download) inFlight--;
      }
    },
  );
  const store = await StateStore.open(":memory:");
  try {
    const options = s3SourceOptions(`http://127.0.0.1:${server.addr.port}`, "parallel", {
      concurrency: 4,
    });
    const run = await ingest(store, options);
    assertClean(run.summary);
    assert.equal(run.summary.objects_read, files.length);
    assert.ok(most > 1, `downloads ran one at a time (${most})`);
    assert.ok(most <= 4, `${most} downloads in flight, more than concurrency 4`);
  } finally {
    store.close();
    await server.shutdown();
  }
});

Deno.test("s3 source neither skips nor re-reads an object when the process is killed mid-backfill", async () => {
  await using s3 = await startS3();
  s3.createBucket("killed");
  const files = orgTrail({
    accounts: [A1, A2],
    regions: ["us-east-1", "eu-west-1"],
    start: daysAgo(2),
    days: 2,
    filesPerDay: 20,
    records: 4,
  });
  await s3.put("killed", files);
  // Slow downloads down so the backfill takes a few seconds and can be killed in the middle.
  await using proxy = await startFaultProxy({
    target: s3.endpoint,
    seed: 3,
    rates: { slow: 0.5 },
    slowMs: 80,
    eligible: (r) => r.method === "GET" && r.path.includes(".json.gz"),
  });
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-s3-kill-" });
  try {
    const statePath = `${dir}/state.kv`;
    const alertsPath = `${dir}/alerts.jsonl`;
    const configPath = `${dir}/config.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        sources: { trail: s3SourceOptions(proxy.url, "killed", { concurrency: 4 }) },
        detectors: { root_activity: {} },
        sinks: { out: { type: "jsonl", path: alertsPath } },
        geo: { provider: "none" },
        state: { path: statePath, leaseTtl: "1s", leaseWait: "10s" },
      }),
    );
    // Objects committed so far: every record raises one alert, committed with its object.
    const committed = async () => {
      const kv = await Deno.openKv(statePath);
      try {
        let alerts = 0;
        for await (const _ of kv.list({ prefix: ["alert"] })) alerts++;
        return alerts / 4;
      } finally {
        kv.close();
      }
    };
    const args = (n: number) => [
      "ingest",
      "--once",
      "--config",
      configPath,
      "--summary",
      `${dir}/summary-${n}.json`,
    ];
    const kills: number[] = [];
    for (const threshold of [15, 45]) {
      const child = spawnCli(args(kills.length));
      const drained = Promise.all([
        child.stdout.pipeTo(new WritableStream()),
        child.stderr.pipeTo(new WritableStream()),
      ]);
      let read = 0;
      for (let i = 0; i < 600; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        read = await committed().catch(() => 0);
        if (read >= threshold) break;
      }
      child.kill("SIGKILL");
      await child.status;
      await drained;
      kills.push(read);
    }
    assert.ok(
      kills[0] >= 15 && kills[1] > kills[0] && kills[1] < files.length,
      `killed after ${kills.join(", ")} objects`,
    );
    let code = -1;
    const summaries: Summary[] = [];
    for (let run = 0; run < 4 && code !== 0; run++) {
      const result = await runCli(args(10 + run));
      code = result.code;
      assert.ok(code === 0 || code === 3, result.stderr);
      summaries.push(JSON.parse(await Deno.readTextFile(`${dir}/summary-${10 + run}.json`)));
    }
    assert.equal(code, 0);
    for (const summary of summaries) {
      assert.equal(summary.duplicates_skipped, 0, "a restarted run read an object again");
    }
    // Alerts of committed objects may be delivered twice if a process died while appending;
    // by alert id, every event must be there exactly once.
    const alerts = new Map<string, { event_ids: string[] }>();
    for (const line of (await Deno.readTextFile(alertsPath)).split("\n")) {
      if (!line.trim()) continue;
      const alert = JSON.parse(line);
      alerts.set(alert.id, alert);
    }
    const eventIds = [...alerts.values()].flatMap((a) => a.event_ids).sort();
    assert.deepEqual(eventIds, ids(files));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("CloudTrail keys: layout root, file times, digests and listing start keys", () => {
  assert.deepEqual(layoutRoot(""), { root: "AWSLogs/", within: "AWSLogs/" });
  assert.deepEqual(layoutRoot("audit"), { root: "audit/AWSLogs/", within: "audit/AWSLogs/" });
  assert.deepEqual(layoutRoot("audit/AWSLogs/o-a1b2c3d4e5/"), {
    root: "audit/AWSLogs/",
    within: "audit/AWSLogs/o-a1b2c3d4e5/",
  });
  const rel =
    "2026/11/18/111122223333_CloudTrail_us-east-1_20261118T0605Z_b54cb98506d37a76.json.gz";
  assert.deepEqual(parseStreamKey(rel), {
    namePrefix: "111122223333_CloudTrail_us-east-1_",
    time: Date.UTC(2026, 10, 18, 6, 5),
  });
  assert.equal(parseStreamKey("2026/11/18/"), undefined);
  assert.equal(parseStreamKey("2026/11/18/notes.txt"), undefined);
  const start = startKeyFor(Date.UTC(2026, 10, 18, 6, 5, 42), "111122223333_CloudTrail_us-east-1_");
  assert.equal(start, "2026/11/18/111122223333_CloudTrail_us-east-1_20261118T0605Z");
  assert.ok(rel > start, "a file stamped in the start minute sorts after the start key");
  assert.equal(startKeyFor(Date.UTC(2026, 0, 2, 3)), "2026/01/02/");
  assert.ok(isDigestKey("AWSLogs/1/CloudTrail-Digest/us-east-1/2026/01/01/x.json.gz"));
  assert.ok(!isDigestKey(`AWSLogs/1/CloudTrail/us-east-1/2026/01/01/${rel.slice(11)}`));
});
