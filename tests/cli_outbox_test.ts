import assert from "node:assert/strict";
import { captureLog } from "../core/log.ts";
import { Commit, StateStore } from "../core/state.ts";
import { Outbox } from "../sinks/outbox.ts";
import { createWebhookSink } from "../sinks/webhook.ts";
import { runCli } from "./helpers/cli.ts";
import { Receiver, sampleAlert } from "./helpers/receiver.ts";

/** A temp folder with a config (local source, webhook sink to `url`) and a KV file. */
async function setup(url: string) {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-cli-outbox-" });
  await Deno.mkdir(`${dir}/logs`);
  const config = `${dir}/trailwatch.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      sources: { empty: { type: "local", path: "logs" } },
      sinks: {
        hook: { type: "webhook", url, secret: "cli-test-secret-123" },
        console: { type: "stdout", minSeverity: "critical" },
      },
      state: { path: "state.kv" },
      geo: { provider: "none" },
    }),
  );
  return { dir, config, state: `${dir}/state.kv` };
}

Deno.test("outbox list shows a dead alert and outbox retry resends it", async () => {
  await using receiver = await Receiver.start();
  const { dir, config, state } = await setup(receiver.url);
  try {
    // A dead alert, made the real way: the receiver refused it with a 400.
    const alert = sampleAlert({ title: "Root console login without MFA" });
    const store = await StateStore.open(state);
    const restore = captureLog(() => {});
    try {
      const sink = createWebhookSink({ url: receiver.url }, { name: "hook", baseDir: dir });
      const outbox = new Outbox(store, [{
        sink,
        minSeverity: "info",
        excludeDetectors: [],
        group: false,
      }]);
      const commit = new Commit();
      outbox.stage(commit, alert);
      await store.commit(commit);
      receiver.script({ status: 400, body: "unknown field" });
      assert.equal((await outbox.deliver()).dead, 1);
    } finally {
      restore();
      store.close();
    }

    const list = await runCli(["outbox", "list", "--config", config]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^hook\\t${alert.id}\\t.*attempts=1\\t`, "m"));
    assert.match(list.stdout, /Root console login without MFA/);
    assert.match(list.stdout, /400.*unknown field/);
    assert.match(list.stdout, /1 dead alert\(s\)/);
    assert.ok(!list.stdout.includes("T0KEN") && !list.stderr.includes("T0KEN"), "URL masked");

    const retry = await runCli(["outbox", "retry", "--sink", "hook", "--config", config]);
    assert.equal(retry.code, 0, retry.stderr);
    assert.match(retry.stdout, /1 dead alert\(s\) put back; delivered 1, retrying 0, dead 0/);
    const resent = receiver.accepted.at(-1)!;
    assert.equal(resent.headers["idempotency-key"], alert.id);
    assert.match(resent.headers["x-trailwatch-signature"], /^sha256=[0-9a-f]{64}$/);
    assert.deepEqual(JSON.parse(resent.body), alert);

    const after = await runCli(["outbox", "list", "--config", config]);
    assert.equal(after.code, 0, after.stderr);
    assert.match(after.stdout, /^0 dead alert\(s\)$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("outbox retry exits 3 when the receiver refuses the alert again", async () => {
  await using receiver = await Receiver.start({ fallback: { status: 422 } });
  const { dir, config, state } = await setup(receiver.url);
  try {
    const alert = sampleAlert();
    const store = await StateStore.open(state);
    try {
      await store.kv.set(["dead", "hook", alert.id], {
        alert,
        attempts: 8,
        error: "POST http://127.0.0.1/*** → 500",
        failed_at: new Date().toISOString(),
      });
    } finally {
      store.close();
    }
    const pending = await runCli(["outbox", "list", "--pending", "--config", config]);
    assert.match(pending.stdout, /^0 pending alert\(s\)$/m);
    const retry = await runCli(["outbox", "retry", "--config", config]);
    assert.equal(retry.code, 3, retry.stdout + retry.stderr);
    assert.match(retry.stdout, /1 dead alert\(s\) put back; delivered 0, retrying 0, dead 1/);
    assert.equal(receiver.requests.length, 1);
    const list = await runCli(["outbox", "list", "--sink", "hook", "--config", config]);
    assert.match(list.stdout, /422/);
    assert.match(list.stdout, /1 dead alert\(s\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validate --check-sinks runs each sink's health check without posting an alert", async () => {
  await using receiver = await Receiver.start();
  const { dir, config } = await setup(receiver.url);
  try {
    const result = await runCli(["validate", "--check-sinks", "--config", config]);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /sink hook: ok \(http:\/\/127\.0\.0\.1:\d+\/\*\*\* reachable/);
    assert.deepEqual(receiver.requests.map((r) => r.method), ["HEAD"]);
    await receiver.stop();
    const down = await runCli(["validate", "--check-sinks", "--config", config]);
    assert.equal(down.code, 3);
    assert.match(down.stdout, /sink hook: FAILED/);
    assert.ok(!down.stdout.includes("T0KEN"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
