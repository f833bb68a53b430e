import assert from "node:assert/strict";
import { resolveConfig } from "../core/config.ts";
import { Runtime } from "../core/pipeline.ts";
import { eventHash, packPrepared, type Prepared, unpackPrepared } from "../core/prepare.ts";
import { StateStore } from "../core/state.ts";
import type { Alert, NormalizedEvent } from "../core/types.ts";
import { staticGeoProvider } from "../mapping/geo.ts";
import { ctRecord, rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";

Deno.test("packPrepared()/unpackPrepared() round-trip every event field, errors and drafts in order", () => {
  const full: NormalizedEvent = {
    timestamp: "2026-11-18T08:00:00Z",
    time: 1,
    event_id: "e1",
    event_name: "ConsoleLogin",
    event_source: "signin.amazonaws.com",
    event_type: "AwsConsoleSignIn",
    username: "alice",
    user_type: "IAMUser",
    session_name: "s",
    user_arn: "arn",
    access_key_id: "AKIA",
    ip: "81.2.69.142",
    source_host: "h",
    invoked_by: "i",
    region: "us-east-1",
    account_id: "1",
    agent: "ua",
    outcome: "failure",
    error_code: "AccessDenied",
    mfa_used: "No",
    insight: true,
    country: "GB",
    city: "London",
    lat: 51.5,
    lon: -0.1,
    custom: { team: "x", nested: { a: [1] } },
    raw: {},
  };
  const fieldsOfType = Object.keys(full).sort();
  const sparse: NormalizedEvent = {
    ...full,
    event_id: "e2",
    session_name: undefined,
    custom: undefined,
    insight: undefined,
  };
  const items: Prepared[] = [
    { index: 1, error: "bad record", offset: 10 },
    {
      index: 2,
      event: full,
      drafts: [[3, { severity: "high", title: "t", details: { x: 1 } }]],
      failure: "detector x failed",
    },
    { index: 3, error: "record is not an object", offset: 99 },
    { index: 4, event: sparse, drafts: undefined },
  ];
  const out = unpackPrepared(structuredClone(packPrepared(items)));
  assert.deepEqual(out.map((i) => i.index), [1, 2, 3, 4]);
  assert.deepEqual(out[0], items[0]);
  assert.deepEqual(out[2], items[2]);
  assert.deepEqual(Object.keys(out[1].event!).sort(), fieldsOfType);
  assert.deepEqual(out[1].event, full);
  const [first, second] = [out[1], items[1]];
  assert.ok(first.event && second.event);
  assert.deepEqual(first.drafts, second.drafts);
  assert.equal(first.failure, "detector x failed");
  assert.deepEqual(out[3].event, sparse);
  assert.equal(out[3].event ? out[3].drafts : "no event", undefined);
  // Each event carries the dedupe hash the worker computed.
  for (const item of [out[1], out[3]]) {
    assert.ok(item.event && item.hashes && item.slot !== undefined);
    const at = 2 * item.slot;
    assert.deepEqual([item.hashes[at], item.hashes[at + 1]], eventHash(item.event));
  }
  assert.notDeepEqual(eventHash(full), eventHash(sparse));
});

Deno.test("packPrepared() sends a repeated string once per batch, and each batch its own table", () => {
  const event = (id: string, username: string, agent: string): Prepared => ({
    index: 1,
    event: {
      timestamp: "2026-11-18T08:00:00Z",
      time: 1,
      event_id: id,
      event_name: "GetObject",
      event_source: "s3.amazonaws.com",
      username,
      agent,
      outcome: "success",
      raw: {},
    },
    drafts: undefined,
  });
  const long =
    "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64.amzn.2023 prompt/off command/s3.cp".repeat(
      2,
    );
  const first = packPrepared([
    event("e1", "alice", long),
    event("e2", "bob", long),
    event("e3", "alice", long),
  ]);
  const count = (value: string) => first.strings.filter((s) => s === value).length;
  assert.deepEqual([count("alice"), count("bob"), count(long), count("GetObject")], [1, 1, 1, 1]);
  // The next batch starts from an empty table: its codes point into its own strings.
  const second = unpackPrepared(
    packPrepared([event("e4", "bob", "ua"), event("e5", "carol", long)]),
  );
  assert.deepEqual(second.map((p) => [p.event?.username, p.event?.agent]), [["bob", "ua"], [
    "carol",
    long,
  ]]);
});

/** One pass; `warm`: the workers are up before it starts (else it decodes here until they are). */
async function runWith(workers: number, dir: string, warm = true) {
  const config = resolveConfig({
    sources: {
      logs: { type: "local", path: dir, customMapping: { team: "requestParameters.team" } },
    },
    detectors: { root_activity: {}, console_login_no_mfa: {}, rules: {} },
    sinks: { out: { type: "jsonl", path: `${dir}/../alerts-${workers}.jsonl` } },
    pipeline: { workers },
  }, "/");
  const store = await StateStore.open(":memory:");
  const alerts: Alert[] = [];
  const runtime = await Runtime.create(config, {
    store,
    geo: staticGeoProvider({ "81.2.69.142": { country: "GB" } }),
    onAlert: (a) => alerts.push(a),
  });
  try {
    if (warm) await runtime.warmUp();
    const summary = await runtime.pass("logs");
    return { summary, alerts };
  } finally {
    await runtime.close();
    store.close();
  }
}

Deno.test("decode workers give the same events, failures and alerts as the main thread", async () => {
  const tmp = await tempDir();
  try {
    const dir = `${tmp.path}/logs`;
    const many = Array.from(
      { length: 3000 },
      (_, i) =>
        i % 500 === 0
          ? rootLogin({ additionalEventData: { MFAUsed: "No" } })
          : i % 250 === 0
          ? ctRecord({ eventSource: "cloudtrail.amazonaws.com", eventName: "StopLogging" })
          : ctRecord({ requestParameters: { team: `t${i % 7}` }, eventName: "ListBuckets" }),
    );
    // A rule that reads requestParameters: the decoder deferred it, the rule has it parsed.
    const openedTo = {
      groupId: "sg-1",
      ipPermissions: { items: [{ ipRanges: { items: [{ cidrIp: "0.0.0.0/0" }] } }] },
    };
    many[1234] = ctRecord({
      eventSource: "ec2.amazonaws.com",
      eventName: "AuthorizeSecurityGroupIngress",
      requestParameters: openedTo,
    });
    const noName = ctRecord();
    delete noName.eventName;
    await writeFiles(dir, {
      "a.json.gz": trailFile(many.slice(0, 1500)),
      "b.json.gz": trailFile(many.slice(1500)),
      "c.json": JSON.stringify({ Records: [rootLogin(), noName, 42, rootLogin()] }),
      "d.json.gz": trailFile([rootLogin(), rootLogin()]).slice(0, 60),
      "e.jsonl": [rootLogin(), rootLogin()].map((r) => JSON.stringify(r)).join("\n"),
      // Broken after 1,100 records: those are processed, with or without workers, and then the
      // object fails (a worker sends what it decoded before the failure first).
      "f.json": `{"Records":[${
        Array.from({ length: 1100 }, (_, i) => JSON.stringify(ctRecord({ eventName: `Get${i}` })))
          .join(",")
      },{"eventName": ]}]}`,
    });
    const main = await runWith(0, dir);
    const two = await runWith(2, dir);
    const one = await runWith(1, dir);
    // Not warmed up: the first objects are decoded here, the rest by the workers once they are up.
    const handedOver = await runWith(2, dir, false);
    for (const other of [one, two, handedOver]) {
      assert.deepEqual(
        { ...other.summary, duration_s: 0 },
        { ...main.summary, duration_s: 0 },
      );
      assert.deepEqual(other.alerts.map((a) => a.id), main.alerts.map((a) => a.id));
      assert.deepEqual(other.alerts, main.alerts);
    }
    assert.equal(main.summary.objects_read, 4);
    assert.equal(main.summary.objects_failed, 2);
    // a and b, c's two logins, e's two and f's 1,100 before its break.
    assert.equal(main.summary.events, 3000 + 2 + 2 + 1100);
    assert.equal(main.summary.events_failed, 2);
    assert.ok(main.alerts.some((a) => a.detector === "rules"));
    assert.ok(main.alerts.some((a) => a.detector === "console_login_no_mfa"));
    const opened = main.alerts.find((a) => a.title === "Security group opened to 0.0.0.0/0");
    assert.deepEqual(
      (opened?.details.matched as Record<string, unknown> | undefined)?.requestParameters,
      openedTo,
    );
  } finally {
    await tmp.cleanup();
  }
});

/** A runtime with one decode worker over a.json.gz, b.json.gz and c.json.gz in `tmp`/logs. */
async function threeObjects(tmp: string) {
  const dir = `${tmp}/logs`;
  await writeFiles(dir, {
    "a.json.gz": trailFile([rootLogin()]),
    "b.json.gz": trailFile([rootLogin()]),
    "c.json.gz": trailFile([rootLogin()]),
  });
  const config = resolveConfig({
    sources: { logs: { type: "local", path: dir } },
    detectors: { root_activity: {} },
    sinks: { out: { type: "jsonl", path: `${tmp}/alerts.jsonl` } },
    pipeline: { workers: 1 },
  }, "/");
  const store = await StateStore.open(":memory:");
  const runtime = await Runtime.create(config, { store, geo: staticGeoProvider({}) });
  return { runtime, store };
}

Deno.test("workers that come up while this thread decodes an object start on the next ones at once", async () => {
  const tmp = await tempDir();
  try {
    // Not warmed up: the pass starts on a.json.gz here while the worker is starting.
    const { runtime, store } = await threeObjects(tmp.path);
    try {
      const opened: string[] = [];
      let bOpened = () => {};
      const bWasOpened = new Promise<void>((resolve) => (bOpened = resolve));
      const source = runtime.sources.get("logs")!.source;
      const objects = source.objects.bind(source);
      const checkpoint = source.checkpoint.bind(source);
      source.checkpoint = (object, commit, failure) =>
        checkpoint({ ...object, path: object.id }, commit, failure);
      source.objects = async function* (run) {
        for await (const object of objects(run)) {
          const name = object.id.split("/").pop()!;
          // Streamed (no path), so opening is seen; a.json.gz ends only once b.json.gz was opened
          // (or after 5 s: then the worker waited for this thread's object).
          yield {
            ...object,
            path: undefined,
            open: async () => {
              opened.push(name);
              if (name === "b.json.gz") bOpened();
              const bytes = await Deno.readFile(object.id);
              return new ReadableStream<Uint8Array>({
                async start(controller) {
                  controller.enqueue(bytes);
                  if (name === "a.json.gz") {
                    let timer: ReturnType<typeof setTimeout> | undefined;
                    await Promise.race([
                      bWasOpened,
                      new Promise((resolve) => (timer = setTimeout(resolve, 5000))),
                    ]);
                    clearTimeout(timer);
                    opened.push("a.json.gz read");
                  }
                  controller.close();
                },
              });
            },
          };
        }
      };
      const summary = await runtime.pass("logs");
      assert.equal(summary.objects_read, 3);
      assert.equal(summary.events, 3);
      assert.deepEqual(opened, ["a.json.gz", "b.json.gz", "a.json.gz read", "c.json.gz"]);
    } finally {
      await runtime.close();
      store.close();
    }
  } finally {
    await tmp.cleanup();
  }
});

Deno.test("a decode worker that cannot read a local file fails that object, not the pass", async () => {
  const tmp = await tempDir();
  try {
    const { runtime, store } = await threeObjects(tmp.path);
    try {
      await runtime.warmUp();
      // The file goes away after the source listed it, before the worker opens it.
      const source = runtime.sources.get("logs")!.source;
      const objects = source.objects.bind(source);
      source.objects = async function* (run) {
        for await (const object of objects(run)) {
          if (object.id.endsWith("b.json.gz")) await Deno.remove(object.id);
          yield object;
        }
      };
      const summary = await runtime.pass("logs");
      assert.equal(summary.objects_read, 2);
      assert.equal(summary.objects_failed, 1);
      assert.equal(summary.events, 2);
      const [failure] = summary.failures;
      assert.match(failure.reason, /^Cannot read .*b\.json\.gz: /);
    } finally {
      await runtime.close();
      store.close();
    }
  } finally {
    await tmp.cleanup();
  }
});

Deno.test("decode workers and the main thread recognise each other's events as duplicates", async () => {
  const tmp = await tempDir();
  try {
    const dir = `${tmp.path}/logs`;
    const records = Array.from({ length: 50 }, () => ctRecord());
    const store = await StateStore.open(`${tmp.path}/state.kv`);
    try {
      // The same events come again in a later object, read with the other decode setting.
      for (const [workers, name] of [[0, "a"], [2, "b"], [0, "c"]] as const) {
        await writeFiles(dir, { [`${name}.json.gz`]: trailFile(records) });
        const config = resolveConfig({
          sources: { logs: { type: "local", path: dir } },
          detectors: { root_activity: {} },
          sinks: { out: { type: "jsonl", path: `${tmp.path}/alerts.jsonl` } },
          pipeline: { workers },
        }, "/");
        const runtime = await Runtime.create(config, { store, geo: staticGeoProvider({}) });
        try {
          await runtime.warmUp();
          const summary = await runtime.pass("logs");
          assert.equal(summary.objects_read, 1, name);
          assert.equal(summary.events, name === "a" ? 50 : 0, name);
          assert.equal(summary.duplicates_skipped, name === "a" ? 0 : 50, name);
        } finally {
          await runtime.close();
        }
      }
    } finally {
      store.close();
    }
  } finally {
    await tmp.cleanup();
  }
});
