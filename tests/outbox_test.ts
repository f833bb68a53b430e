import assert from "node:assert/strict";
import { captureLog } from "../core/log.ts";
import { Commit, StateStore } from "../core/state.ts";
import type { Alert, Severity } from "../core/types.ts";
import type { Sink } from "../sinks/mod.ts";
import { type Options, Outbox, type PendingEntry, type Route } from "../sinks/outbox.ts";
import { createWebhookSink } from "../sinks/webhook.ts";
import { Receiver, sampleAlert } from "./helpers/receiver.ts";

const ROOT = new URL("../", import.meta.url);

function route(sink: Sink, overrides: Partial<Route> = {}): Route {
  return { sink, minSeverity: "info", excludeDetectors: [], group: false, ...overrides };
}

function webhook(url: string, name = "hook"): Sink {
  return createWebhookSink({ url, timeout: "2s" }, { name, baseDir: "." });
}

/** A sink that records what it was given (for filter tests that need no HTTP). */
function recordingSink(name: string): Sink & { messages: Alert[][] } {
  const messages: Alert[][] = [];
  return {
    name,
    type: "memory",
    messages,
    send(alerts) {
      messages.push(alerts);
      return Promise.resolve();
    },
    healthcheck: () => Promise.resolve("memory"),
  };
}

async function stage(store: StateStore, outbox: Outbox, alerts: Alert[]): Promise<string[][]> {
  const commit = new Commit();
  const names = alerts.map((a) => outbox.stage(commit, a));
  await store.commit(commit);
  return names;
}

async function withStore(fn: (store: StateStore) => Promise<void>): Promise<void> {
  const store = await StateStore.open(":memory:");
  try {
    await fn(store);
  } finally {
    store.close();
  }
}

/** Runs delivery rounds until nothing is pending (or `timeoutMs` passes). */
async function deliverAll(outbox: Outbox, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await outbox.listPending()).length > 0) {
    if (Date.now() > deadline) throw new Error("alerts still pending after the deadline");
    await outbox.deliver();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const quiet = () => captureLog(() => {});

Deno.test("outbox delivers each staged alert once and then forgets it", async () => {
  await using receiver = await Receiver.start();
  await withStore(async (store) => {
    const outbox = new Outbox(store, [route(webhook(receiver.url))]);
    const alerts = Array.from({ length: 10 }, () => sampleAlert());
    const names = await stage(store, outbox, alerts);
    assert.deepEqual(names, alerts.map(() => ["hook"]));
    // Twelve ids: two KV reads, the ids they find are the staged ones.
    const ids = ["not-staged-1", ...alerts.map((a) => a.id), "not-staged-2"];
    assert.deepEqual(await outbox.known(ids), new Set(alerts.map((a) => a.id)));
    const report = await outbox.deliver();
    assert.deepEqual(report, { delivered: 10, retried: 0, dead: 0, pending: 0 });
    assert.deepEqual((await outbox.listPending()).length, 0);
    assert.deepEqual(
      receiver.requests.map((r) => r.headers["idempotency-key"]),
      alerts.map((a) => a.id),
    );
    assert.deepEqual(await outbox.deliver(), { delivered: 0, retried: 0, dead: 0, pending: 0 });
    assert.equal(receiver.requests.length, 10, "nothing is sent twice");
  });
});

Deno.test("receiver down for a while, then up: every alert delivered, none twice", async () => {
  const restore = quiet();
  await using receiver = await Receiver.start();
  try {
    await withStore(async (store) => {
      const options: Partial<Options> = { baseDelayMs: 20, maxDelayMs: 80, maxAttempts: 8 };
      const outbox = new Outbox(store, [route(webhook(receiver.url))], options);
      const alerts = Array.from({ length: 30 }, () => sampleAlert());
      await stage(store, outbox, alerts);
      await receiver.stop();
      // A few rounds while it is down: alerts are retried, none is lost or dead.
      for (let round = 0; round < 4; round++) {
        const report = await outbox.deliver();
        assert.equal(report.delivered, 0);
        assert.equal(report.dead, 0);
        assert.equal(report.retried, 1, "a failing sink is tried once per round");
        assert.equal((await outbox.listPending()).length, 30);
        await new Promise((resolve) => setTimeout(resolve, 30));
      }
      const errors = (await outbox.listPending()).filter((p) => p.entry.error);
      assert.ok(errors.length >= 1);
      assert.ok(errors.every((p) => !p.entry.error!.includes("T0KEN")), "URL token masked");
      await receiver.restart();
      await deliverAll(outbox);
      const counts = receiver.countByKey();
      assert.equal(counts.size, 30);
      for (const alert of alerts) assert.equal(counts.get(alert.id), 1, `${alert.id} once`);
      assert.deepEqual(await outbox.listDead(), []);
    });
  } finally {
    restore();
  }
});

Deno.test("a short 429 Retry-After is waited for and retried in the same round", async () => {
  await using receiver = await Receiver.start();
  const restore = quiet();
  try {
    await withStore(async (store) => {
      const outbox = new Outbox(store, [route(webhook(receiver.url))]);
      const [alert, other] = [sampleAlert(), sampleAlert()];
      await stage(store, outbox, [alert, other]);
      receiver.script({ status: 429, headers: { "retry-after": "1" } });
      const started = Date.now();
      const report = await outbox.deliver();
      const waited = Date.now() - started;
      assert.ok(waited >= 950, `waited ${waited} ms`);
      assert.deepEqual(report, { delivered: 2, retried: 0, dead: 0, pending: 0 });
      assert.deepEqual(receiver.requests.map((r) => [r.status, r.headers["idempotency-key"]]), [
        [429, alert.id],
        [200, alert.id],
        [200, other.id],
      ]);
    });
  } finally {
    restore();
  }
});

Deno.test("a long 429 Retry-After reschedules the alert and holds the sink's others", async () => {
  await using receiver = await Receiver.start();
  const restore = quiet();
  try {
    await withStore(async (store) => {
      const outbox = new Outbox(store, [route(webhook(receiver.url))], { maxInlineWaitMs: 500 });
      const alerts = [sampleAlert(), sampleAlert(), sampleAlert()];
      await stage(store, outbox, alerts);
      receiver.script({ status: 429, headers: { "retry-after": "120" } });
      const before = Date.now();
      const report = await outbox.deliver();
      assert.deepEqual(report, { delivered: 0, retried: 1, dead: 0, pending: 2 });
      assert.equal(receiver.requests.length, 1, "no more requests to a rate-limited receiver");
      const [first] = await outbox.listPending();
      assert.equal(first.entry.alert.id, alerts[0].id);
      assert.equal(first.entry.attempts, 1);
      assert.ok(first.entry.next >= before + 119_000, "next attempt honours Retry-After");
      assert.match(first.entry.error!, /429/);
      // Next round: the rescheduled alert is not due, the others go.
      const second = await outbox.deliver();
      assert.deepEqual(second, { delivered: 2, retried: 0, dead: 0, pending: 1 });
    });
  } finally {
    restore();
  }
});

Deno.test("a 400 makes the alert dead at once while the other alerts go on", async () => {
  await using receiver = await Receiver.start();
  const restore = quiet();
  try {
    await withStore(async (store) => {
      const outbox = new Outbox(store, [route(webhook(receiver.url))]);
      const alerts = [sampleAlert(), sampleAlert(), sampleAlert()];
      await stage(store, outbox, alerts);
      receiver.script({ status: 200 }, { status: 400, body: "invalid payload" });
      const report = await outbox.deliver();
      assert.deepEqual(report, { delivered: 2, retried: 0, dead: 1, pending: 0 });
      const dead = await outbox.listDead();
      assert.equal(dead.length, 1);
      assert.equal(dead[0].sink, "hook");
      assert.equal(dead[0].entry.alert.id, alerts[1].id);
      assert.equal(dead[0].entry.attempts, 1);
      assert.match(dead[0].entry.error, /400.*invalid payload/);
      assert.ok(!dead[0].entry.error.includes("T0KEN"));
      assert.ok(!Number.isNaN(Date.parse(dead[0].entry.failed_at)));

      // `outbox retry`: back in the outbox, sent again with the same key.
      assert.equal(await outbox.retryDead("hook"), 1);
      assert.deepEqual(await outbox.listDead(), []);
      const pending = await outbox.listPending();
      assert.equal(pending[0].entry.attempts, 0);
      assert.deepEqual(await outbox.deliver(), { delivered: 1, retried: 0, dead: 0, pending: 0 });
      const keys = receiver.requests.map((r) => r.headers["idempotency-key"]);
      assert.deepEqual(keys.filter((k) => k === alerts[1].id).length, 2);
      assert.equal(receiver.countByKey().get(alerts[1].id), 1);
    });
  } finally {
    restore();
  }
});

Deno.test("retryDead() keeps the dead alerts of a sink that is no longer configured", async () => {
  const restore = quiet();
  try {
    await withStore(async (store) => {
      const kept = recordingSink("kept");
      const outbox = new Outbox(store, [route(kept)]);
      const [a, b] = [sampleAlert(), sampleAlert()];
      const dead = (alert: Alert) => ({ alert, attempts: 8, error: "x", failed_at: "" });
      await store.kv.set(["dead", "kept", a.id], dead(a));
      await store.kv.set(["dead", "removed", b.id], dead(b));
      assert.equal(await outbox.retryDead(), 1);
      assert.deepEqual((await outbox.listDead()).map((d) => d.sink), ["removed"]);
      const [pending] = await outbox.listPending();
      assert.equal(pending.entry.error, "was dead: x");
      await outbox.deliver();
      assert.deepEqual(kept.messages, [[a]]);
    });
  } finally {
    restore();
  }
});

Deno.test("retries stop after maxAttempts and the last error is kept with the dead alert", async () => {
  await using receiver = await Receiver.start({ fallback: { status: 503, body: "maintenance" } });
  const restore = quiet();
  try {
    await withStore(async (store) => {
      const outbox = new Outbox(store, [route(webhook(receiver.url))], {
        maxAttempts: 3,
        baseDelayMs: 5,
        maxDelayMs: 10,
      });
      const [alert] = [sampleAlert()];
      await stage(store, outbox, [alert]);
      await deliverAll(outbox);
      assert.equal(receiver.requests.length, 3);
      const [dead] = await outbox.listDead();
      assert.equal(dead.entry.attempts, 3);
      assert.match(dead.entry.error, /503 .*maintenance/);
      // Once dead, delivery leaves it alone until `outbox retry`.
      await outbox.deliver();
      assert.equal(receiver.requests.length, 3);
    });
  } finally {
    restore();
  }
});

Deno.test("retry delays grow exponentially with jitter, capped at maxDelay", async () => {
  await using receiver = await Receiver.start({ fallback: { status: 500 } });
  const restore = quiet();
  try {
    await withStore(async (store) => {
      const outbox = new Outbox(store, [route(webhook(receiver.url))], {
        baseDelayMs: 1000,
        maxDelayMs: 3000,
        maxAttempts: 10,
      });
      await stage(store, outbox, [sampleAlert()]);
      const expected = [[500, 1000], [1000, 2000], [1500, 3000], [1500, 3000]];
      const delays: number[] = [];
      for (const [low, high] of expected) {
        const before = Date.now();
        await outbox.deliver();
        const entry = (await store.kv.list<PendingEntry>({ prefix: ["outbox", "hook"] }).next())
          .value!;
        const delay = entry.value.next - before;
        assert.ok(
          delay >= low - 5 && delay <= high + 50,
          `delay ${delay} not in [${low}, ${high}]`,
        );
        delays.push(delay);
        // Fast-forward: make it due now.
        await store.kv.set(entry.key, { ...entry.value, next: 0 });
      }
      assert.equal(receiver.requests.length, 4);
    });
  } finally {
    restore();
  }
});

Deno.test("routes filter alerts by minSeverity, detectors and excludeDetectors", async () => {
  await withStore(async (store) => {
    const all = recordingSink("all");
    const urgent = recordingSink("urgent");
    const travel = recordingSink("travel");
    const notTravel = recordingSink("not_travel");
    const outbox = new Outbox(store, [
      route(all),
      route(urgent, { minSeverity: "high" }),
      route(travel, { detectors: ["impossible_travel"] }),
      route(notTravel, { excludeDetectors: ["impossible_travel"] }),
    ]);
    const make = (severity: Severity, detector: string) =>
      sampleAlert({ severity, detector, event_ids: [crypto.randomUUID()] });
    const alerts = [
      make("low", "impossible_travel"),
      make("critical", "impossible_travel"),
      make("high", "root_activity"),
      make("info", "new_country"),
    ];
    const names = await stage(store, outbox, alerts);
    assert.deepEqual(names, [
      ["all", "travel"],
      ["all", "urgent", "travel"],
      ["all", "urgent", "not_travel"],
      ["all", "not_travel"],
    ]);
    assert.equal(outbox.mutationsFor(alerts[1]), 4);
    const report = await outbox.deliver();
    assert.equal(report.delivered, 10);
    const ids = (s: { messages: Alert[][] }) => s.messages.flat().map((a) => a.id);
    assert.deepEqual(ids(all), alerts.map((a) => a.id));
    assert.deepEqual(ids(urgent), [alerts[1].id, alerts[2].id]);
    assert.deepEqual(ids(travel), [alerts[0].id, alerts[1].id]);
    assert.deepEqual(ids(notTravel), [alerts[2].id, alerts[3].id]);
  });
});

Deno.test("grouping sends one message per (user, detector) in a round, split at maxGroupSize", async () => {
  await using receiver = await Receiver.start();
  await withStore(async (store) => {
    const outbox = new Outbox(store, [route(webhook(receiver.url), { group: true })], {
      maxGroupSize: 2,
    });
    const make = (user: string, detector: string) =>
      sampleAlert({ user, detector, event_ids: [crypto.randomUUID()] });
    const alerts = [
      make("alice", "impossible_travel"),
      make("bob", "impossible_travel"),
      make("alice", "impossible_travel"),
      make("alice", "new_country"),
      make("alice", "impossible_travel"),
      make("bob", "impossible_travel"),
    ];
    await stage(store, outbox, alerts);
    const report = await outbox.deliver();
    assert.equal(report.delivered, 6);
    const bodies = receiver.acceptedJson<Alert | { alerts: Alert[] }>();
    const groups = bodies.map((b) => ("alerts" in b ? b.alerts : [b]).map((a) => a.id));
    assert.deepEqual(groups, [
      [alerts[0].id, alerts[2].id],
      [alerts[4].id],
      [alerts[1].id, alerts[5].id],
      [alerts[3].id],
    ]);
    assert.equal(receiver.requests[1].headers["idempotency-key"], alerts[4].id);
    assert.match(receiver.requests[0].headers["idempotency-key"], /^group-[0-9a-f]{64}$/);

    // Grouping is within one round: a later alert of the same pair is a message of its own.
    const later = make("alice", "impossible_travel");
    await stage(store, outbox, [later]);
    await outbox.deliver();
    assert.deepEqual(receiver.acceptedJson().at(-1), later);
  });
});

Deno.test("a failing sink does not hold back another sink", async () => {
  await using up = await Receiver.start();
  await using down = await Receiver.start();
  await down.stop();
  const restore = quiet();
  try {
    await withStore(async (store) => {
      const outbox = new Outbox(store, [
        route(webhook(down.url, "down")),
        route(webhook(up.url, "up")),
      ]);
      await stage(store, outbox, [sampleAlert(), sampleAlert()]);
      const report = await outbox.deliver();
      assert.deepEqual(report, { delivered: 2, retried: 1, dead: 0, pending: 1 });
      assert.equal(up.accepted.length, 2);
      assert.equal((await outbox.listPending("down")).length, 2);
      assert.equal((await outbox.listPending("up")).length, 0);
    });
  } finally {
    restore();
  }
});

Deno.test("an aborted round stops between messages and leaves the rest pending", async () => {
  await using receiver = await Receiver.start();
  await withStore(async (store) => {
    const outbox = new Outbox(store, [route(webhook(receiver.url))]);
    await stage(store, outbox, [sampleAlert(), sampleAlert(), sampleAlert()]);
    const controller = new AbortController();
    receiver.onRequest = () => controller.abort();
    const report = await outbox.deliver({ signal: controller.signal });
    assert.deepEqual(report, { delivered: 1, retried: 0, dead: 0, pending: 2 });
    receiver.onRequest = undefined;
    await outbox.deliver();
    assert.equal(receiver.countByKey().size, 3);
  });
});

/** Writes a child script that delivers the outbox of `statePath` to `url`. */
async function childScript(dir: string): Promise<string> {
  const at = (path: string) => JSON.stringify(new URL(path, ROOT).href);
  const path = `${dir}/deliver_child.ts`;
  await Deno.writeTextFile(
    path,
    `import { StateStore } from ${at("core/state.ts")};
import { Outbox } from ${at("sinks/outbox.ts")};
import { createWebhookSink } from ${at("sinks/webhook.ts")};
const [statePath, url, mode] = Deno.args;
const store = await StateStore.open(statePath);
const real = createWebhookSink({ url }, { name: "hook", baseDir: "." });
const sink = mode === "die-after-send"
  ? {
    ...real,
    async send(alerts) {
      await real.send(alerts);
      // The receiver took it (2xx); die before the outbox removes it.
      Deno.kill(Deno.pid, "SIGKILL");
      await new Promise(() => {});
    },
  }
  : real;
const outbox = new Outbox(store, [{ sink, minSeverity: "info", excludeDetectors: [], group: false }]);
await outbox.deliver();
`,
  );
  return path;
}

function spawnChild(script: string, statePath: string, url: string, mode: string) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      new URL("deno.json", ROOT).pathname,
      script,
      statePath,
      url,
      mode,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

/** Waits for a child that must have been SIGKILLed; its stderr explains any other end. */
async function assertKilled(child: Deno.ChildProcess): Promise<void> {
  const output = await child.output();
  assert.equal(
    output.signal,
    "SIGKILL",
    `the child should die by SIGKILL: ${new TextDecoder().decode(output.stderr)}`,
  );
}

const notPosix = Deno.build.os === "windows";

async function stageInFile(statePath: string, alerts: Alert[], url: string): Promise<void> {
  const store = await StateStore.open(statePath);
  try {
    await stage(store, new Outbox(store, [route(webhook(url))]), alerts);
  } finally {
    store.close();
  }
}

async function resumeDelivery(statePath: string, url: string): Promise<Outbox> {
  const store = await StateStore.open(statePath);
  try {
    const outbox = new Outbox(store, [route(webhook(url))]);
    await deliverAll(outbox);
    assert.deepEqual(await outbox.listDead(), []);
    return outbox;
  } finally {
    store.close();
  }
}

Deno.test({
  name:
    "killed after the receiver took an alert but before the outbox update: resent with the same key, nothing lost",
  ignore: notPosix,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-outbox-" });
  await using receiver = await Receiver.start();
  try {
    const statePath = `${dir}/state.kv`;
    const alerts = Array.from({ length: 5 }, () => sampleAlert());
    await stageInFile(statePath, alerts, receiver.url);
    const child = spawnChild(await childScript(dir), statePath, receiver.url, "die-after-send");
    await assertKilled(child);
    assert.equal(receiver.accepted.length, 1, "the receiver took the first alert");
    assert.equal(receiver.accepted[0].headers["idempotency-key"], alerts[0].id);

    await resumeDelivery(statePath, receiver.url);
    const counts = receiver.countByKey();
    assert.equal(counts.get(alerts[0].id), 2, "at most one resend, with the same Idempotency-Key");
    for (const alert of alerts.slice(1)) assert.equal(counts.get(alert.id), 1);
    assert.equal(counts.size, 5, "no alert lost");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "killed while the request is in flight: the alert is resent with the same key, nothing lost",
  ignore: notPosix,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-outbox-" });
  await using receiver = await Receiver.start();
  try {
    const statePath = `${dir}/state.kv`;
    const alerts = Array.from({ length: 5 }, () => sampleAlert());
    await stageInFile(statePath, alerts, receiver.url);
    receiver.script({ hold: true, method: "POST" });
    const child = spawnChild(await childScript(dir), statePath, receiver.url, "normal");
    await receiver.waitForRequests(1, 30_000);
    child.kill("SIGKILL");
    await assertKilled(child);
    receiver.releaseHeld();

    await resumeDelivery(statePath, receiver.url);
    const seen = receiver.requests.map((r) => r.headers["idempotency-key"]);
    assert.deepEqual(seen, [alerts[0].id, ...alerts.map((a) => a.id)]);
    const counts = receiver.countByKey();
    assert.equal(counts.size, 5, "no alert lost");
    for (const alert of alerts) assert.equal(counts.get(alert.id), 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
