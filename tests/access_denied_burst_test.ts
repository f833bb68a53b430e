/** Tests of the `access_denied_burst` detector (`detectors/access_denied_burst.ts`). */

import assert from "node:assert/strict";
import { Commit, StateCache, StateStore } from "../core/state.ts";
import type { AlertDraft, CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { OptionsChecker } from "../core/validate.ts";
import { GeoCache, noGeoProvider } from "../mapping/geo.ts";
import { normalize } from "../mapping/normalize.ts";
import type { DetectorContext } from "../detectors/mod.ts";
import { STATE_GRACE_MS } from "../detectors/_burst.ts";
import {
  accessDeniedBurstDetector,
  createAccessDeniedBurst,
  isAccessDenied,
  type Options,
} from "../detectors/access_denied_burst.ts";

const T0 = Date.parse("2026-11-20T08:00:00Z");
const SEC = 1000;

async function harness(options: Partial<Options> = {}) {
  const store = await StateStore.open(":memory:");
  const cache = new StateCache(store);
  const detector = createAccessDeniedBurst(options, { name: "denied", baseDir: "." });
  const raised: { draft: AlertDraft; event: NormalizedEvent }[] = [];
  const context: DetectorContext = {
    state: cache.forDetector("denied"),
    alert: (draft, event) => raised.push({ draft, event }),
    suppress: () => {},
    geo: new GeoCache(noGeoProvider()),
  };
  return {
    raised,
    cache,
    async feed(events: NormalizedEvent[]) {
      for (const event of events) await detector.detect!(event, context);
    },
    close: () => store.close(),
  };
}

const ALICE = {
  type: "IAMUser",
  accountId: "111122223333",
  arn: "arn:aws:iam::111122223333:user/alice",
  userName: "alice",
};
const CI_ROLE = {
  type: "AssumedRole",
  accountId: "111122223333",
  arn: "arn:aws:sts::111122223333:assumed-role/ci/run-1",
  sessionContext: {
    sessionIssuer: { type: "Role", userName: "ci", arn: "arn:aws:iam::111122223333:role/ci" },
  },
};

let seq = 0;
function call(
  second: number,
  errorCode: string | undefined,
  extra: CloudTrailRecord = {},
): NormalizedEvent {
  const actions = [
    ["s3.amazonaws.com", "ListBuckets"],
    ["iam.amazonaws.com", "ListUsers"],
    ["ec2.amazonaws.com", "DescribeInstances"],
    ["secretsmanager.amazonaws.com", "ListSecrets"],
  ];
  const [eventSource, eventName] = actions[seq % actions.length];
  return normalize({
    eventVersion: "1.09",
    eventTime: new Date(T0 + second * SEC).toISOString(),
    eventID: `call-${++seq}`,
    eventSource,
    eventName,
    awsRegion: "eu-west-1",
    sourceIPAddress: "203.0.113.50",
    recipientAccountId: "111122223333",
    userIdentity: ALICE,
    ...(errorCode
      ? { errorCode, errorMessage: "User is not authorized to perform this action" }
      : {}),
    ...extra,
  });
}

Deno.test("isAccessDenied() accepts the permission errors and nothing else", () => {
  for (
    const code of [
      "AccessDenied",
      "AccessDeniedException",
      "Client.UnauthorizedOperation",
      "UnauthorizedOperation",
    ]
  ) {
    assert.equal(isAccessDenied(code), true, code);
  }
  for (
    const code of [
      undefined,
      "",
      "ThrottlingException",
      "NoSuchEntity",
      "InvalidClientTokenId",
      "ValidationError",
    ]
  ) {
    assert.equal(isAccessDenied(code), false, String(code));
  }
});

Deno.test("access_denied_burst: twenty denied calls within five minutes raise one alert", async () => {
  const h = await harness();
  try {
    const codes = ["AccessDenied", "AccessDeniedException", "Client.UnauthorizedOperation"];
    const events = Array.from({ length: 20 }, (_, i) => call(i * 14, codes[i % 3]));
    await h.feed(events.slice(0, 19));
    assert.equal(h.raised.length, 0, "nineteen is under the threshold");
    await h.feed(events.slice(19));
    assert.equal(h.raised.length, 1);
    const { draft, event } = h.raised[0];
    assert.equal(event, events[19]);
    assert.match(draft.title, /20 access-denied errors for alice within 5m/);
    assert.deepEqual(draft.event_ids, events.map((e) => e.event_id));
    assert.equal(draft.details?.principal, "arn:aws:iam::111122223333:user/alice");
    assert.equal(draft.details?.denied, 20);
    assert.deepEqual([...(draft.details?.actions as string[])].sort(), [
      "ec2:DescribeInstances",
      "iam:ListUsers",
      "s3:ListBuckets",
      "secretsmanager:ListSecrets",
    ]);
  } finally {
    h.close();
  }
});

Deno.test("access_denied_burst: other errors and successful calls are not counted", async () => {
  const h = await harness({ threshold: 5 });
  try {
    await h.feed([0, 1, 2, 3].map((s) => call(s, "AccessDenied")));
    await h.feed([4, 5, 6].map((s) => call(s, "ThrottlingException")));
    await h.feed([7, 8, 9].map((s) => call(s, undefined)));
    assert.equal(h.raised.length, 0);
    await h.feed([10].map((s) => call(s, "AccessDenied")));
    assert.equal(h.raised.length, 1);
  } finally {
    h.close();
  }
});

Deno.test("access_denied_burst: principals are counted apart (ARN first)", async () => {
  const h = await harness({ threshold: 10 });
  try {
    await h.feed(Array.from({ length: 9 }, (_, i) => call(i, "AccessDenied")));
    await h.feed(
      Array.from({ length: 9 }, (_, i) => call(i, "AccessDenied", { userIdentity: CI_ROLE })),
    );
    assert.equal(h.raised.length, 0);
    await h.feed([20].map((s) => call(s, "AccessDenied", { userIdentity: CI_ROLE })));
    assert.equal(h.raised.length, 1);
    assert.equal(
      h.raised[0].draft.details?.principal,
      "arn:aws:sts::111122223333:assumed-role/ci/run-1",
    );
    assert.match(h.raised[0].draft.title, / for ci within/);
  } finally {
    h.close();
  }
});

Deno.test("access_denied_burst: calls spread wider than the window raise nothing", async () => {
  const h = await harness({ threshold: 20, window: "5m" });
  try {
    // One denied call every 20 s for ten minutes: at most 15 in any five minutes.
    await h.feed(Array.from({ length: 30 }, (_, i) => call(i * 20, "AccessDenied")));
    assert.equal(h.raised.length, 0);
  } finally {
    h.close();
  }
});

Deno.test("access_denied_burst: one alert per burst, a new one after a quiet window", async () => {
  const h = await harness({ threshold: 5, window: "1m" });
  try {
    await h.feed(Array.from({ length: 50 }, (_, i) => call(i * 5, "AccessDenied")));
    assert.equal(h.raised.length, 1, "fifty calls five seconds apart are one burst");
    await h.feed(Array.from({ length: 5 }, (_, i) => call(400 + i, "AccessDenied")));
    assert.equal(h.raised.length, 2);
  } finally {
    h.close();
  }
});

Deno.test("access_denied_burst: AWS service calls and ignored principals are skipped", async () => {
  const h = await harness({
    threshold: 3,
    ignoredPrincipals: ["ci", "arn:aws:iam::111122223333:user/alice"],
  });
  try {
    await h.feed(Array.from({ length: 5 }, (_, i) => call(i, "AccessDenied")));
    await h.feed(
      Array.from({ length: 5 }, (_, i) => call(i, "AccessDenied", { userIdentity: CI_ROLE })),
    );
    const service = { type: "AWSService", invokedBy: "config.amazonaws.com" };
    await h.feed(
      Array.from({ length: 5 }, (_, i) => call(i, "AccessDenied", { userIdentity: service })),
    );
    assert.equal(h.raised.length, 0);
    const bob = { ...ALICE, arn: "arn:aws:iam::111122223333:user/bob", userName: "bob" };
    await h.feed(
      Array.from({ length: 3 }, (_, i) => call(i, "AccessDenied", { userIdentity: bob })),
    );
    assert.equal(h.raised.length, 1);
  } finally {
    h.close();
  }
});

Deno.test("access_denied_burst: state is pruned to the window and expires", async () => {
  const h = await harness({ threshold: 20, window: "5m" });
  try {
    await h.feed(Array.from({ length: 300 }, (_, i) => call(i * 60, "AccessDenied")));
    assert.equal(h.raised.length, 0);
    const commit = new Commit();
    h.cache.flush(commit);
    assert.equal(commit.mutations.length, 1);
    const [mutation] = commit.mutations;
    assert.ok(mutation.type === "set");
    assert.equal(mutation.expireIn, 5 * 60 * SEC + STATE_GRACE_MS);
    const hits = (mutation.value as { hits: unknown[] }).hits;
    assert.ok(hits.length <= 5, `holds ${hits.length} hits`);
  } finally {
    h.close();
  }
});

Deno.test("access_denied_burst: options are checked", () => {
  const bad = new OptionsChecker({
    threshold: 0,
    window: -5,
    severity: "x",
    ignoredPrincipals: "ci",
    y: 1,
  }, "d");
  accessDeniedBurstDetector.check(bad);
  bad.done();
  assert.deepEqual(bad.problems.map((p) => p.path).sort(), [
    "d.ignoredPrincipals",
    "d.severity",
    "d.threshold",
    "d.window",
    "d.y",
  ]);
  const good = new OptionsChecker({
    threshold: 50,
    window: "10m",
    severity: "low",
    ignoredPrincipals: ["scanner"],
  }, "d");
  accessDeniedBurstDetector.check(good);
  good.done();
  assert.deepEqual(good.problems, []);
});
