import assert from "node:assert/strict";
import { resolveConfig } from "../core/config.ts";
import { alertId, fitAlert, Runtime } from "../core/pipeline.ts";
import { type Commit, StateStore } from "../core/state.ts";
import type { Alert } from "../core/types.ts";
import { staticGeoProvider } from "../mapping/geo.ts";
import { ctRecord, rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";
import type { LoginDay } from "../detectors/impossible_travel.ts";

interface Harness {
  dir: string;
  alertsFile: string;
  runtime(store: StateStore): Promise<Runtime>;
  delivered(): Promise<Alert[]>;
  cleanup(): Promise<void>;
}

async function harness(): Promise<Harness> {
  const tmp = await tempDir();
  const dir = `${tmp.path}/logs`;
  await Deno.mkdir(dir);
  const alertsFile = `${tmp.path}/alerts.jsonl`;
  const config = resolveConfig({
    sources: { logs: { type: "local", path: dir } },
    detectors: { root_activity: {}, console_login_no_mfa: {} },
    sinks: { out: { type: "jsonl", path: alertsFile } },
  }, "/");
  return {
    dir,
    alertsFile,
    runtime: (store) =>
      Runtime.create(config, {
        store,
        geo: staticGeoProvider({ "81.2.69.142": { country: "GB" } }),
      }),
    async delivered() {
      const text = await Deno.readTextFile(alertsFile).catch(() => "");
      return text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
    },
    cleanup: tmp.cleanup,
  };
}

/** A runtime over `${tmp}/logs` with `detectors`, a jsonl sink, and the test IP in London. */
function londonRuntime(
  tmp: string,
  store: StateStore,
  detectors: Record<string, Record<string, never>>,
): Promise<Runtime> {
  const config = resolveConfig({
    sources: { logs: { type: "local", path: `${tmp}/logs` } },
    detectors,
    sinks: { out: { type: "jsonl", path: `${tmp}/alerts.jsonl` } },
  }, "/");
  return Runtime.create(config, {
    store,
    geo: staticGeoProvider({ "81.2.69.142": { country: "GB", lat: 51.5, lon: -0.1 } }),
  });
}

/** A console login of alice's (with MFA). */
function aliceLogin(eventTime: string) {
  return ctRecord({
    eventTime,
    eventSource: "signin.amazonaws.com",
    eventName: "ConsoleLogin",
    eventType: "AwsConsoleSignIn",
    responseElements: { ConsoleLogin: "Success" },
    additionalEventData: { MFAUsed: "Yes" },
  });
}

/** A call of bob's signed with access key `key`. */
function keyCall(key: string, eventTime: string) {
  return ctRecord({
    eventTime,
    userIdentity: {
      type: "IAMUser",
      principalId: "AIDAEXAMPLE",
      arn: "arn:aws:iam::111122223333:user/bob",
      accountId: "111122223333",
      accessKeyId: key,
      userName: "bob",
    },
  });
}

Deno.test("pipeline: alerts carry the alert JSON fields, deterministic ids and geo", async () => {
  const h = await harness();
  const store = await StateStore.open(":memory:");
  try {
    const login = rootLogin({ eventID: "evt-root-1", additionalEventData: { MFAUsed: "No" } });
    await writeFiles(h.dir, { "a.json.gz": trailFile([login]) });
    const runtime = await h.runtime(store);
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.equal(summary.alerts, 2);
    const alerts = await h.delivered();
    assert.deepEqual(alerts.map((a) => a.detector).sort(), [
      "console_login_no_mfa",
      "root_activity",
    ]);
    for (const alert of alerts) {
      assert.deepEqual(Object.keys(alert).sort(), [
        "account_id",
        "details",
        "detector",
        "event_ids",
        "id",
        "ip",
        "region",
        "severity",
        "time",
        "title",
        "user",
      ]);
      assert.equal(alert.id, alertId(alert.detector, ["evt-root-1"], "", "111122223333"));
      assert.deepEqual(alert.event_ids, ["evt-root-1"]);
      assert.equal(alert.user, "root");
      assert.equal(alert.ip, "81.2.69.142");
      assert.equal(alert.details.country, "GB");
      assert.equal(alert.account_id, "111122223333");
    }
    assert.equal(alerts.find((a) => a.detector === "console_login_no_mfa")?.severity, "critical");
  } finally {
    store.close();
    await h.cleanup();
  }
});

Deno.test("pipeline: events are deduplicated by eventID and account across runs and files", async () => {
  const h = await harness();
  const store = await StateStore.open(":memory:");
  try {
    const a = rootLogin({ eventID: "dup-1" });
    const b = rootLogin({ eventID: "dup-2" });
    const otherAccount = rootLogin({ eventID: "dup-1", recipientAccountId: "999988887777" });
    await writeFiles(h.dir, {
      "1.json": trailFile([a, b], false),
      "2.json": trailFile([a], false),
    });
    let runtime = await h.runtime(store);
    const first = await runtime.runOnce();
    await runtime.close();
    assert.equal(first.events, 2);
    assert.equal(first.duplicates_skipped, 1);
    await writeFiles(h.dir, { "3.json": trailFile([b, otherAccount], false) });
    runtime = await h.runtime(store);
    const second = await runtime.runOnce();
    await runtime.close();
    assert.equal(second.events, 1);
    assert.equal(second.duplicates_skipped, 1);
    const ids = (await h.delivered()).map((x) => x.id);
    assert.equal(ids.length, 3);
    assert.equal(new Set(ids).size, 3);
  } finally {
    store.close();
    await h.cleanup();
  }
});

Deno.test("pipeline: a crash between alert and checkpoint never duplicates or loses an alert", async () => {
  const h = await harness();
  const store = await StateStore.open(":memory:");
  try {
    const files: Record<string, Uint8Array> = {};
    for (let i = 0; i < 5; i++) {
      files[`${i}.json.gz`] = trailFile([rootLogin(), rootLogin(), ctRecord()]);
    }
    await writeFiles(h.dir, files);
    // Crash (the commit never happens) at the third object's commit.
    const realCommit = store.commit.bind(store);
    let commits = 0;
    store.commit = (commit: Commit) => {
      if (++commits === 3) return Promise.reject(new Error("simulated crash before commit"));
      return realCommit(commit);
    };
    let runtime = await h.runtime(store);
    const crashed = await runtime.runOnce();
    await runtime.close();
    assert.equal(crashed.objects_read, 2);
    assert.match(crashed.failures.at(-1)!.reason, /simulated crash/);
    store.commit = realCommit;
    runtime = await h.runtime(store);
    const resumed = await runtime.runOnce();
    await runtime.close();
    assert.equal(resumed.objects_read, 3);
    assert.deepEqual(resumed.failures, []);
    const delivered = await h.delivered();
    assert.equal(delivered.length, 10);
    assert.equal(new Set(delivered.map((a) => a.id)).size, 10);
  } finally {
    store.close();
    await h.cleanup();
  }
});

Deno.test("pipeline: alerts committed but not delivered before a crash are delivered once later", async () => {
  const h = await harness();
  const store = await StateStore.open(":memory:");
  try {
    await writeFiles(h.dir, { "a.json": trailFile([rootLogin(), rootLogin()], false) });
    let runtime = await h.runtime(store);
    await runtime.pass("logs"); // commits alerts to the outbox, no delivery ("killed" here)
    await runtime.close();
    assert.deepEqual(await h.delivered(), []);
    runtime = await h.runtime(store);
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.equal(summary.objects_read, 0);
    assert.equal((await h.delivered()).length, 2);
    runtime = await h.runtime(store);
    await runtime.runOnce();
    await runtime.close();
    assert.equal((await h.delivered()).length, 2);
  } finally {
    store.close();
    await h.cleanup();
  }
});

Deno.test("pipeline: record failures are listed with object, record number and reason; the rest goes on", async () => {
  const h = await harness();
  const store = await StateStore.open(":memory:");
  try {
    const good = rootLogin();
    const noTime = ctRecord();
    delete noTime.eventTime;
    await writeFiles(h.dir, {
      "a.json": JSON.stringify({ Records: [good, noTime, 17, ctRecord({ userIdentity: null })] }),
      "b.json.gz": trailFile([rootLogin()]),
    });
    const runtime = await h.runtime(store);
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.equal(summary.objects_read, 2);
    assert.equal(summary.events, 2);
    assert.equal(summary.events_failed, 3);
    const reasons = summary.failures.map((f) => `${f.object.split("/").pop()}: ${f.reason}`);
    assert.match(reasons[0], /^a\.json: record 2 \(byte \d+\): missing eventTime$/);
    assert.match(reasons[1], /^a\.json: record 3 \(byte \d+\): record is not an object/);
    assert.match(
      reasons[2],
      /^a\.json: record 4 \(byte \d+\): userIdentity: expected an object, got null$/,
    );
  } finally {
    store.close();
    await h.cleanup();
  }
});

Deno.test("pipeline: a payload that is not valid JSON fails its record when something reads it", async () => {
  const h = await harness();
  const store = await StateStore.open(":memory:");
  try {
    const bad = (record: Record<string, unknown>, key: string) =>
      JSON.stringify({ ...record, [key]: { placeholder: 1 } }).replace(
        '{"placeholder":1}',
        '{"x": tru}',
      );
    // A console login's outcome is read from responseElements: that record fails, naming it.
    // A call's requestParameters is read by nothing here: that record is processed.
    await writeFiles(h.dir, {
      "a.json": `{"Records":[${bad(rootLogin(), "responseElements")},${
        bad(ctRecord(), "requestParameters")
      },${JSON.stringify(rootLogin())}]}`,
    });
    const runtime = await h.runtime(store);
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.equal(summary.events, 2);
    assert.equal(summary.events_failed, 1);
    assert.match(
      summary.failures[0].reason,
      /^record 1 \(byte \d+\): responseElements: invalid JSON: /,
    );
  } finally {
    store.close();
    await h.cleanup();
  }
});

Deno.test("pipeline: a big object is committed in chunks and resumes after the last chunk", async () => {
  const h = await harness();
  const store = await StateStore.open(":memory:");
  try {
    const records = Array.from(
      { length: 45_000 },
      (_, i) => (i % 9000 === 0 ? rootLogin() : ctRecord()),
    );
    await writeFiles(h.dir, { "big.json.gz": trailFile(records) });
    const realCommit = store.commit.bind(store);
    const commitSizes: number[] = [];
    store.commit = (commit: Commit) => {
      commitSizes.push(commit.size);
      // Crash at the third commit: two chunks (40,000 records) are in; the third never lands.
      if (commitSizes.length === 3) return Promise.reject(new Error("simulated crash"));
      return realCommit(commit);
    };
    let runtime = await h.runtime(store);
    await runtime.pass("logs");
    await runtime.close();
    const progress = [];
    for await (const e of store.list(["progress"])) progress.push(e.value);
    assert.deepEqual(progress.map((p) => (p as { records: number }).records), [40_000]);
    store.commit = realCommit;
    runtime = await h.runtime(store);
    const resumed = await runtime.runOnce();
    await runtime.close();
    assert.equal(resumed.events, 5_000);
    assert.equal(resumed.objects_read, 1);
    const delivered = await h.delivered();
    assert.equal(delivered.length, 5);
    assert.equal(new Set(delivered.map((a) => a.id)).size, 5);
    const left = [];
    for await (const e of store.list(["progress"])) left.push(e);
    assert.equal(left.length, 0);
  } finally {
    store.close();
    await h.cleanup();
  }
});

Deno.test("pipeline: --dry-run style runtime writes nothing", async () => {
  const h = await harness();
  const path = `${h.dir}/../state.kv`;
  try {
    await writeFiles(h.dir, { "a.json": trailFile([rootLogin()], false) });
    const store = await StateStore.open(path, { dryRun: true });
    const runtime = await h.runtime(store);
    const summary = await runtime.runOnce();
    await runtime.close();
    store.close();
    assert.equal(summary.alerts, 1);
    const check = await StateStore.open(path);
    const keys = [];
    for await (const e of check.list([])) keys.push(e.key);
    check.close();
    assert.deepEqual(keys, []);
    assert.deepEqual(await h.delivered(), []);
  } finally {
    await h.cleanup();
  }
});

Deno.test("fitAlert() trims oversized details to fit a KV value", () => {
  const alert: Alert = {
    id: "x",
    detector: "rules",
    severity: "high",
    title: "t",
    time: "2026-11-18T00:00:00Z",
    event_ids: ["e"],
    details: { matched: { blob: "x".repeat(200_000) }, rule_id: "r-1" },
  };
  const fitted = fitAlert(alert);
  assert.ok(JSON.stringify(fitted).length < 60_000);
  assert.equal(fitted.details.rule_id, "r-1");
  assert.match(String(fitted.details.truncated), /matched/);
});

Deno.test("pipeline: lazy detector writes land with their object's last commit", async () => {
  const tmp = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    const dir = `${tmp.path}/logs`;
    const at = (minute: number) => `2026-11-18T08:${String(minute).padStart(2, "0")}:00Z`;
    const login = (minute: number) => aliceLogin(at(minute));
    // The first object's call and login create state; the second's only stretch it (lazy
    // writes); the third ends the pass.
    await writeFiles(dir, {
      "a.json.gz": trailFile([ctRecord({ eventTime: at(0) }), login(1)]),
      "b.json.gz": trailFile([ctRecord({ eventTime: at(5) }), login(6)]),
      "c.json.gz": trailFile([ctRecord({ eventTime: at(50), userIdentity: { type: "Root" } })]),
    });
    const runtime = await londonRuntime(tmp.path, store, {
      impossible_travel: {},
      atypical_country: {},
    });
    // What KV holds once the second object's commit has landed (before the pass ends).
    const seen: Record<string, unknown> = {};
    const { source } = runtime.sources.get("logs")!;
    source.committed = async (object) => {
      if (!object.id.endsWith("b.json.gz")) return;
      const get = async (key: Deno.KvKey) => (await store.kv.get(key)).value;
      seen.key = await get(["det", "impossible_travel", "key", "AKIAEXAMPLE0000000001"]);
      seen.user = await get(["det", "impossible_travel", "user", "111122223333", "alice"]);
      seen.atypical = await get(["det", "atypical_country", "user", "111122223333", "alice"]);
    };
    await runtime.runOnce();
    await runtime.close();
    const minute = (m: number) => Date.parse(at(m));
    const visits = (seen.key as { v: [number, number][] }).v;
    assert.deepEqual(visits.map(([a, b]) => [a, b]), [[minute(0), minute(6)]]);
    const days = (seen.user as { d: [number, number][] }).d;
    assert.deepEqual(days.map(([, count]) => count), [2]);
    const runs = (seen.atypical as { c: Record<string, number[][]> }).c.GB;
    assert.deepEqual(runs.map((r) => [r[0], r[4]]), [[minute(1), minute(6)]]);
  } finally {
    store.close();
    await tmp.cleanup();
  }
});

Deno.test("pipeline: an object's last commit keeps room for its alerts among lazy writes", async () => {
  const tmp = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    const dir = `${tmp.path}/logs`;
    const keys = Array.from({ length: 1000 }, (_, i) => `AKIAEXAMPLE${String(i).padStart(9, "0")}`);
    const call = (key: string, minute: number) => keyCall(key, `2026-11-18T08:0${minute}:00Z`);
    // The second object only stretches each key's visit (1,000 lazy writes for its last
    // commit), and its last chunk raises 20 alerts: the lazy writes must leave them room.
    await writeFiles(dir, {
      "a.json.gz": trailFile(keys.map((k) => call(k, 0))),
      "b.json.gz": trailFile([
        ...keys.map((k) => call(k, 1)),
        ...Array.from({ length: 20 }, () => rootLogin()),
      ]),
    });
    const runtime = await londonRuntime(tmp.path, store, {
      impossible_travel: {},
      root_activity: {},
    });
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.deepEqual(summary.failures, []);
    assert.equal(summary.objects_read, 2);
    assert.equal(summary.alerts, 20);
    const visits = [];
    for await (const e of store.list(["det", "impossible_travel", "key"])) visits.push(e.value);
    assert.equal(visits.length, 1000);
    const ends = visits.map((v) => (v as { v: [number, number][] }).v[0][1]);
    assert.ok(ends.every((t) => t === Date.parse("2026-11-18T08:01:00Z")), "every stretch landed");
  } finally {
    store.close();
    await tmp.cleanup();
  }
});

Deno.test("pipeline: a commit writes state as of its chunk's end, though events go on while it waits", async () => {
  const tmp = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    const dir = `${tmp.path}/logs`;
    const at = (i: number) => new Date(Date.parse("2026-11-18T08:00:00Z") + i * 1000).toISOString();
    // 3,000 calls with keys of their own (a new state value each: chunks close every ~900
    // records), and every 50th record a console login of alice (her day's login list grows).
    const records = Array.from(
      { length: 3000 },
      (_, i) =>
        i % 50 === 49
          ? aliceLogin(at(i))
          : keyCall(`AKIAEXAMPLE${String(i).padStart(9, "0")}`, at(i)),
    );
    await writeFiles(dir, { "a.json.gz": trailFile(records) });
    const runtime = await londonRuntime(tmp.path, store, { impossible_travel: {} });
    // Each commit lands 100 ms late; once it has, KV must hold alice's logins up to the
    // commit's progress, not the ones the pipeline went on with meanwhile.
    const day = Math.floor(Date.parse(at(0)) / 86_400_000);
    const checked: [number, number][] = [];
    const realCommit = store.commit.bind(store);
    store.commit = async (commit: Commit) => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      await realCommit(commit);
      const progress = commit.mutations.find((m) => m.key[0] === "progress");
      if (progress?.type !== "set") return;
      const upTo = (progress.value as { records: number }).records;
      const logins = await store.kv.get<LoginDay>(
        ["det", "impossible_travel", "user", "111122223333", "alice", day],
      );
      checked.push([logins.value?.i.length ?? 0, Math.floor(upTo / 50)]);
    };
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.deepEqual(summary.failures, []);
    assert.ok(checked.length >= 2, `only ${checked.length} mid-object commits`);
    for (const [stored, expected] of checked) assert.equal(stored, expected);
  } finally {
    store.close();
    await tmp.cleanup();
  }
});

Deno.test("pipeline: a pass whose lease another process took stops after the object in hand and says so", async () => {
  const tmp = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    await writeFiles(`${tmp.path}/logs`, {
      "a.json.gz": trailFile([ctRecord()]),
      "b.json.gz": trailFile([ctRecord()]),
      "c.json.gz": trailFile([ctRecord()]),
    });
    const config = resolveConfig({
      sources: { logs: { type: "local", path: `${tmp.path}/logs` } },
      detectors: { root_activity: {} },
      sinks: { out: { type: "jsonl", path: `${tmp.path}/alerts.jsonl` } },
      state: { leaseTtl: "300ms" },
    }, "/");
    const runtime = await Runtime.create(config, { store });
    // Once the first object is done, another process takes the lease (renewed every 100 ms by
    // this one), before the source offers the next object 400 ms later.
    const { source } = runtime.sources.get("logs")!;
    const listed = source.objects.bind(source);
    source.objects = async function* (run) {
      let offered = 0;
      for await (const object of listed(run)) {
        if (offered++ === 1) {
          const other = { owner: "other", pid: 1, host: "elsewhere", since: "", expires: 0 };
          await store.kv.set(["lease"], { ...other, expires: Date.now() + 60_000 });
          await new Promise((resolve) => setTimeout(resolve, 400));
        }
        yield object;
      }
    };
    const summary = await runtime.pass("logs");
    await runtime.close();
    assert.equal(
      summary.objects_read,
      2,
      "the object in hand is finished, the next is not started",
    );
    assert.deepEqual(summary.failures.map((f) => f.object), ["source logs"]);
    assert.match(summary.failures[0].reason, /lease was lost/);
    assert.equal((await store.kv.get<{ owner: string }>(["lease"])).value?.owner, "other");
  } finally {
    store.close();
    await tmp.cleanup();
  }
});
