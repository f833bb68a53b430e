/**
 * Order independence of the login-anomaly detectors through the real pipeline: every permutation
 * of a 5-file scenario, each order read by the local source as 5 files processed in that order,
 * gives exactly the same alert ids.
 */

import assert from "node:assert/strict";
import { resolveConfig } from "../core/config.ts";
import { setLogLevel } from "../core/log.ts";
import { alertId, Runtime, type Summary } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import type { Alert, CloudTrailRecord } from "../core/types.ts";
import { type GeoInfo, staticGeoProvider } from "../mapping/geo.ts";

const GEO: Record<string, GeoInfo> = {
  "81.2.69.142": { country: "GB", city: "London", lat: 51.5074, lon: -0.1278 },
  "81.2.69.160": { country: "GB", city: "London", lat: 51.5074, lon: -0.1278 },
  "62.4.1.1": { country: "FR", city: "Paris", lat: 48.8566, lon: 2.3522 },
  "200.147.67.142": { country: "BR", city: "Sao Paulo", lat: -23.5505, lon: -46.6333 },
  "85.214.132.117": { country: "DE", city: "Berlin", lat: 52.52, lon: 13.405 },
  "52.95.110.1": { country: "US", city: "Seattle", lat: 47.6062, lon: -122.3321 },
};

const MAC =
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const WINDOWS =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

let seq = 0;

function login(user: string, time: string, ip: string, agent = MAC): CloudTrailRecord {
  return {
    eventVersion: "1.10",
    userIdentity: {
      type: "IAMUser",
      principalId: `AIDA${user.toUpperCase()}`,
      arn: `arn:aws:iam::111122223333:user/${user}`,
      accountId: "111122223333",
      userName: user,
    },
    eventTime: time,
    eventSource: "signin.amazonaws.com",
    eventName: "ConsoleLogin",
    awsRegion: "us-east-1",
    sourceIPAddress: ip,
    userAgent: agent,
    requestParameters: null,
    responseElements: { ConsoleLogin: "Success" },
    additionalEventData: { MFAUsed: "Yes" },
    eventID: `login-${++seq}`,
    eventType: "AwsConsoleSignIn",
    recipientAccountId: "111122223333",
  };
}

function call(key: string, time: string, ip: string): CloudTrailRecord {
  return {
    eventVersion: "1.10",
    userIdentity: {
      type: "IAMUser",
      principalId: "AIDADEPLOYBOT",
      arn: "arn:aws:iam::111122223333:user/deploy-bot",
      accountId: "111122223333",
      accessKeyId: key,
      userName: "deploy-bot",
    },
    eventTime: time,
    eventSource: "ec2.amazonaws.com",
    eventName: "DescribeInstances",
    awsRegion: "us-west-2",
    sourceIPAddress: ip,
    userAgent: "aws-cli/2.22.0",
    requestParameters: null,
    responseElements: null,
    eventID: `call-${++seq}`,
    eventType: "AwsApiCall",
    recipientAccountId: "111122223333",
  };
}

const at = (day: number, hh: number, mm: number) =>
  `2026-11-${String(day).padStart(2, "0")}T${String(hh).padStart(2, "0")}:${
    String(mm).padStart(2, "0")
  }:00Z`;

const ACCOUNT = "111122223333";

/** The id of an alert whose key does not depend on the events behind it. */
const id = (detector: string, key: string) => alertId(detector, [], key, ACCOUNT);

function permutations<T>(items: T[]): T[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest])
  );
}

const DETECTORS = {
  impossible_travel: { learningDays: 0 },
  new_country: { learningDays: 0 },
  atypical_country: { learningDays: 0 },
  new_device: { learningDays: 0 },
  user_risk: { threshold: "low" },
};

/**
 * Writes `history` (read first) and then `files` in `order` as separate files, runs one pass of
 * the real pipeline over them and returns the alerts put in the outbox.
 */
async function runInOrder(
  history: CloudTrailRecord[],
  files: CloudTrailRecord[][],
  order: number[],
): Promise<{ alerts: Alert[]; summary: Summary }> {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-order-" });
  const store = await StateStore.open(":memory:");
  try {
    if (history.length) {
      await Deno.writeTextFile(`${dir}/a-history.json`, JSON.stringify({ Records: history }));
    }
    for (let i = 0; i < order.length; i++) {
      await Deno.writeTextFile(`${dir}/b-${i}.json`, JSON.stringify({ Records: files[order[i]] }));
    }
    const config = resolveConfig({
      sources: { logs: { type: "local", path: dir } },
      detectors: DETECTORS,
      sinks: {},
    }, "/");
    const alerts: Alert[] = [];
    const runtime = await Runtime.create(config, {
      store,
      geo: staticGeoProvider(GEO),
      onAlert: (alert) => alerts.push(alert),
    });
    try {
      const summary = await runtime.runOnce();
      assert.equal(summary.objects_read, order.length + (history.length ? 1 : 0));
      return { alerts, summary };
    } finally {
      await runtime.close();
    }
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs every permutation and checks that each gives `expected` (ids, sorted). */
async function assertSameAlertsInEveryOrder(
  history: CloudTrailRecord[],
  files: CloudTrailRecord[][],
  expected: string[],
): Promise<void> {
  const restore = setLogLevel;
  setLogLevel("warn");
  try {
    const orders = permutations(files.map((_, i) => i));
    assert.equal(orders.length, 120);
    for (const order of orders) {
      const { alerts } = await runInOrder(history, files, order);
      const ids = alerts.map((a) => a.id).sort();
      assert.deepEqual(
        ids,
        [...expected].sort(),
        `order ${order.join(",")}: ${alerts.map((a) => `${a.detector}: ${a.title}`).join("; ")}`,
      );
    }
  } finally {
    restore("info");
  }
}

Deno.test("alice GB → GB → BR → BR → GB over a day: all 120 delivery orders give the same alert ids", async () => {
  // Known history: alice logs in from London on a Mac (delivered first, as an older file; a
  // week before, so that it cannot pair with Brazil).
  const history = [
    login("alice", at(3, 8, 0), "81.2.69.142"),
    login("alice", at(10, 18, 0), "81.2.69.142"),
  ];
  const files = [
    [login("alice", at(18, 7, 0), "81.2.69.142")],
    [login("alice", at(18, 8, 30), "81.2.69.160")],
    [login("alice", at(18, 11, 0), "200.147.67.142", WINDOWS)],
    [login("alice", at(18, 12, 15), "200.147.67.142", WINDOWS)],
    [login("alice", at(18, 16, 0), "81.2.69.142")],
  ];
  const expected = [
    id("impossible_travel", "user|alice|BR|GB|2026-11-18"),
    id("new_country", "alice|BR"),
    id("new_device", "alice|windows-10-other-chrome"),
    id("user_risk", "alice|low|2026-11-18"),
  ];
  await assertSameAlertsInEveryOrder(history, files, expected);
});

Deno.test("bob GB → FR → BR → FR → GB: three countries, all 120 delivery orders give the same alert ids", async () => {
  const history = [login("bob", at(10, 9, 0), "81.2.69.142")];
  const files = [
    [login("bob", at(18, 8, 0), "81.2.69.142")],
    [login("bob", at(18, 9, 0), "62.4.1.1")],
    [login("bob", at(18, 12, 0), "200.147.67.142")],
    [login("bob", at(18, 13, 0), "62.4.1.1")],
    [login("bob", at(18, 20, 0), "81.2.69.160")],
  ];
  const expected = [
    // GB→FR 344 km in 1 h; FR→BR and BR→FR; GB→BR 9,490 km in 4 h (FR in between).
    id("impossible_travel", "user|bob|FR|GB|2026-11-18"),
    id("impossible_travel", "user|bob|BR|FR|2026-11-18"),
    id("impossible_travel", "user|bob|BR|GB|2026-11-18"),
    id("new_country", "bob|FR"),
    id("new_country", "bob|BR"),
    // 5 counted alerts: medium (threshold low: the rises to low and to medium both alert).
    id("user_risk", "bob|low|2026-11-18"),
    id("user_risk", "bob|medium|2026-11-18"),
  ];
  await assertSameAlertsInEveryOrder(history, files, expected);
});

Deno.test("credential travel US / DE / BR in 5 files: all 120 delivery orders give the same alert ids", async () => {
  const key = "AKIAEXAMPLEDEPLOY001";
  const burst = (hh: number, mm: number, ip: string) =>
    Array.from({ length: 6 }, (_, i) => call(key, at(18, hh, mm + i * 5), ip));
  const history = [call(key, at(10, 23, 0), "52.95.110.1")];
  const files = [
    burst(9, 0, "52.95.110.1"),
    burst(10, 0, "85.214.132.117"),
    burst(10, 30, "52.95.110.1"),
    burst(14, 0, "200.147.67.142"),
    burst(15, 0, "85.214.132.117"),
  ];
  const expected = [
    id("impossible_travel", `key|${key}|DE|US|2026-11-18`),
    id("impossible_travel", `key|${key}|BR|US|2026-11-18`),
    id("impossible_travel", `key|${key}|BR|DE|2026-11-18`),
    id("user_risk", "deploy-bot|low|2026-11-18"),
  ];
  await assertSameAlertsInEveryOrder(history, files, expected);
});

Deno.test("replaying the same files raises no new alerts", async () => {
  setLogLevel("warn");
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-replay-" });
  const store = await StateStore.open(":memory:");
  try {
    const records = [
      login("carol", at(17, 9, 0), "81.2.69.142"),
      login("carol", at(18, 8, 0), "81.2.69.142"),
      login("carol", at(18, 9, 0), "200.147.67.142", WINDOWS),
      call("AKIAEXAMPLE000000009", at(18, 8, 0), "52.95.110.1"),
      call("AKIAEXAMPLE000000009", at(18, 8, 20), "85.214.132.117"),
    ];
    const run = async (name: string) => {
      await Deno.writeTextFile(`${dir}/${name}.json`, JSON.stringify({ Records: records }));
      const config = resolveConfig({
        sources: { logs: { type: "local", path: dir } },
        detectors: DETECTORS,
        sinks: {},
      }, "/");
      const alerts: Alert[] = [];
      const runtime = await Runtime.create(config, {
        store,
        geo: staticGeoProvider(GEO),
        onAlert: (a) => alerts.push(a),
      });
      try {
        return { summary: await runtime.runOnce(), alerts };
      } finally {
        await runtime.close();
      }
    };
    const first = await run("first");
    assert.deepEqual(first.alerts.map((a) => a.detector).sort(), [
      "impossible_travel",
      "impossible_travel",
      "new_country",
      "new_device",
      "user_risk",
      "user_risk",
    ]);
    // The same records again, in a second file.
    const second = await run("second");
    assert.equal(second.summary.objects_read, 1);
    assert.equal(second.summary.duplicates_skipped, records.length);
    assert.equal(second.alerts.length, 0);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
    setLogLevel("info");
  }
});
