import assert from "node:assert/strict";
import { alertId, buildAlert } from "../core/pipeline.ts";
import { StateCache, StateStore } from "../core/state.ts";
import type { Alert, AlertDraft, CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { seededRandom } from "./helpers/fault_proxy.ts";
import { haversineKm } from "../detectors/_login.ts";
import {
  createImpossibleTravel,
  impossibleTravelDetector,
  type Login,
  type LoginDay,
  type Options,
  type Track,
} from "../detectors/impossible_travel.ts";
import type { Detector, DetectorContext } from "../detectors/mod.ts";
import { GeoCache, type GeoInfo, staticGeoProvider } from "../mapping/geo.ts";
import { normalize } from "../mapping/normalize.ts";
import { OptionsChecker } from "../core/validate.ts";

// ---------------------------------------------------------------------------------------------
// Fixtures: a fixed fake geo table and CloudTrail records built by code.

const GEO: Record<string, GeoInfo> = {
  "81.2.69.142": { country: "GB", city: "London", lat: 51.5074, lon: -0.1278 },
  "81.2.69.160": { country: "GB", city: "London", lat: 51.5074, lon: -0.1278 },
  "2.24.0.1": { country: "GB", city: "Manchester", lat: 53.4808, lon: -2.2426 },
  "62.4.1.1": { country: "FR", city: "Paris", lat: 48.8566, lon: 2.3522 },
  "200.147.67.142": { country: "BR", city: "Sao Paulo", lat: -23.5505, lon: -46.6333 },
  "85.214.132.117": { country: "DE", city: "Berlin", lat: 52.52, lon: 13.405 },
  "52.95.110.1": { country: "US", city: "Seattle", lat: 47.6062, lon: -122.3321 },
  "24.24.24.24": { country: "US", city: "New York", lat: 40.7128, lon: -74.006 },
  "2a00:1450:4009::1": { country: "GB", city: "London", lat: 51.5074, lon: -0.1278 },
  "2804:14c::1": { country: "BR", city: "Sao Paulo", lat: -23.5505, lon: -46.6333 },
  // Two points on the equator, 2° apart, for threshold tests.
  "41.0.0.1": { country: "GH", lat: 0, lon: 0 },
  "41.0.0.2": { country: "GA", lat: 0, lon: 2 },
};

const MAC =
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

let seq = 0;

function identity(user: string, accessKeyId?: string): Record<string, unknown> {
  return {
    type: "IAMUser",
    principalId: `AIDA${user.toUpperCase()}`,
    arn: `arn:aws:iam::111122223333:user/${user}`,
    accountId: "111122223333",
    userName: user,
    ...(accessKeyId ? { accessKeyId } : {}),
  };
}

function login(
  user: string,
  time: string,
  ip: string,
  extra: { failed?: boolean; agent?: string; id?: string } = {},
): CloudTrailRecord {
  return {
    eventVersion: "1.10",
    userIdentity: identity(user),
    eventTime: time,
    eventSource: "signin.amazonaws.com",
    eventName: "ConsoleLogin",
    awsRegion: "us-east-1",
    sourceIPAddress: ip,
    userAgent: extra.agent ?? MAC,
    requestParameters: null,
    responseElements: { ConsoleLogin: extra.failed ? "Failure" : "Success" },
    additionalEventData: { MFAUsed: "Yes" },
    eventID: extra.id ?? `login-${++seq}`,
    eventType: "AwsConsoleSignIn",
    recipientAccountId: "111122223333",
  };
}

function call(
  key: string,
  user: string,
  time: string,
  source: string,
  extra: { invokedBy?: string; identity?: Record<string, unknown> } = {},
): CloudTrailRecord {
  const who = extra.identity ?? identity(user, key);
  if (extra.invokedBy) who.invokedBy = extra.invokedBy;
  return {
    eventVersion: "1.10",
    userIdentity: who,
    eventTime: time,
    eventSource: "ec2.amazonaws.com",
    eventName: "DescribeInstances",
    awsRegion: "us-west-2",
    sourceIPAddress: source,
    userAgent: "aws-cli/2.22.0",
    requestParameters: null,
    responseElements: null,
    eventID: `call-${++seq}`,
    eventType: "AwsApiCall",
    recipientAccountId: "111122223333",
  };
}

const at = (day: number, hh: number, mm: number, ss = 0) =>
  `2026-11-${String(day).padStart(2, "0")}T${String(hh).padStart(2, "0")}:${
    String(mm).padStart(2, "0")
  }:${String(ss).padStart(2, "0")}Z`;

// ---------------------------------------------------------------------------------------------
// A harness that runs one detector the way the pipeline does (geo first, then detect()).

class Harness {
  readonly alerts: Alert[] = [];
  readonly suppressed: { alert: Alert; filter: string }[] = [];
  writes = 0;
  readonly detector: Detector;
  readonly store: StateStore;
  readonly #geo: GeoCache;
  readonly #context: DetectorContext;

  private constructor(detector: Detector, store: StateStore, geo: GeoCache) {
    this.detector = detector;
    this.store = store;
    this.#geo = geo;
    const state = new StateCache(store).forDetector(detector.name);
    const build = (draft: AlertDraft, event: NormalizedEvent): Alert =>
      buildAlert(detector.name, draft, event);
    this.#context = {
      state: {
        get: (key) => state.get(key),
        peek: (key) => state.peek(key),
        set: (key, value, options) => {
          this.writes++;
          state.set(key, value, options);
        },
        delete: (key) => state.delete(key),
      },
      geo,
      alert: (draft, event) => this.alerts.push(build(draft, event)),
      suppress: (draft, event, filter) =>
        this.suppressed.push({ alert: build(draft, event), filter }),
    };
  }

  static async create(
    options: Partial<Options> = {},
    name = "impossible_travel",
    tuning: { fastCalls?: boolean } = {},
  ) {
    const detector = createImpossibleTravel(
      { learningDays: 0, ...options },
      { name, baseDir: "." },
      tuning,
    );
    return new Harness(
      detector,
      await StateStore.open(":memory:"),
      new GeoCache(staticGeoProvider(GEO)),
    );
  }

  async feed(...records: CloudTrailRecord[]): Promise<void> {
    for (const record of records) {
      const event = normalize(record);
      if (event.ip) {
        await this.#geo.ready(event.ip);
        const geo = this.#geo.lookup(event.ip);
        if (geo) Object.assign(event, geo);
      }
      await this.detector.detect!(event, this.#context);
    }
  }

  state<T>(key: Deno.KvKey): Promise<T | undefined> {
    return this.#context.state.get<T>(key);
  }

  close(): void {
    this.store.close();
  }
}

async function withHarness(
  options: Partial<Options>,
  fn: (h: Harness) => Promise<void>,
): Promise<void> {
  const h = await Harness.create(options);
  try {
    await fn(h);
  } finally {
    h.close();
  }
}

// ---------------------------------------------------------------------------------------------

Deno.test("impossible_travel alerts on a login from Brazil 90 minutes after one from London", async () => {
  await withHarness({}, async (h) => {
    const gb = login("alice", at(18, 8, 0), "81.2.69.142");
    const br = login("alice", at(18, 9, 30), "200.147.67.142");
    await h.feed(gb, br);
    assert.equal(h.alerts.length, 1);
    const [alert] = h.alerts;
    assert.equal(alert.severity, "high");
    assert.equal(alert.user, "alice");
    assert.equal(alert.ip, "200.147.67.142");
    assert.equal(alert.time, "2026-11-18T09:30:00Z");
    assert.deepEqual(alert.event_ids, [gb.eventID, br.eventID]);
    const km = haversineKm(51.5074, -0.1278, -23.5505, -46.6333);
    assert.equal(alert.details.distance_km, Math.round(km));
    assert.equal(alert.details.speed_kmh, Math.round(km / 1.5));
    assert.deepEqual(alert.details.from, {
      ip: "81.2.69.142",
      time: "2026-11-18T08:00:00Z",
      country: "GB",
      city: "London",
      lat: 51.5074,
      lon: -0.1278,
      event_id: gb.eventID,
    });
    assert.equal((alert.details.to as Record<string, unknown>).event_id, br.eventID);
    assert.equal((alert.details.to as Record<string, unknown>).country, "BR");
    assert.equal(alert.details.scope, "user");
    assert.equal(
      alert.id,
      alertId("impossible_travel", [], "user|alice|BR|GB|2026-11-18", "111122223333"),
    );
  });
});

interface Case {
  name: string;
  options?: Partial<Options>;
  records: () => CloudTrailRecord[];
  alerts: number;
  suppressed?: string[];
}

const cases: Case[] = [
  {
    name: "Δt = 0 between two places 222 km apart counts as 0.001 h",
    records: () => [login("u", at(18, 8, 0), "41.0.0.1"), login("u", at(18, 8, 0), "41.0.0.2")],
    alerts: 1,
  },
  {
    name: "Δt = 0 at the same place does not alert",
    records: () => [
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 8, 0), "81.2.69.160"),
    ],
    alerts: 0,
  },
  {
    name: "a speed exactly at maxSpeedKmh does not alert",
    options: { maxSpeedKmh: haversineKm(0, 0, 0, 2), ignoreSameCountry: false },
    records: () => [login("u", at(18, 8, 0), "41.0.0.1"), login("u", at(18, 9, 0), "41.0.0.2")],
    alerts: 0,
  },
  {
    name: "a speed just above maxSpeedKmh alerts",
    options: { maxSpeedKmh: haversineKm(0, 0, 0, 2) - 1e-6 },
    records: () => [login("u", at(18, 8, 0), "41.0.0.1"), login("u", at(18, 9, 0), "41.0.0.2")],
    alerts: 1,
  },
  {
    name: "a distance exactly at minDistanceKm does not alert",
    options: { minDistanceKm: haversineKm(0, 0, 0, 2) },
    records: () => [login("u", at(18, 8, 0), "41.0.0.1"), login("u", at(18, 8, 1), "41.0.0.2")],
    alerts: 0,
  },
  {
    name: "London to Paris (344 km) in 2 h (172 km/h) is possible",
    records: () => [login("u", at(18, 8, 0), "81.2.69.142"), login("u", at(18, 10, 0), "62.4.1.1")],
    alerts: 0,
  },
  {
    name: "London to Paris in 40 min (516 km/h) is not",
    records: () => [login("u", at(18, 8, 0), "81.2.69.142"), login("u", at(18, 8, 40), "62.4.1.1")],
    alerts: 1,
  },
  {
    name: "New York to Seattle in 1 h is filtered as same-country travel by default",
    records:
      () => [login("u", at(18, 8, 0), "24.24.24.24"), login("u", at(18, 9, 0), "52.95.110.1")],
    alerts: 0,
    suppressed: ["ignoreSameCountry"],
  },
  {
    name: "same-country travel alerts with ignoreSameCountry: false",
    options: { ignoreSameCountry: false },
    records:
      () => [login("u", at(18, 8, 0), "24.24.24.24"), login("u", at(18, 9, 0), "52.95.110.1")],
    alerts: 1,
  },
  {
    name: "an ignored country pair is filtered in either direction",
    options: { ignoredCountryPairs: [["BR", "GB"]] },
    records: () => [
      login("u", at(18, 8, 0), "200.147.67.142"),
      login("u", at(18, 9, 0), "81.2.69.142"),
    ],
    alerts: 0,
    suppressed: ["ignoredCountryPairs"],
  },
  {
    name: "IPv6 logins are compared like IPv4 ones",
    records: () => [
      login("u", at(18, 8, 0), "2a00:1450:4009::1"),
      login("u", at(18, 9, 0), "2804:14c::1"),
    ],
    alerts: 1,
  },
  {
    name: "a login from a private IP has no place and is not compared",
    records: () => [
      login("u", at(18, 8, 0), "10.1.2.3"),
      login("u", at(18, 8, 30), "192.168.1.1"),
      login("u", at(18, 9, 0), "200.147.67.142"),
    ],
    alerts: 0,
  },
  {
    name: "a login whose source is not an IP is not compared",
    records: () => [
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 8, 30), "signin.amazonaws.com"),
      login("u", at(18, 9, 0), "AWS Internal"),
    ],
    alerts: 0,
  },
  {
    name: "a failed login is counted, not compared",
    records: () => [
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 8, 30), "200.147.67.142", { failed: true }),
      login("u", at(18, 9, 0), "81.2.69.142"),
    ],
    alerts: 0,
  },
  {
    name: "interleaved users are compared each with their own logins",
    records: () => [
      login("alice", at(18, 8, 0), "81.2.69.142"),
      login("bob", at(18, 8, 5), "200.147.67.142"),
      login("alice", at(18, 8, 10), "81.2.69.160"),
      login("bob", at(18, 8, 15), "200.147.67.142"),
      login("bob", at(18, 8, 25), "2a00:1450:4009::1"),
      login("alice", at(18, 8, 30), "81.2.69.142"),
    ],
    alerts: 1,
  },
  {
    name: "GB → FR → BR within an hour alerts for every pair of countries",
    records: () => [
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 8, 30), "62.4.1.1"),
      login("u", at(18, 9, 0), "200.147.67.142"),
    ],
    alerts: 3,
  },
  {
    name: "logins from two British cities and a jump to Brazil give one alert for GB/BR",
    records: () => [
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 10, 0), "2.24.0.1"),
      login("u", at(18, 11, 0), "200.147.67.142"),
      login("u", at(18, 13, 0), "81.2.69.160"),
    ],
    alerts: 1,
  },
  {
    name: "a return trip on the same UTC day does not alert twice",
    records: () => [
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 9, 0), "200.147.67.142"),
      login("u", at(18, 10, 0), "81.2.69.142"),
    ],
    alerts: 1,
  },
  {
    name: "only the user scope: access-key travel does not alert",
    options: { scopes: ["user"] },
    records: () => [
      call("AKIAEXAMPLE000000001", "ci", at(18, 8, 0), "52.95.110.1"),
      call("AKIAEXAMPLE000000001", "ci", at(18, 8, 20), "85.214.132.117"),
    ],
    alerts: 0,
  },
  {
    name: "learning period: alerts within learningDays of the first login are filtered",
    options: { learningDays: 14 },
    records: () => [
      login("u", at(1, 8, 0), "81.2.69.142"),
      login("u", at(1, 9, 0), "200.147.67.142"),
      login("u", at(20, 8, 0), "81.2.69.142"),
      login("u", at(20, 9, 0), "200.147.67.142"),
    ],
    alerts: 1,
    suppressed: ["learningDays"],
  },
];

for (const c of cases) {
  Deno.test(`impossible_travel: ${c.name}`, async () => {
    await withHarness(c.options ?? {}, async (h) => {
      await h.feed(...c.records());
      assert.equal(h.alerts.length, c.alerts, JSON.stringify(h.alerts.map((a) => a.title)));
      assert.deepEqual(h.suppressed.map((s) => s.filter), c.suppressed ?? []);
    });
  });
}

Deno.test("impossible_travel compares a late login with the next one as well as the previous", async () => {
  await withHarness({}, async (h) => {
    // Brazil arrives first, London (earlier in event time) afterwards.
    await h.feed(
      login("alice", at(18, 9, 30), "200.147.67.142"),
      login("alice", at(18, 8, 0), "81.2.69.142"),
    );
    assert.equal(h.alerts.length, 1);
    const { from, to } = h.alerts[0].details as Record<string, Record<string, unknown>>;
    assert.equal(from.country, "GB");
    assert.equal(to.country, "BR");
    assert.equal(h.alerts[0].time, "2026-11-18T09:30:00Z");
  });
});

Deno.test("impossible_travel raises VIP users' alerts to critical", async () => {
  await withHarness({ vipUsers: ["^ceo$"] }, async (h) => {
    await h.feed(
      login("ceo", at(18, 8, 0), "81.2.69.142"),
      login("ceo", at(18, 9, 0), "200.147.67.142"),
      login("dev", at(18, 8, 0), "81.2.69.142"),
      login("dev", at(18, 9, 0), "200.147.67.142"),
    );
    assert.deepEqual(h.alerts.map((a) => [a.user, a.severity]), [
      ["ceo", "critical"],
      ["dev", "high"],
    ]);
  });
});

Deno.test("impossible_travel puts the failed-login count in the alert details", async () => {
  await withHarness({}, async (h) => {
    await h.feed(
      login("u", at(18, 7, 0), "200.147.67.142", { failed: true }),
      login("u", at(18, 7, 1), "200.147.67.142", { failed: true }),
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 9, 0), "200.147.67.142"),
    );
    assert.equal(h.alerts.length, 1);
    assert.equal(h.alerts[0].details.failed_logins, 2);
  });
});

Deno.test("impossible_travel keeps at most maxLogins logins per user, one value per day", async () => {
  await withHarness({ maxLogins: 3 }, async (h) => {
    for (let d = 1; d <= 3; d++) {
      for (let hh = 8; hh < 10; hh++) await h.feed(login("u", at(d, hh, 0), "81.2.69.142"));
    }
    const key = ["user", "111122223333", "u"];
    const track = await h.state<Track>(key);
    const day = (d: number) => Date.UTC(2026, 10, d) / 86_400_000;
    assert.deepEqual(track?.d, [[day(2), 1], [day(3), 2]]);
    assert.equal(await h.state([...key, day(1)]), undefined);
    const kept = await h.state<LoginDay>([...key, day(2)]);
    assert.deepEqual(kept?.l, [Date.parse(at(2, 9, 0)) - day(2) * 86_400_000, 0]);
    assert.equal(track?.first?.[0], Date.parse(at(1, 8, 0)));
  });
});

Deno.test("impossible_travel keeps each place of a day once, and drops places no login uses", async () => {
  await withHarness({ maxLogins: 3 }, async (h) => {
    await h.feed(
      login("u", at(18, 8, 0), "81.2.69.142", { id: "a" }),
      login("u", at(18, 9, 0), "62.4.1.1", { id: "b" }),
      login("u", at(18, 10, 0), "81.2.69.142", { id: "c" }),
    );
    const key = ["user", "111122223333", "u", Date.UTC(2026, 10, 18) / 86_400_000];
    const day = await h.state<LoginDay>(key);
    assert.deepEqual(day?.p.map((p) => p[0]), ["81.2.69.142", "62.4.1.1"]);
    assert.deepEqual(day?.i, ["a", "b", "c"]);
    assert.deepEqual(day?.l.filter((_, k) => k % 2 === 1), [0, 1, 0]);
    // A fourth login pushes out the first; the Paris place goes with the one login that used it
    // once a fifth pushes out that one too.
    await h.feed(login("u", at(18, 11, 0), "81.2.69.142", { id: "d" }));
    await h.feed(login("u", at(18, 12, 0), "81.2.69.142", { id: "e" }));
    const trimmed = await h.state<LoginDay>(key);
    assert.deepEqual(trimmed?.i, ["c", "d", "e"]);
    assert.deepEqual(trimmed?.p.map((p) => p[0]), ["81.2.69.142"]);
    assert.deepEqual(trimmed?.l.filter((_, k) => k % 2 === 1), [0, 0, 0]);
  });
});

Deno.test("impossible_travel reads the login lists earlier versions stored", async () => {
  await withHarness({}, async (h) => {
    const key = ["det", "impossible_travel", "user", "111122223333", "alice"];
    const day = Date.UTC(2026, 10, 18) / 86_400_000;
    const london: Login = [
      Date.parse(at(18, 8, 0)),
      "old-1",
      "81.2.69.142",
      "GB",
      51.5074,
      -0.1278,
      "London",
    ];
    await h.store.kv.set(key, { d: [[day, 1]], first: [london[0], london[1]] } satisfies Track);
    await h.store.kv.set([...key, day], [london]);
    await h.feed(login("alice", at(18, 9, 30), "200.147.67.142", { id: "new-1" }));
    assert.equal(h.alerts.length, 1);
    assert.equal((h.alerts[0].details.from as Record<string, unknown>).event_id, "old-1");
    // The day is written back in the current form, with both logins.
    const stored = await h.state<LoginDay>(["user", "111122223333", "alice", day]);
    assert.deepEqual(stored?.i, ["old-1", "new-1"]);
    assert.deepEqual(stored?.p.map((p) => p[1]), ["GB", "BR"]);
  });
});

Deno.test("impossible_travel replays of the same logins raise nothing new", async () => {
  await withHarness({}, async (h) => {
    const records = [
      login("u", at(18, 8, 0), "81.2.69.142"),
      login("u", at(18, 9, 0), "200.147.67.142"),
      call("AKIAEXAMPLE000000001", "ci", at(18, 8, 0), "52.95.110.1"),
      call("AKIAEXAMPLE000000001", "ci", at(18, 8, 20), "85.214.132.117"),
    ];
    await h.feed(...records);
    assert.equal(h.alerts.length, 2);
    const writes = h.writes;
    await h.feed(...records);
    assert.equal(h.alerts.length, 2);
    assert.equal(h.writes, writes);
  });
});

// ---------------------------------------------------------------------------------------------
// Credential travel (access keys)

const KEY = "AKIAEXAMPLEDEPLOY001";

Deno.test("credential travel: an access key used from the US then Germany 20 minutes later", async () => {
  await withHarness({}, async (h) => {
    await h.feed(
      call(KEY, "deploy-bot", at(18, 11, 0), "52.95.110.1"),
      call(KEY, "deploy-bot", at(18, 11, 20), "85.214.132.117"),
    );
    assert.equal(h.alerts.length, 1);
    const [alert] = h.alerts;
    assert.equal(alert.details.scope, "access_key");
    assert.equal(alert.details.access_key_id, KEY);
    assert.equal(alert.user, "deploy-bot");
    assert.equal(alert.severity, "high");
    assert.match(alert.title, /^Credential travel: access key AKIAEXAMPLEDEPLOY001 \(deploy-bot\)/);
    assert.equal(
      alert.id,
      alertId("impossible_travel", [], `key|${KEY}|DE|US|2026-11-18`, "111122223333"),
    );
  });
});

Deno.test("credential travel ignores calls AWS services make with the key", async () => {
  await withHarness({}, async (h) => {
    await h.feed(
      call(KEY, "deploy-bot", at(18, 11, 0), "52.95.110.1"),
      // A service acting for the user, from an address in Germany.
      call(KEY, "deploy-bot", at(18, 11, 5), "85.214.132.117", {
        invokedBy: "cloudformation.amazonaws.com",
      }),
      // Non-IP sources.
      call(KEY, "deploy-bot", at(18, 11, 6), "AWS Internal"),
      call(KEY, "deploy-bot", at(18, 11, 7), "ec2.amazonaws.com"),
      // An AWS service identity carrying the key.
      call(KEY, "deploy-bot", at(18, 11, 8), "85.214.132.117", {
        identity: { type: "AWSService", invokedBy: "lambda.amazonaws.com", accessKeyId: KEY },
      }),
      // A private address (VPC endpoint).
      call(KEY, "deploy-bot", at(18, 11, 9), "10.0.0.12"),
    );
    assert.equal(h.alerts.length, 0);
    assert.equal(h.suppressed.length, 0);
  });
});

Deno.test("credential travel: calls inside a known visit change and write nothing", async () => {
  await withHarness({}, async (h) => {
    await h.feed(
      call(KEY, "deploy-bot", at(18, 10, 0), "52.95.110.1"),
      call(KEY, "deploy-bot", at(18, 10, 10), "52.95.110.1"),
      call(KEY, "deploy-bot", at(18, 10, 20), "52.95.110.1"),
    );
    const writes = h.writes;
    for (let s = 0; s < 50; s++) {
      await h.feed(call(KEY, "deploy-bot", at(18, 10, 1 + (s % 18), s % 60), "52.95.110.1"));
    }
    assert.equal(h.writes, writes);
    const track = await h.state<Track>(["key", KEY]);
    assert.equal(track?.v?.length, 1);
    assert.equal(track?.v?.[0][0], Date.parse(at(18, 10, 0)));
    assert.equal(track?.v?.[0][1], Date.parse(at(18, 10, 20)));
  });
});

Deno.test("credential travel: a call from Germany delivered late, while the key was busy in the US", async () => {
  await withHarness({}, async (h) => {
    for (let m = 0; m < 120; m += 5) {
      await h.feed(call(KEY, "deploy-bot", at(18, 10 + Math.floor(m / 60), m % 60), "52.95.110.1"));
    }
    await h.feed(call(KEY, "deploy-bot", at(18, 11, 2), "85.214.132.117"));
    assert.equal(h.alerts.length, 1);
    assert.equal(h.alerts[0].details.concurrent, true);
    assert.match(h.alerts[0].title, /at both places at once/);
  });
});

Deno.test("credential travel keeps temporary keys' state for 3 days and long-term keys' for idleExpiry", async () => {
  const store = await StateStore.open(":memory:");
  try {
    const detector = createImpossibleTravel({}, { name: "it", baseDir: "." });
    const sets: [Deno.KvKey, number | undefined][] = [];
    const cache = new StateCache(store).forDetector("it");
    const context: DetectorContext = {
      state: {
        get: (k) => cache.get(k),
        peek: (k) => cache.peek(k),
        set: (k, v, o) => {
          sets.push([k, o?.expireIn]);
          cache.set(k, v, o);
        },
        delete: (k) => cache.delete(k),
      },
      geo: new GeoCache(staticGeoProvider(GEO)),
      alert: () => {},
      suppress: () => {},
    };
    for (const key of ["ASIAEXAMPLE000000001", KEY]) {
      const event = normalize(call(key, "ci", at(18, 8, 0), "52.95.110.1"));
      Object.assign(event, GEO["52.95.110.1"]);
      await detector.detect!(event, context);
    }
    assert.deepEqual(sets, [
      [["key", "ASIAEXAMPLE000000001"], 3 * 86_400_000],
      [["key", KEY], 60 * 86_400_000],
    ]);
  } finally {
    store.close();
  }
});

Deno.test("impossible_travel options are checked", () => {
  const check = new OptionsChecker({
    scopes: ["user", "ip"],
    maxSpeedKmh: 0,
    ignoredCountryPairs: [["US"], ["US", "CA"]],
    ignoredIps: ["10.0.0.0/33"],
    ignoredUsers: ["("],
    learningDays: -1,
    maxLogins: 1000,
    bogus: true,
  }, "detectors.it");
  impossibleTravelDetector.check(check);
  check.done();
  assert.deepEqual(check.problems.map((p) => p.path).sort(), [
    "detectors.it.bogus",
    "detectors.it.ignoredCountryPairs[0]",
    "detectors.it.ignoredIps[0]",
    "detectors.it.ignoredUsers[0]",
    "detectors.it.learningDays",
    "detectors.it.maxLogins",
    "detectors.it.maxSpeedKmh",
    "detectors.it.scopes[1]",
  ]);
});

Deno.test("credential travel: the shortcut for a busy key's usual call changes nothing (random calls)", async () => {
  const ips = [
    "52.95.110.1",
    "24.24.24.24",
    "85.214.132.117",
    "81.2.69.142",
    "81.2.69.160",
    "2.24.0.1",
    "62.4.1.1",
  ];
  const steps = [0, 5_000, 60_000, 600_000, 840_000, 900_000, 960_000, 2_400_000, 10_800_000];
  for (let seed = 1; seed <= 40; seed++) {
    const r = seededRandom(seed);
    // Filters that suppress some pairs and not others make later pairs raise what earlier ones
    // did not.
    const options: Partial<Options> = [
      {},
      { maxKeyVisits: 4 },
      { ignoredIps: ["81.2.69.160", "85.214.132.117"] },
      { learningDays: 1 },
    ][seed % 4];
    const records: CloudTrailRecord[] = [];
    let time = Date.parse("2026-11-18T21:00:00Z");
    const home = ["AKIAFASTPATH0000001", "AKIAFASTPATH0000002", "ASIAFASTPATH0000003"];
    for (let i = 0; i < 300; i++) {
      time += steps[Math.floor(r() * steps.length)];
      const key = Math.floor(r() * home.length);
      // Mostly the key's usual place, sometimes another; a quarter arrive late (out of order).
      const ip = r() < 0.8 ? ips[key] : ips[Math.floor(r() * ips.length)];
      const at = r() < 0.25 ? time - Math.floor(r() * (r() < 0.5 ? 1_200_000 : 3_600_000)) : time;
      const record = call(
        home[key],
        `user-${key}`,
        new Date(at).toISOString().slice(0, 19) + "Z",
        ip,
      );
      records.push(record, ...(r() < 0.05 ? [record] : []));
    }
    const [fast, general] = [
      await Harness.create(options, "impossible_travel", { fastCalls: true }),
      await Harness.create(options, "impossible_travel", { fastCalls: false }),
    ];
    try {
      await fast.feed(...records);
      await general.feed(...records);
      assert.deepEqual(fast.alerts, general.alerts, `seed ${seed}`);
      assert.deepEqual(fast.suppressed, general.suppressed, `seed ${seed}`);
      assert.equal(fast.writes, general.writes, `seed ${seed}`);
      for (const key of home) {
        const [a, b] = [
          await fast.state<Track>(["key", key]),
          await general.state<Track>(["key", key]),
        ];
        assert.deepEqual(a, b, `seed ${seed}, ${key}`);
      }
      assert.ok(general.alerts.length + general.suppressed.length > 0, `seed ${seed}: no travel`);
    } finally {
      fast.close();
      general.close();
    }
  }
});

Deno.test("credential travel compares a usual-looking call with a visit elsewhere that ended later", async () => {
  // learningDays: 1 from the first call (17th, 12:00): pairs before the 18th, 12:00 are filtered.
  await withHarness({ learningDays: 1 }, async (h) => {
    const KEY = "AKIALATERVISIT00001";
    const us = "52.95.110.1";
    const de = "85.214.132.117";
    await h.feed(
      call(KEY, "bot", at(17, 12, 0), us),
      call(KEY, "bot", at(18, 11, 50), us),
      call(KEY, "bot", at(18, 11, 52), de),
      call(KEY, "bot", at(18, 11, 54), us),
    );
    assert.equal(h.alerts.length, 0);
    assert.ok(h.suppressed.every((s) => s.filter === "learningDays"));
    // At Germany's visit, after its last call, but the US visit ended after it: US 11:54 → DE
    // 12:01 is compared, and is the first pair of the day after the learning period.
    await h.feed(call(KEY, "bot", at(18, 12, 1), de));
    assert.equal(h.alerts.length, 1);
    const from = h.alerts[0].details.from as Record<string, unknown>;
    assert.equal(from.time, at(18, 11, 54));
  });
});
