/**
 * Overlapping runs: two `ingest` processes on one state file and one source. The lease in KV
 * keeps the second off the state: with `leaseWait` 0 it skips at once (exit 4, naming the holder),
 * with a longer `leaseWait` it waits and then processes only what the first did not; the lease of
 * a killed holder lapses after `leaseTtl` and the next run takes it over.
 *
 * The first process is held inside its delivery (the receiver holds its first POST unanswered),
 * so it owns the lease for as long as the test needs, without any timing guess.
 */

import assert from "node:assert/strict";
import { hostname } from "node:os";
import type { Summary } from "../core/pipeline.ts";
import { rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";
import { ROOT } from "./helpers/cli.ts";
import { Receiver } from "./helpers/receiver.ts";
import {
  alertOf,
  pendingIds,
  readState,
  type Run,
  runToEnd,
  startRun,
} from "./helpers/reliability.ts";

const SOURCE = "trail";

interface World {
  dir: string;
  receiver: Receiver;
  /** eventIDs written so far. */
  eventIds: string[];
  /** Writes `files` more objects of `records` root calls each. */
  addLogs(files: number, records: number): Promise<void>;
  /** Writes a config with these `state` options; returns its path. */
  config(name: string, state: Record<string, unknown>): Promise<string>;
  /** `ingest --once` arguments for a config, writing the summary to `<dir>/<summaryName>`. */
  args(config: string, summaryName: string): string[];
  summary(name: string): Promise<Summary | undefined>;
  /** Runs started, killed at cleanup if still running. */
  runs: Run[];
  [Symbol.asyncDispose](): Promise<void>;
}

let tag = 0;

async function world(): Promise<World> {
  const tmp = await tempDir();
  const receiver = await Receiver.start();
  const eventIds: string[] = [];
  let fileNo = 0;
  const runs: Run[] = [];
  const self: World = {
    dir: tmp.path,
    receiver,
    eventIds,
    runs,
    async addLogs(files, records) {
      const out: Record<string, Uint8Array> = {};
      for (let f = 0; f < files; f++) {
        fileNo++;
        const batch = Array.from({ length: records }, (_, i) => {
          const eventID = `overlap-${++tag}-${fileNo}-${i}`;
          eventIds.push(eventID);
          return rootLogin({ eventID });
        });
        out[`logs/${String(fileNo).padStart(3, "0")}.json.gz`] = trailFile(batch);
      }
      await writeFiles(tmp.path, out);
    },
    async config(name, state) {
      const path = `${tmp.path}/${name}.json`;
      await Deno.writeTextFile(
        path,
        JSON.stringify({
          sources: { [SOURCE]: { type: "local", path: "logs" } },
          detectors: { root_activity: {} },
          sinks: { hook: { type: "webhook", url: receiver.url, secret: "overlap-hmac-secret-77" } },
          geo: { provider: "none" },
          delivery: { baseDelay: "10ms" },
          state: { path: "state.kv", ...state },
        }),
      );
      return path;
    },
    args: (config, summaryName) => [
      "ingest",
      "--once",
      "--config",
      config,
      "--summary",
      `${tmp.path}/${summaryName}`,
    ],
    async summary(name) {
      try {
        return JSON.parse(await Deno.readTextFile(`${tmp.path}/${name}`));
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return undefined;
        throw error;
      }
    },
    async [Symbol.asyncDispose]() {
      for (const run of runs) run.kill();
      await Promise.allSettled(runs.map((r) => r.result));
      await receiver.stop();
      await tmp.cleanup();
    },
  };
  return self;
}

/** Starts `ingest --once` and keeps it for cleanup. */
function start(w: World, args: string[]): Run {
  const run = startRun(args);
  w.runs.push(run);
  return run;
}

/** Resolves with `promise`, or fails if one of `runs` ends first. */
async function before<T>(promise: Promise<T>, ...runs: Run[]): Promise<T> {
  const ended = runs.map((run) =>
    run.result.then((r) => {
      throw new Error(`pid ${run.pid} ended first (exit ${r.code}):\n${r.stderr}`);
    })
  );
  return await Promise.race([promise, ...ended]);
}

/** Every alert reached the receiver exactly once, and they cover every eventID written. */
function assertDeliveredOnce(w: World): void {
  const alerts = w.receiver.accepted.map(alertOf);
  const ids = alerts.map((a) => a.id);
  assert.equal(new Set(ids).size, ids.length, "an alert was delivered twice");
  assert.deepEqual(alerts.flatMap((a) => a.event_ids).sort(), [...w.eventIds].sort());
}

Deno.test("overlapping runs: with leaseWait 0 the second ingest exits 4 naming the holder and processes nothing", async () => {
  await using w = await world();
  await w.addLogs(6, 20);
  const config = await w.config("config", {});
  // The first process owns the lease while its first delivery hangs.
  w.receiver.script({ method: "POST", hold: true });
  const first = start(w, w.args(config, "first.json"));
  await before(w.receiver.waitForRequests(1, 30_000), first);

  const second = await runToEnd(w.args(config, "second.json"));
  assert.equal(second.code, 4, second.stderr);
  const host = hostname();
  assert.ok(
    second.stderr.includes(
      `another trailwatch process holds the state ${w.dir}/state.kv (pid ${first.pid} on ${host}, since `,
    ) && second.stderr.includes("; skipping this run"),
    second.stderr,
  );
  assert.doesNotMatch(second.stderr, /objects read/, "the skipped run read something");
  assert.equal(await w.summary("second.json"), undefined, "the skipped run wrote a summary");
  assert.equal(w.receiver.requests.length, 1, "the skipped run delivered something");

  // The held POST is answered 503: the first process keeps that alert for a later round.
  w.receiver.releaseHeld();
  const firstResult = await first.result;
  assert.equal(firstResult.code, 0, firstResult.stderr);
  const firstSummary = (await w.summary("first.json"))!;
  assert.equal(firstSummary.objects_read, 6);
  assert.equal(firstSummary.events, w.eventIds.length);

  // A later run finds nothing new and delivers what was left.
  const third = await runToEnd(w.args(config, "third.json"));
  assert.equal(third.code, 0, third.stderr);
  const thirdSummary = (await w.summary("third.json"))!;
  assert.equal(thirdSummary.objects_read, 0);
  assert.equal(thirdSummary.events, 0);
  assertDeliveredOnce(w);
  assert.equal(pendingIds(await readState(`${w.dir}/state.kv`, SOURCE)).size, 0);
});

Deno.test("overlapping runs: with leaseWait the second ingest waits for the first, then processes only what is new", async () => {
  await using w = await world();
  await w.addLogs(6, 20);
  const firstConfig = await w.config("first", {});
  const waitingConfig = await w.config("waiting", { leaseWait: "60s" });
  w.receiver.script({ method: "POST", hold: true });
  const first = start(w, w.args(firstConfig, "first.json"));
  await before(w.receiver.waitForRequests(1, 30_000), first);
  // Two objects land after the first process listed the folder.
  await w.addLogs(2, 15);

  const waiting = Promise.withResolvers<string>();
  const second = startRun(w.args(waitingConfig, "second.json"), {}, {
    onStderrLine: (line) => line.includes("waiting for the state lease") && waiting.resolve(line),
  });
  w.runs.push(second);
  const line = await before(waiting.promise, first, second);
  assert.match(line, new RegExp(`held by pid ${first.pid} on ${hostname()} since `));
  assert.equal(second.ended, false);

  w.receiver.releaseHeld();
  const firstResult = await first.result;
  assert.equal(firstResult.code, 0, firstResult.stderr);
  const secondResult = await second.result;
  assert.equal(secondResult.code, 0, secondResult.stderr);
  const a = (await w.summary("first.json"))!;
  const b = (await w.summary("second.json"))!;
  assert.equal(a.objects_read, 6);
  assert.equal(b.objects_read, 2, "the waiting run read again what the first had done");
  assert.equal(a.events + b.events, w.eventIds.length);
  assert.equal(a.duplicates_skipped + b.duplicates_skipped, 0);
  assertDeliveredOnce(w);
});

Deno.test("overlapping runs: the lease of a killed holder lapses after leaseTtl and the next run takes it over", async () => {
  await using w = await world();
  await w.addLogs(4, 10);
  const config = await w.config("config", { leaseTtl: "4s" });
  const waitingConfig = await w.config("waiting", { leaseTtl: "4s", leaseWait: "30s" });
  // Killed with every alert committed, before delivery, still holding the lease.
  const killed = await runToEnd(w.args(config, "killed.json"), {
    TRAILWATCH_FAILPOINTS: "before-delivery:1",
  });
  assert.equal(killed.signal, "SIGKILL", killed.stderr);
  const state = await readState(`${w.dir}/state.kv`, SOURCE);
  assert.ok(state.lease && state.lease.expires > Date.now(), "the killed holder's lease is live");
  const killedPid = state.lease.pid;
  assert.equal(pendingIds(state).size, w.eventIds.length);

  // Right away, a run that does not wait is skipped: the dead holder's lease has not lapsed.
  const skipped = await runToEnd(w.args(config, "skipped.json"));
  assert.equal(skipped.code, 4, skipped.stderr);
  assert.match(skipped.stderr, new RegExp(`\\(pid ${killedPid} on `));

  // A run that waits takes the lease over once it lapsed, and finishes the work.
  const next = await runToEnd(w.args(waitingConfig, "next.json"));
  assert.equal(next.code, 0, next.stderr);
  assert.match(
    next.stderr,
    new RegExp(`took over a lapsed lease from pid ${killedPid} on ${hostname()} \\(held since `),
  );
  const summary = (await w.summary("next.json"))!;
  assert.equal(summary.objects_read, 0, "the objects the killed run committed were read again");
  assertDeliveredOnce(w);
  const after = await readState(`${w.dir}/state.kv`, SOURCE);
  assert.equal(pendingIds(after).size, 0);
  assert.equal(after.lease, undefined, "the lease was not given back");
});

Deno.test("overlapping runs: two ingest processes started together on one state process every event once", async () => {
  await using w = await world();
  await w.addLogs(8, 25);
  const config = await w.config("config", { leaseWait: "60s" });
  // Whichever gets the lease first keeps it (its first delivery hangs) until the other is
  // seen waiting for it.
  w.receiver.script({ method: "POST", hold: true });
  const waiting = Promise.withResolvers<void>();
  const onStderrLine = (line: string) =>
    line.includes("waiting for the state lease held by pid") && waiting.resolve();
  const a = startRun(w.args(config, "a.json"), {}, { onStderrLine });
  const b = startRun(w.args(config, "b.json"), {}, { onStderrLine });
  w.runs.push(a, b);
  await before(Promise.all([waiting.promise, w.receiver.waitForRequests(1, 30_000)]), a, b);
  w.receiver.releaseHeld();
  const [ra, rb] = await Promise.all([a.result, b.result]);
  assert.equal(ra.code, 0, ra.stderr);
  assert.equal(rb.code, 0, rb.stderr);
  const sa = (await w.summary("a.json"))!;
  const sb = (await w.summary("b.json"))!;
  // One of them got the lease first and did everything; the other waited and found nothing new.
  assert.deepEqual([sa.objects_read, sb.objects_read].sort(), [0, 8]);
  assert.equal(sa.events + sb.events, w.eventIds.length);
  assert.equal(sa.duplicates_skipped + sb.duplicates_skipped, 0);
  assertDeliveredOnce(w);
});

/**
 * A process that opens the state, waits for the common start time, and tries once to take the
 * lease: prints won, busy or the error.
 */
const RACER = `
import { Lease, StateStore } from "${ROOT}/core/state.ts";
try {
  const store = await StateStore.open(Deno.args[0]);
  await new Promise((resolve) => setTimeout(resolve, Number(Deno.args[1]) - Date.now()));
  const lease = await Lease.acquire(store, { ttlMs: 60_000, waitMs: 0 });
  console.log(lease ? "won" : "busy");
} catch (error) {
  console.log("error: " + error);
}
`;

Deno.test("overlapping runs: processes racing for a free lease on one state file never fail, one wins", async () => {
  const tmp = await tempDir();
  try {
    const script = `${tmp.path}/racer.ts`;
    await Deno.writeTextFile(script, RACER);
    const race = (path: string, startAt: number) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-kv", script, path, String(startAt)],
        stdout: "piped",
        stderr: "piped",
      }).output();
    for (let round = 0; round < 6; round++) {
      // Every other round on a state file that exists already.
      const path = `${tmp.path}/state-${round}.kv`;
      if (round % 2) (await Deno.openKv(path)).close();
      const startAt = Date.now() + 500;
      const outputs = await Promise.all(Array.from({ length: 4 }, () => race(path, startAt)));
      const answers = outputs.map((o) => new TextDecoder().decode(o.stdout).trim()).sort();
      assert.deepEqual(answers, ["busy", "busy", "busy", "won"], `round ${round}: ${answers}`);
    }
  } finally {
    await tmp.cleanup();
  }
});
