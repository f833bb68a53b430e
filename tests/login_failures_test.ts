/** Tests of the `console_login_failures` detector (`detectors/login_failures.ts`). */

import assert from "node:assert/strict";
import { Commit, StateCache, StateStore } from "../core/state.ts";
import type { AlertDraft, NormalizedEvent } from "../core/types.ts";
import { OptionsChecker } from "../core/validate.ts";
import { GeoCache, noGeoProvider } from "../mapping/geo.ts";
import { normalize } from "../mapping/normalize.ts";
import type { Detector, DetectorContext } from "../detectors/mod.ts";
import { STATE_GRACE_MS } from "../detectors/_burst.ts";
import {
  consoleLoginFailuresDetector,
  createConsoleLoginFailures,
  type Options,
} from "../detectors/login_failures.ts";

const T0 = Date.parse("2026-11-20T08:00:00Z");
const MIN = 60_000;

interface Raised {
  draft: AlertDraft;
  event: NormalizedEvent;
}

/** A detector with in-memory KV state; `close()` frees the store. */
async function harness(options: Partial<Options> = {}) {
  const store = await StateStore.open(":memory:");
  let cache = new StateCache(store);
  const detector: Detector = createConsoleLoginFailures(options, { name: "logins", baseDir: "." });
  const raised: Raised[] = [];
  const context = (): DetectorContext => ({
    state: cache.forDetector("logins"),
    alert: (draft, event) => raised.push({ draft, event }),
    suppress: () => {},
    geo: new GeoCache(noGeoProvider()),
  });
  let ctx = context();
  return {
    raised,
    store,
    async feed(events: NormalizedEvent[]) {
      for (const event of events) await detector.detect!(event, ctx);
    },
    /** Commits the pass and starts a new one with a cold cache (as the next run would). */
    async commitAndRestart(): Promise<Commit> {
      const commit = new Commit();
      cache.flush(commit);
      await store.commit(commit);
      cache = new StateCache(store);
      ctx = context();
      return commit;
    },
    close: () => store.close(),
  };
}

let seq = 0;
function login(
  minute: number,
  opts: { user?: string; ip?: string; account?: string; ok?: boolean } = {},
): NormalizedEvent {
  const user = opts.user ?? "alice";
  const account = opts.account ?? "111122223333";
  return normalize({
    eventVersion: "1.09",
    eventTime: new Date(T0 + minute * MIN).toISOString(),
    eventID: `login-${++seq}`,
    eventSource: "signin.amazonaws.com",
    eventName: "ConsoleLogin",
    eventType: "AwsConsoleSignIn",
    awsRegion: "us-east-1",
    sourceIPAddress: opts.ip ?? "203.0.113.10",
    recipientAccountId: account,
    userIdentity: {
      type: "IAMUser",
      accountId: account,
      arn: `arn:aws:iam::${account}:user/${user}`,
      userName: user,
    },
    responseElements: { ConsoleLogin: opts.ok ? "Success" : "Failure" },
    ...(opts.ok ? {} : { errorMessage: "Failed authentication" }),
    additionalEventData: { MFAUsed: "No", LoginTo: "https://console.aws.amazon.com/console/home" },
  });
}

Deno.test("console_login_failures: five failures for one user within ten minutes raise one alert", async () => {
  const h = await harness({ by: ["user"] });
  try {
    const events = [0, 1, 2, 4, 9].map((m, i) => login(m, { ip: `203.0.113.${i + 1}` }));
    await h.feed(events);
    assert.equal(h.raised.length, 1);
    const { draft, event } = h.raised[0];
    assert.equal(event, events[4]);
    assert.equal(draft.key, "user");
    assert.equal(draft.severity, "medium");
    assert.match(draft.title, /5 failed console logins for alice within 10m/);
    assert.deepEqual(draft.event_ids, events.map((e) => e.event_id));
    assert.equal(draft.details?.failures, 5);
    assert.deepEqual(
      [...(draft.details?.source_ips as string[])].sort(),
      ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"],
    );
    assert.equal(draft.details?.first, "2026-11-20T08:00:00.000Z");
    assert.equal(draft.details?.last, "2026-11-20T08:09:00.000Z");
  } finally {
    h.close();
  }
});

Deno.test("console_login_failures: four failures, successes, or failures spread wider than the window raise nothing", async () => {
  const h = await harness();
  try {
    await h.feed([0, 1, 2, 3].map((m) => login(m)));
    await h.feed([4, 5, 6].map((m) => login(m, { ok: true })));
    assert.equal(h.raised.length, 0);
    // Another user: one failure every 3 minutes; any 10 minutes hold at most 4.
    await h.feed(
      [0, 3, 6, 9, 12, 15, 18].map((m) => login(m, { user: "bob", ip: `198.51.100.${m}` })),
    );
    assert.equal(h.raised.length, 0);
  } finally {
    h.close();
  }
});

Deno.test("console_login_failures: one source IP failing for many users raises an IP alert", async () => {
  const h = await harness();
  try {
    const users = ["alice", "bob", "carol", "dave", "erin"];
    await h.feed(users.map((user, i) => login(i, { user, ip: "192.0.2.66" })));
    assert.equal(h.raised.length, 1);
    const [{ draft }] = h.raised;
    assert.equal(draft.key, "ip");
    assert.match(draft.title, /5 failed console logins from 192\.0\.2\.66 within 10m/);
    assert.deepEqual(
      [...(draft.details?.users as string[])].sort(),
      users.map((u) => `${u} (111122223333)`),
    );
  } finally {
    h.close();
  }
});

Deno.test("console_login_failures: a burst alerts once per user and once per IP, then again after a quiet window", async () => {
  const h = await harness();
  try {
    // 15 failures a minute apart: one burst.
    await h.feed(Array.from({ length: 15 }, (_, m) => login(m)));
    assert.deepEqual(h.raised.map((r) => r.draft.key), ["user", "ip"]);
    // Still going 9 minutes later: the same burst.
    await h.feed([23].map((m) => login(m)));
    assert.equal(h.raised.length, 2);
    // Quiet for more than the window, then five more: a new burst.
    await h.feed([40, 41, 42, 43].map((m) => login(m)));
    assert.equal(h.raised.length, 2);
    await h.feed([44].map((m) => login(m)));
    assert.deepEqual(h.raised.map((r) => r.draft.key), ["user", "ip", "user", "ip"]);
    assert.equal(h.raised[2].draft.details?.first, new Date(T0 + 40 * MIN).toISOString());
  } finally {
    h.close();
  }
});

Deno.test("console_login_failures: the same user name in two accounts is counted apart", async () => {
  const h = await harness({ by: ["user"] });
  try {
    await h.feed([0, 1, 2].map((m) => login(m, { account: "111122223333" })));
    await h.feed([3, 4].map((m) => login(m, { account: "444455556666" })));
    assert.equal(h.raised.length, 0);
    await h.feed([5, 6].map((m) => login(m, { account: "111122223333" })));
    assert.equal(h.raised.length, 1);
  } finally {
    h.close();
  }
});

Deno.test("console_login_failures: state survives a commit and stays bounded with an expiry", async () => {
  const h = await harness({ threshold: 5, window: "10m" });
  try {
    await h.feed([0, 1, 2].map((m) => login(m)));
    const commit = await h.commitAndRestart();
    const sets = commit.mutations.filter((m) => m.type === "set");
    assert.equal(sets.length, 2, "one key per user and one per IP");
    for (const set of sets) {
      assert.equal(set.type === "set" && set.expireIn, 10 * MIN + STATE_GRACE_MS);
    }
    // The next pass continues the count from KV.
    await h.feed([3, 4].map((m) => login(m)));
    assert.equal(h.raised.length, 2);
    // Hundreds of failures three minutes apart (never five within ten minutes): old ones are
    // pruned, so a key holds at most the four that fit in the window.
    await h.feed(
      Array.from({ length: 200 }, (_, i) => login(100 + i * 3, { ip: `198.51.100.${i % 250}` })),
    );
    assert.equal(h.raised.length, 2);
    const second = await h.commitAndRestart();
    const userKey = second.mutations.find((m) => m.type === "set" && m.key[2] === "user");
    assert.ok(userKey && userKey.type === "set");
    const hits = (userKey.value as { hits: unknown[] }).hits;
    assert.ok(hits.length <= 4 && hits.length >= 3, `the user key holds ${hits.length} hits`);
  } finally {
    h.close();
  }
});

Deno.test("console_login_failures: threshold and window options change the count", async () => {
  const h = await harness({ threshold: 3, window: "1m", by: ["user"], severity: "high" });
  try {
    await h.feed([0, 0.5].map((m) => login(m)));
    await h.feed([2].map((m) => login(m)));
    assert.equal(
      h.raised.length,
      0,
      "three failures over two minutes do not fit a one-minute window",
    );
    await h.feed([2.2, 2.4].map((m) => login(m)));
    assert.equal(h.raised.length, 1);
    assert.equal(h.raised[0].draft.severity, "high");
    assert.match(h.raised[0].draft.title, /3 failed console logins for alice within 1m/);
  } finally {
    h.close();
  }
});

Deno.test("console_login_failures: options are checked", () => {
  const bad = new OptionsChecker({
    threshold: 1,
    window: "soon",
    by: ["user", "host"],
    severity: "loud",
    x: 1,
  }, "d");
  consoleLoginFailuresDetector.check(bad);
  bad.done();
  assert.deepEqual(bad.problems.map((p) => p.path).sort(), [
    "d.by[1]",
    "d.severity",
    "d.threshold",
    "d.window",
    "d.x",
  ]);
  const good = new OptionsChecker(
    { threshold: 10, window: "30m", by: ["ip"], severity: "high" },
    "d",
  );
  consoleLoginFailuresDetector.check(good);
  good.done();
  assert.deepEqual(good.problems, []);
});
