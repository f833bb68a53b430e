/**
 * Crash-restart: `ingest --once` over 12 local objects (one of 60,000 records, one of 1,200 root
 * calls) with a signed webhook sink to a loopback receiver is SIGKILLed again and again — at every
 * failpoint (after a mid-object chunk commit, between objects, between the commit of the alerts
 * and their delivery, after the receiver took an alert but before the outbox entry was removed)
 * and at seeded random moments — and restarted until it exits 0.
 *
 * After every crash the state file is opened from the test (the process is dead) and checked:
 * everything the checkpoints say is done has its alerts in the outbox or at the receiver and its
 * eventIDs in the dedupe set; nothing after the checkpoint has either (the alerts, dedupe ids and
 * checkpoint are one commit). At the end: every eventID was processed, every alert id reached the
 * receiver, and an alert id reached it twice only with the same `Idempotency-Key` and only after a
 * crash that left it in the outbox although the receiver had already taken it.
 */

import assert from "node:assert/strict";
import { Dedupe } from "../core/dedupe.ts";
import { alertId, type Summary } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import { seededRandom } from "./helpers/fault_proxy.ts";
import { ctRecord, rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";
import { Receiver, type RecordedRequest } from "./helpers/receiver.ts";
import {
  alertOf,
  pendingIds,
  readState,
  type RunResult,
  signatureValid,
  sleep,
  startRun,
  type StateView,
} from "./helpers/reliability.ts";

const ACCOUNT = "111122223333";
const SOURCE = "trail";
const SINK = "hook";
const HMAC_SECRET = "crash-test-hmac-secret-5f1d2c";
/** Records per object, in path order. Objects of up to 1,200 records are all root calls. */
const LAYOUT = [60, 70, 60_000, 80, 90, 100, 110, 1_200, 57, 66, 75, 88];
/** In the 60,000-record object, one record in 100 is a root call; the rest raise no alert. */
const ROOT_EVERY = 100;
/** Attempts before the harness gives up. */
const MAX_ATTEMPTS = 14;

interface LogObject {
  /** File name (the local source's checkpoint key). */
  name: string;
  /** eventIDs in record order. */
  eventIds: string[];
  /** Whether each record is a root call (raises exactly one `root_activity` alert). */
  root: boolean[];
  /** eventTime (epoch ms) of each record. */
  times: number[];
}

/** Writes the objects under `dir/logs`. */
async function writeLogs(dir: string): Promise<LogObject[]> {
  const base = Date.UTC(2026, 10, 18, 8, 0, 0);
  const objects: LogObject[] = [];
  const files: Record<string, Uint8Array> = {};
  LAYOUT.forEach((count, f) => {
    const name = `${String(f + 1).padStart(2, "0")}.json.gz`;
    const object: LogObject = { name, eventIds: [], root: [], times: [] };
    const records = [];
    for (let i = 0; i < count; i++) {
      const eventID = `crash-${f + 1}-${i}`;
      const time = base + f * 3_600_000 + i * 50;
      const eventTime = new Date(time).toISOString().replace(/\.\d+Z$/, "Z");
      const root = count <= 1_200 || i % ROOT_EVERY === 0;
      object.eventIds.push(eventID);
      object.root.push(root);
      object.times.push(Date.parse(eventTime));
      records.push(root ? rootLogin({ eventID, eventTime }) : ctRecord({ eventID, eventTime }));
    }
    files[`logs/${name}`] = trailFile(records);
    objects.push(object);
  });
  await writeFiles(dir, files);
  return objects;
}

/** The alert id `root_activity` gives the record `eventId`. */
function expectedAlertId(eventId: string): string {
  return alertId("root_activity", [eventId], "", ACCOUNT);
}

/** One attempt of the plan. */
interface Step {
  /** What the step is, for messages. */
  label: string;
  /** `TRAILWATCH_FAILPOINTS`. */
  failpoints?: string;
  /**
   * SIGKILL this long after the process got the state: after its start, or, when the attempt
   * before was killed, after it logged that it took over the lapsed lease.
   */
  killAfterMs?: number;
  /**
   * SIGKILL when the receiver got this many requests in this attempt (before it answers the
   * last one); a function gets the number of alerts not delivered yet when the attempt starts.
   */
  killAtRequest?: number | ((pending: number) => number);
  /** Checks right after the attempt (the state view is the one after it). */
  expect?: (context: AttemptContext) => void;
}

interface AttemptContext {
  step: Step;
  result: RunResult;
  view: StateView;
  /** Requests the receiver got during this attempt. */
  requests: RecordedRequest[];
  objects: LogObject[];
}

interface Crash {
  attempt: number;
  /** Whether the dead process held the lease (the next run must wait for it to lapse). */
  heldLease: boolean;
  /** Alert ids the receiver had taken and that were still in the outbox after the crash. */
  lostResponses: Set<string>;
}

/** Committed position of each object: all its records (checkpoint), a prefix, or none. */
function committedRecords(view: StateView, object: LogObject): number {
  if (view.files.has(object.name)) return object.eventIds.length;
  for (const [id, progress] of view.progress) {
    if (id.endsWith(`/${object.name}`)) return progress.records;
  }
  return 0;
}

/**
 * The checkpoint never passed unprocessed data, and nothing was committed ahead of it: for every
 * object, the records before its committed position have their alert in the outbox or at the
 * receiver and their eventID in the dedupe set; the records after it have neither.
 */
async function checkCommitted(
  statePath: string,
  view: StateView,
  objects: LogObject[],
  received: Set<string>,
  label: string,
): Promise<void> {
  const pending = pendingIds(view);
  const store = await StateStore.open(statePath);
  try {
    const dedupe = new Dedupe(store);
    for (const object of objects) {
      const done = committedRecords(view, object);
      for (let i = 0; i < object.eventIds.length; i++) {
        const eventId = object.eventIds[i];
        const seen = await dedupe.check(`${eventId}:${ACCOUNT}`, object.times[i]);
        const committed = i < done;
        if (seen !== committed) {
          assert.fail(
            `${label}: ${object.name} record ${i + 1} (${eventId}) is ${
              seen ? "" : "not "
            }in the dedupe set but ${done} records are committed`,
          );
        }
        if (!object.root[i]) continue;
        const id = expectedAlertId(eventId);
        if (committed) {
          assert.ok(
            view.enqueued.has(id) && (pending.has(id) || received.has(id)),
            `${label}: ${object.name} is committed up to record ${done}, but the alert of record ${
              i + 1
            } (${eventId}) is neither pending in the outbox nor at the receiver`,
          );
        } else {
          assert.ok(
            !view.enqueued.has(id),
            `${label}: the alert of ${object.name} record ${
              i + 1
            } was committed ahead of the checkpoint (${done} records)`,
          );
        }
      }
    }
  } finally {
    store.close();
  }
}

/**
 * Runs `ingest --once` through `plan`, then without kills until it exits 0, checking the state
 * after every attempt, then checks the outcome.
 */
async function crashUntilDone(plan: Step[]): Promise<void> {
  const tmp = await tempDir();
  await using receiver = await Receiver.start();
  try {
    const objects = await writeLogs(tmp.path);
    const statePath = `${tmp.path}/state.kv`;
    const configPath = `${tmp.path}/config.json`;
    await Deno.writeTextFile(
      configPath,
      JSON.stringify({
        sources: { [SOURCE]: { type: "local", path: "logs" } },
        detectors: { root_activity: {} },
        sinks: { [SINK]: { type: "webhook", url: receiver.url, secret: HMAC_SECRET } },
        geo: { provider: "none" },
        // A killed holder's lease lapses after 1 s; the restart waits for that.
        state: { path: "state.kv", leaseTtl: "1s", leaseWait: "20s" },
      }),
    );
    const summaryPath = `${tmp.path}/summary.json`;
    const args = ["ingest", "--once", "--config", configPath, "--summary", summaryPath];

    const attemptOf = new Map<RecordedRequest, number>();
    let attempt = 0;
    let onRequest: ((count: number) => void) | undefined;
    let inAttempt = 0;
    receiver.onRequest = (request) => {
      attemptOf.set(request, attempt);
      onRequest?.(++inAttempt);
    };

    const crashes: Crash[] = [];
    let final: RunResult | undefined;
    const log: string[] = [];
    const alertsExpected = objects.reduce((n, o) => n + o.root.filter(Boolean).length, 0);
    let undelivered = alertsExpected;
    for (attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      const step = plan[attempt - 1] ?? { label: "restart" };
      const before = receiver.requests.length;
      inAttempt = 0;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killLater = () => {
        if (step.killAfterMs !== undefined) timer = setTimeout(() => run.kill(), step.killAfterMs);
      };
      // After a crash that left a lease, the next run first waits for it to lapse.
      const afterCrash = crashes.at(-1)?.attempt === attempt - 1 && crashes.at(-1)!.heldLease;
      const run = startRun(
        args,
        step.failpoints ? { TRAILWATCH_FAILPOINTS: step.failpoints } : {},
        {
          onStderrLine: (line) =>
            afterCrash && line.includes("took over a lapsed lease") && killLater(),
        },
      );
      if (!afterCrash) killLater();
      const killAt = typeof step.killAtRequest === "function"
        ? step.killAtRequest(undelivered)
        : step.killAtRequest;
      onRequest = killAt !== undefined
        ? (count) => {
          if (count === killAt) run.kill();
        }
        : undefined;
      const result = await run.result;
      clearTimeout(timer);
      onRequest = undefined;
      // A request the dead process had sent may still be in the receiver's hands.
      await sleep(100);
      const requests = receiver.requests.slice(before);
      const view = await readState(statePath, SOURCE);
      log.push(
        `attempt ${attempt} (${step.label}): ${
          result.signal ? `killed (${result.signal})` : `exit ${result.code}`
        }; ${view.files.size} objects done, progress ${
          JSON.stringify([...view.progress.values()].map((p) => p.records))
        }, ${view.enqueued.size} alerts enqueued, ${pendingIds(view).size} pending; ` +
          `${requests.length} request(s)`,
      );
      const received = new Set(receiver.accepted.map((r) => alertOf(r).id));
      await checkCommitted(statePath, view, objects, received, `after attempt ${attempt}`);
      step.expect?.({ step, result, view, requests, objects });
      const pending = pendingIds(view);
      // Enqueued and no longer pending: delivered.
      undelivered = alertsExpected - (view.enqueued.size - pending.size);
      if (afterCrash) assert.match(result.stderr, /took over a lapsed lease from pid \d+/);
      assert.ok(!result.timedOut, `attempt ${attempt} hung:\n${result.stderr}`);
      if (result.signal) {
        assert.equal(result.signal, "SIGKILL", result.stderr);
        crashes.push({
          attempt,
          heldLease: view.lease !== undefined,
          lostResponses: new Set([...received].filter((id) => pending.has(id))),
        });
        continue;
      }
      assert.equal(result.code, 0, `attempt ${attempt} (${step.label}):\n${result.stderr}`);
      // A failpoint always kills; a timed kill may come after a fast machine already finished.
      assert.ok(
        attempt > plan.length || step.killAfterMs !== undefined,
        `attempt ${attempt} (${step.label}) was meant to be killed but finished:\n${
          log.join("\n")
        }`,
      );
      final = result;
      break;
    }
    assert.ok(final, `not done after ${MAX_ATTEMPTS} attempts:\n${log.join("\n")}`);

    // Done: nothing pending, nothing dead, everything committed.
    const view = await readState(statePath, SOURCE);
    assert.equal(pendingIds(view).size, 0, "alerts left in the outbox");
    assert.equal(view.dead.size, 0, "dead alerts");
    assert.equal(view.progress.size, 0, "an object is still partly processed");
    assert.equal(view.files.size, objects.length, "an object has no checkpoint");
    const summary: Summary = JSON.parse(await Deno.readTextFile(summaryPath));
    assert.deepEqual(summary.failures, []);
    assert.equal(summary.duplicates_skipped, 0, "a restart processed an event again");

    // (1) Complete: the union of the alerts' eventIDs is every root call written; (2) every alert
    // id reached the receiver, and nothing else did.
    const rootIds = objects.flatMap((o) => o.eventIds.filter((_, i) => o.root[i]));
    const accepted = receiver.accepted;
    const alerts = accepted.map(alertOf);
    assert.deepEqual(
      [...new Set(alerts.flatMap((a) => a.event_ids))].sort(),
      [...rootIds].sort(),
      "the alerts received do not cover exactly the root calls written",
    );
    assert.deepEqual(
      [...new Set(alerts.map((a) => a.id))].sort(),
      rootIds.map(expectedAlertId).sort(),
    );
    assert.equal(view.enqueued.size, rootIds.length, "an alert was enqueued twice or never");

    // (3) Duplicates: the same Idempotency-Key (the alert id) every time, never twice in one
    // attempt, and only after a crash that left an alert the receiver had taken in the outbox.
    const byId = new Map<string, RecordedRequest[]>();
    for (const request of accepted) {
      const alert = alertOf(request);
      assert.equal(request.headers["idempotency-key"], alert.id, "Idempotency-Key ≠ alert id");
      assert.ok(await signatureValid(HMAC_SECRET, request), `bad signature on ${alert.id}`);
      if (!byId.has(alert.id)) byId.set(alert.id, []);
      byId.get(alert.id)!.push(request);
    }
    let duplicates = 0;
    for (const [id, requests] of byId) {
      for (let j = 1; j < requests.length; j++) {
        duplicates++;
        const previous = attemptOf.get(requests[j - 1])!;
        const current = attemptOf.get(requests[j])!;
        assert.ok(current > previous, `alert ${id} was delivered twice within attempt ${current}`);
        assert.ok(
          crashes.some((c) =>
            c.attempt >= previous && c.attempt < current && c.lostResponses.has(id)
          ),
          `alert ${id} was delivered again in attempt ${current} although no crash since ` +
            `attempt ${previous} had left it in the outbox after the receiver took it`,
        );
      }
    }
    assert.ok(duplicates > 0, "no crash fell between a delivery and its removal from the outbox");
    assert.ok(
      crashes.length >= plan.length,
      `only ${crashes.length} of ${plan.length} planned kills landed:\n${log.join("\n")}`,
    );
  } finally {
    receiver.onRequest = undefined;
    await tmp.cleanup();
  }
}

function hasProgressOn(view: StateView, name: string): boolean {
  return [...view.progress.keys()].some((id) => id.endsWith(`/${name}`));
}

Deno.test("crash-restart: killed at every failpoint, ingest --once loses no event and sends no alert twice unless its response was lost", async () => {
  await crashUntilDone([
    {
      label: "chunk-committed:2",
      failpoints: "chunk-committed:2",
      expect: ({ view, requests }) => {
        // Mid-object: the big third object is committed up to its second chunk.
        assert.deepEqual([...view.files.keys()].sort(), ["01.json.gz", "02.json.gz"]);
        assert.ok(hasProgressOn(view, "03.json.gz"), "the big object has no progress");
        const records = [...view.progress.values()][0].records;
        assert.ok(records > 0 && records < 60_000, `progress ${records}`);
        assert.equal(requests.length, 0);
      },
    },
    {
      label: "object-committed:3",
      failpoints: "object-committed:3",
      expect: ({ view }) => {
        // Between objects: three more objects are done, none is partly processed.
        assert.equal(view.files.size, 5);
        assert.equal(view.progress.size, 0);
      },
    },
    {
      label: "chunk-committed:1",
      failpoints: "chunk-committed:1",
      expect: ({ view }) => {
        // Mid-object again, in the 1,200-root-call object (its chunks close on the commit size).
        assert.equal(view.files.size, 7);
        assert.ok(hasProgressOn(view, "08.json.gz"), "the 1,200-alert object has no progress");
        const records = [...view.progress.values()][0].records;
        assert.ok(records > 0 && records < 1_200, `progress ${records}`);
      },
    },
    {
      label: "before-delivery:1",
      failpoints: "before-delivery:1",
      expect: ({ view, requests }) => {
        // Between the commit of the alerts and their delivery.
        assert.equal(view.files.size, LAYOUT.length);
        assert.equal(requests.length, 0);
        assert.equal(pendingIds(view).size, view.enqueued.size);
      },
    },
    {
      label: "after-send:1",
      failpoints: "after-send:1",
      expect: ({ view, requests }) => {
        // The receiver took the alert, the process died before removing it from the outbox.
        assert.equal(requests.length, 1);
        assert.ok(pendingIds(view).has(alertOf(requests[0]).id), "the alert left the outbox");
      },
    },
    {
      label: "after-send:3",
      failpoints: "after-send:3",
      expect: ({ view, requests }) => {
        assert.equal(requests.length, 3);
        for (const r of requests) {
          assert.ok(pendingIds(view).has(alertOf(r).id), "the alert left the outbox");
        }
      },
    },
    {
      label: "SIGKILL at a seeded request count during delivery",
      killAtRequest: (undelivered) => Math.ceil(undelivered * (0.1 + 0.8 * seededRandom(41)())),
      expect: ({ view }) => {
        assert.ok(pendingIds(view).size > 0, "the kill came after delivery ended");
      },
    },
  ]);
});

Deno.test("crash-restart: SIGKILLed at seeded random moments, ingest --once loses no event and sends no alert twice unless its response was lost", async () => {
  const random = seededRandom(20261118);
  const between = (min: number, max: number) => Math.round(min + random() * (max - min));
  // A run has about 3.5 s of work here: 0.3 s to start, 1.5 s of detection, 1.7 s of delivery.
  await crashUntilDone([
    { label: "SIGKILL at a seeded time", killAfterMs: between(400, 1_400) },
    { label: "SIGKILL at a seeded time", killAfterMs: between(900, 2_000) },
    {
      label: "SIGKILL at a seeded request count",
      killAtRequest: (undelivered) => Math.ceil(undelivered * between(10, 90) / 100),
    },
  ]);
});
