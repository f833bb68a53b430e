import assert from "node:assert/strict";
import { resolveConfig } from "../core/config.ts";
import { ConfigError } from "../core/errors.ts";
import { captureLog } from "../core/log.ts";
import { alertId, buildAlert } from "../core/pipeline.ts";
import { StateCache, StateStore } from "../core/state.ts";
import type { Alert, AlertDraft, CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { deviceFingerprint, isMobileAgent } from "../detectors/_login.ts";
import { createAnonymousIp } from "../detectors/anonymous_ip.ts";
import { createAtypicalCountry } from "../detectors/atypical_country.ts";
import type { Detector, DetectorContext } from "../detectors/mod.ts";
import { createNewCountry } from "../detectors/new_country.ts";
import { createNewDevice } from "../detectors/new_device.ts";
import { createUserRisk, riskLevel, type RiskProfile } from "../detectors/user_risk.ts";
import { GeoCache, type GeoInfo, staticGeoProvider } from "../mapping/geo.ts";
import { normalize } from "../mapping/normalize.ts";

const ACCOUNT = "111122223333";

const GEO: Record<string, GeoInfo> = {
  "81.2.69.142": { country: "GB", city: "London", lat: 51.5074, lon: -0.1278 },
  "62.4.1.1": { country: "FR", city: "Paris", lat: 48.8566, lon: 2.3522 },
  "200.147.67.142": { country: "BR", city: "Sao Paulo", lat: -23.5505, lon: -46.6333 },
  "2804:14c::1": { country: "BR", city: "Sao Paulo", lat: -23.5505, lon: -46.6333 },
  "185.220.101.7": { country: "DE", lat: 51.3, lon: 9.5 },
  "45.1.1.2": { country: "US", lat: 37.75, lon: -97.82 },
};

const MAC =
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const MAC_NEWER = MAC.replace("Chrome/131.0.0.0", "Chrome/132.0.6834.83");
const WINDOWS =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const IPHONE =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";

let seq = 0;

function login(
  user: string,
  time: string,
  ip: string,
  extra: { failed?: boolean; agent?: string } = {},
): CloudTrailRecord {
  return {
    eventVersion: "1.10",
    userIdentity: {
      type: "IAMUser",
      principalId: `AIDA${user.toUpperCase()}`,
      arn: `arn:aws:iam::${ACCOUNT}:user/${user}`,
      accountId: ACCOUNT,
      userName: user,
    },
    eventTime: time,
    eventSource: "signin.amazonaws.com",
    eventName: "ConsoleLogin",
    awsRegion: "us-east-1",
    sourceIPAddress: ip,
    userAgent: extra.agent ?? MAC,
    requestParameters: null,
    responseElements: { ConsoleLogin: extra.failed ? "Failure" : "Success" },
    additionalEventData: { MFAUsed: "Yes" },
    eventID: `login-${++seq}`,
    eventType: "AwsConsoleSignIn",
    recipientAccountId: ACCOUNT,
  };
}

/** Day `d` of November 2026 at `hh`:00 UTC (d may exceed 30: the date rolls over). */
const day = (d: number, hh = 8) => new Date(Date.UTC(2026, 10, d, hh)).toISOString();

/** Runs one detector the way the pipeline does (geo first, then detect(); onAlert for alerts). */
class Harness {
  readonly alerts: Alert[] = [];
  readonly suppressed: { alert: Alert; filter: string }[] = [];
  readonly detector: Detector;
  readonly store: StateStore;
  readonly context: DetectorContext;
  readonly #geo: GeoCache;

  constructor(detector: Detector, store: StateStore) {
    this.detector = detector;
    this.store = store;
    this.#geo = new GeoCache(staticGeoProvider(GEO));
    const state = new StateCache(store).forDetector(detector.name);
    const build = (draft: AlertDraft, event: NormalizedEvent): Alert =>
      buildAlert(detector.name, draft, event);
    this.context = {
      state,
      geo: this.#geo,
      alert: (draft, event) => this.alerts.push(build(draft, event)),
      suppress: (draft, event, filter) =>
        this.suppressed.push({ alert: build(draft, event), filter }),
    };
  }

  static async of(detector: Detector | Promise<Detector>): Promise<Harness> {
    return new Harness(await detector, await StateStore.open(":memory:"));
  }

  async feed(...records: CloudTrailRecord[]): Promise<void> {
    for (const record of records) {
      const event = normalize(record);
      if (event.ip) {
        await this.#geo.ready(event.ip);
        const geo = this.#geo.lookup(event.ip);
        if (geo) Object.assign(event, geo);
      }
      await this.detector.detect!(event, this.context);
    }
  }

  /** The ids of the alerts raised (the pipeline keeps one alert per id). */
  ids(): string[] {
    return [...new Set(this.alerts.map((a) => a.id))].sort();
  }

  close(): void {
    this.store.close();
  }
}

async function using<T>(
  detector: Detector | Promise<Detector>,
  fn: (h: Harness) => Promise<T>,
): Promise<T> {
  const h = await Harness.of(detector);
  try {
    return await fn(h);
  } finally {
    h.close();
  }
}

const init = (name: string) => ({ name, baseDir: "." });

// ---------------------------------------------------------------------------------------------
// new_country

Deno.test("new_country: the first login never alerts, a second country alerts once", async () => {
  await using(createNewCountry({ learningDays: 0 }, init("new_country")), async (h) => {
    await h.feed(login("alice", day(1), "81.2.69.142"));
    assert.equal(h.alerts.length, 0);
    const br = login("alice", day(2), "200.147.67.142");
    await h.feed(login("alice", day(1, 12), "81.2.69.142"), br);
    await h.feed(login("alice", day(3), "200.147.67.142"), login("alice", day(4), "2804:14c::1"));
    assert.equal(h.alerts.length, 1);
    const [alert] = h.alerts;
    assert.equal(alert.severity, "medium");
    assert.equal(alert.title, "Login from a new country for alice: BR");
    assert.equal(alert.time, day(2).replace(".000Z", "Z"));
    assert.equal(alert.ip, "200.147.67.142");
    assert.deepEqual(alert.details.known_countries, ["GB"]);
    assert.equal(alert.details.event_id, br.eventID);
    assert.equal(alert.id, alertId("new_country", [], "alice|BR", ACCOUNT));
  });
});

Deno.test("new_country: a login earlier than the first one makes the first country new", async () => {
  const gb = login("alice", day(1), "81.2.69.142");
  const br = login("alice", day(2), "200.147.67.142");
  const fr = login("alice", day(3), "62.4.1.1");
  const inOrder = await using(
    createNewCountry({ learningDays: 0 }, init("nc")),
    async (h) => (await h.feed(gb, br, fr), h.ids()),
  );
  assert.equal(inOrder.length, 2);
  for (const order of [[br, gb, fr], [fr, br, gb], [br, fr, gb]]) {
    const ids = await using(
      createNewCountry({ learningDays: 0 }, init("nc")),
      async (h) => (await h.feed(...order), h.ids()),
    );
    assert.deepEqual(ids, inOrder);
  }
});

Deno.test("new_country counts failed logins and never treats them as logins", async () => {
  await using(createNewCountry({ learningDays: 0 }, init("new_country")), async (h) => {
    await h.feed(
      login("alice", day(1), "81.2.69.142"),
      login("alice", day(2), "200.147.67.142", { failed: true }),
      login("alice", day(2, 9), "200.147.67.142", { failed: true }),
    );
    assert.equal(h.alerts.length, 0);
    await h.feed(login("alice", day(3), "200.147.67.142"));
    assert.equal(h.alerts.length, 1);
    assert.equal(h.alerts[0].details.failed_logins, 2);
  });
});

Deno.test("new_country with AssumeRoleWithSAML as the login event", async () => {
  const saml = (time: string, ip: string): CloudTrailRecord => ({
    eventVersion: "1.10",
    userIdentity: {
      type: "SAMLUser",
      principalId: "SAMLPROVIDER:dana@example.com",
      userName: "dana@example.com",
      identityProvider: "arn:aws:iam::111122223333:saml-provider/Okta",
    },
    eventTime: time,
    eventSource: "sts.amazonaws.com",
    eventName: "AssumeRoleWithSAML",
    awsRegion: "us-east-1",
    sourceIPAddress: ip,
    userAgent: MAC,
    eventID: `saml-${++seq}`,
    eventType: "AwsApiCall",
    recipientAccountId: ACCOUNT,
  });
  const options = { learningDays: 0, loginEvents: ["ConsoleLogin", "AssumeRoleWithSAML"] };
  await using(createNewCountry(options, init("new_country")), async (h) => {
    await h.feed(saml(day(1), "81.2.69.142"), saml(day(2), "200.147.67.142"));
    assert.deepEqual(h.alerts.map((a) => a.user), ["dana@example.com"]);
  });
  await using(createNewCountry({ learningDays: 0 }, init("new_country")), async (h) => {
    await h.feed(saml(day(1), "81.2.69.142"), saml(day(2), "200.147.67.142"));
    assert.equal(h.alerts.length, 0);
  });
});

Deno.test("new_country keeps a role's sessions (people) and two accounts' users apart", async () => {
  const session = (who: string, account: string, time: string, ip: string) => ({
    ...login("x", time, ip),
    recipientAccountId: account,
    userIdentity: {
      type: "AssumedRole",
      principalId: `AROAADMIN:${who}`,
      arn: `arn:aws:sts::${account}:assumed-role/AdminRole/${who}`,
      accountId: account,
      sessionContext: { sessionIssuer: { type: "Role", userName: "AdminRole" } },
    },
  });
  await using(createNewCountry({ learningDays: 0 }, init("new_country")), async (h) => {
    await h.feed(
      session("carol", ACCOUNT, day(1), "81.2.69.142"),
      session("erik", ACCOUNT, day(1, 9), "200.147.67.142"),
      session("carol", "444455556666", day(1, 10), "200.147.67.142"),
    );
    assert.equal(h.alerts.length, 0);
    await h.feed(session("carol", ACCOUNT, day(2), "200.147.67.142"));
    assert.deepEqual(h.alerts.map((a) => [a.user, a.account_id]), [["AdminRole/carol", ACCOUNT]]);
  });
});

// ---------------------------------------------------------------------------------------------
// The shared filters, on new_country (and new_device for ignoreMobile)

interface FilterCase {
  name: string;
  options: Record<string, unknown>;
  user?: string;
  ip?: string;
  agent?: string;
  second?: number;
  filter?: string;
  severity?: string;
}

const filterCases: FilterCase[] = [
  {
    name: "ignoredUsers (regex)",
    options: { ignoredUsers: ["^svc-"] },
    user: "svc-build",
    filter: "ignoredUsers",
  },
  {
    name: "ignoredUsers does not touch others",
    options: { ignoredUsers: ["^svc-"] },
    severity: "medium",
  },
  {
    name: "enabledUsers",
    options: { enabledUsers: ["^alice$"] },
    user: "bob",
    filter: "enabledUsers",
  },
  {
    name: "enabledUsers lets listed users alert",
    options: { enabledUsers: ["^alice$"] },
    severity: "medium",
  },
  { name: "vipUsers raise the severity", options: { vipUsers: ["alice"] }, severity: "high" },
  { name: "vipOnly", options: { vipOnly: true, vipUsers: ["carol"] }, filter: "vipOnly" },
  {
    name: "ignoredIps (IPv4 CIDR)",
    options: { ignoredIps: ["200.147.0.0/16"] },
    filter: "ignoredIps",
  },
  {
    name: "ignoredIps (IPv6 CIDR)",
    options: { ignoredIps: ["2804:14c::/32"] },
    ip: "2804:14c::1",
    filter: "ignoredIps",
  },
  {
    name: "ignoredIps (exact IP)",
    options: { ignoredIps: ["200.147.67.142"] },
    filter: "ignoredIps",
  },
  { name: "allowedCountries", options: { allowedCountries: ["BR"] }, filter: "allowedCountries" },
  { name: "ignoreMobile", options: { ignoreMobile: true }, agent: IPHONE, filter: "ignoreMobile" },
  { name: "ignoreMobile lets desktops alert", options: { ignoreMobile: true }, severity: "medium" },
  {
    name: "learningDays (BuffaLogs' 14 days)",
    options: { learningDays: 14 },
    second: 10,
    filter: "learningDays",
  },
  {
    name: "learningDays is over after 14 days",
    options: { learningDays: 14 },
    second: 15,
    severity: "medium",
  },
];

for (const c of filterCases) {
  Deno.test(`login filters: ${c.name}`, async () => {
    const options = { learningDays: 0, ...c.options };
    await using(createNewCountry(options, init("new_country")), async (h) => {
      const user = c.user ?? "alice";
      await h.feed(
        login(user, day(1), "81.2.69.142"),
        login(user, day(c.second ?? 2), c.ip ?? "200.147.67.142", { agent: c.agent }),
      );
      if (c.filter) {
        assert.equal(h.alerts.length, 0);
        assert.deepEqual(h.suppressed.map((s) => s.filter), [c.filter]);
        assert.equal(h.suppressed[0].alert.details.country, "BR");
      } else {
        assert.deepEqual(h.suppressed, []);
        assert.deepEqual(h.alerts.map((a) => a.severity), [c.severity]);
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------
// atypical_country

Deno.test("atypical_country: a country seen before but not in the last 30 days", async () => {
  await using(createAtypicalCountry({ learningDays: 0 }, init("atypical_country")), async (h) => {
    const last = login("alice", day(2), "200.147.67.142");
    await h.feed(login("alice", day(1), "81.2.69.142"), last);
    for (let d = 3; d < 40; d += 3) await h.feed(login("alice", day(d), "81.2.69.142"));
    const back = login("alice", day(40), "200.147.67.142");
    await h.feed(back, login("alice", day(45), "200.147.67.142"));
    assert.equal(h.alerts.length, 1);
    const [alert] = h.alerts;
    assert.equal(alert.severity, "low");
    assert.match(alert.title, /BR, not seen for 38 days$/);
    assert.equal(alert.details.event_id, back.eventID);
    assert.equal(
      (alert.details.previous_login as Record<string, unknown>).event_id,
      last.eventID,
    );
    assert.equal(alert.id, alertId("atypical_country", [], `alice|BR|${last.eventID}`, ACCOUNT));
  });
});

Deno.test("atypical_country: exactly 30 days alerts, 29 days and 23 hours does not", async () => {
  for (const [hours, expected] of [[30 * 24, 1], [30 * 24 - 1, 0]] as const) {
    await using(createAtypicalCountry({ learningDays: 0 }, init("ac")), async (h) => {
      const start = Date.UTC(2026, 10, 1, 8);
      await h.feed(
        login("alice", new Date(start).toISOString(), "200.147.67.142"),
        login("alice", new Date(start + hours * 3_600_000).toISOString(), "200.147.67.142"),
      );
      assert.equal(h.alerts.length, expected);
    });
  }
});

Deno.test("atypical_country: a late login between two others gives the alerts of time order", async () => {
  const first = login("alice", day(1), "200.147.67.142");
  const middle = login("alice", day(35), "200.147.67.142");
  const last = login("alice", day(40), "200.147.67.142");
  const run = (records: CloudTrailRecord[]) =>
    using(
      createAtypicalCountry({ learningDays: 0 }, init("ac")),
      async (h) => (await h.feed(...records), h.ids()),
    );
  const inOrder = await run([first, middle, last]);
  assert.equal(inOrder.length, 1);
  assert.deepEqual(await run([first, last, middle]), inOrder);
  assert.deepEqual(await run([last, first, middle]), inOrder);
  assert.deepEqual(await run([middle, last, first]), inOrder);
});

// ---------------------------------------------------------------------------------------------
// new_device

Deno.test("new_device fingerprints are BuffaLogs' os-osmajor-device-browser, without versions", () => {
  assert.equal(deviceFingerprint(MAC), "macos-10-macintosh-chrome");
  assert.equal(deviceFingerprint(MAC_NEWER), "macos-10-macintosh-chrome");
  assert.equal(deviceFingerprint(WINDOWS), "windows-10-other-chrome");
  assert.equal(deviceFingerprint(IPHONE), "ios-17-iphone-mobilesafari");
  assert.equal(isMobileAgent(IPHONE), true);
  assert.equal(isMobileAgent(MAC), false);
});

Deno.test("new_device: first login never alerts; a new device does, a browser update does not", async () => {
  await using(createNewDevice({ learningDays: 0 }, init("new_device")), async (h) => {
    await h.feed(login("alice", day(1), "81.2.69.142"));
    await h.feed(login("alice", day(2), "81.2.69.142", { agent: MAC_NEWER }));
    assert.equal(h.alerts.length, 0);
    await h.feed(login("alice", day(3), "81.2.69.142", { agent: WINDOWS }));
    await h.feed(login("alice", day(4), "81.2.69.142", { agent: WINDOWS }));
    assert.equal(h.alerts.length, 1);
    assert.equal(h.alerts[0].severity, "low");
    assert.equal(h.alerts[0].details.device, "windows-10-other-chrome");
    assert.deepEqual(h.alerts[0].details.known_devices, ["macos-10-macintosh-chrome"]);
    assert.equal(
      h.alerts[0].id,
      alertId("new_device", [], "alice|windows-10-other-chrome", ACCOUNT),
    );
    await h.feed(login("alice", day(5), "81.2.69.142", { agent: IPHONE }));
    assert.equal(h.alerts.length, 2);
  });
});

Deno.test("new_device: ignoreMobile files phone logins as filtered", async () => {
  await using(
    createNewDevice({ learningDays: 0, ignoreMobile: true }, init("new_device")),
    async (h) => {
      await h.feed(
        login("alice", day(1), "81.2.69.142"),
        login("alice", day(2), "81.2.69.142", { agent: IPHONE }),
      );
      assert.equal(h.alerts.length, 0);
      assert.deepEqual(h.suppressed.map((s) => s.filter), ["ignoreMobile"]);
    },
  );
});

Deno.test("login detectors: replaying the same logins raises nothing new", async () => {
  const records = [
    login("alice", day(1), "81.2.69.142"),
    login("alice", day(40), "200.147.67.142", { agent: WINDOWS }),
    login("alice", day(41), "81.2.69.142"),
    login("alice", day(80), "200.147.67.142"),
  ];
  for (
    const make of [
      () => createNewCountry({ learningDays: 0 }, init("nc")),
      () => createNewDevice({ learningDays: 0 }, init("nd")),
      () => createAtypicalCountry({ learningDays: 0 }, init("ac")),
    ]
  ) {
    await using(make(), async (h) => {
      await h.feed(...records);
      const count = h.alerts.length;
      assert.ok(count > 0, h.detector.name);
      await h.feed(...records);
      assert.equal(h.alerts.length, count, h.detector.name);
    });
  }
});

// ---------------------------------------------------------------------------------------------
// anonymous_ip

async function withList<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-lists-" });
  try {
    await Deno.writeTextFile(`${dir}/exits.txt`, text);
    return await fn(`${dir}/exits.txt`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("anonymous_ip: a login from a listed IP or CIDR (IPv4 and IPv6)", async () => {
  const list = "# Tor exit nodes\n185.220.101.0/24\n2804:14c::/32 some VPN\nnot-an-ip\n\n";
  const lines: string[] = [];
  const restore = captureLog((line) => lines.push(line), "warn");
  try {
    await withList(list, async (path) => {
      await using(
        createAnonymousIp({ lists: [path], learningDays: 0 }, init("anonymous_ip")),
        async (h) => {
          await h.feed(
            login("alice", day(1), "81.2.69.142"),
            login("alice", day(2), "185.220.101.7"),
            login("bob", day(2), "2804:14c::1"),
          );
          assert.deepEqual(h.alerts.map((a) => [a.user, a.ip, a.severity]), [
            ["alice", "185.220.101.7", "medium"],
            ["bob", "2804:14c::1", "medium"],
          ]);
          assert.equal(h.alerts[0].details.list, path);
        },
      );
    });
  } finally {
    restore();
  }
  assert.equal(lines.length, 1);
  assert.match(lines[0], /1 line\(s\) are not IP addresses or CIDRs/);
});

Deno.test("anonymous_ip reloads a list file when it changes", async () => {
  await withList("185.220.101.0/24\n", async (path) => {
    const restore = captureLog(() => {}, "error");
    try {
      await using(
        createAnonymousIp({ lists: [path], reloadInterval: 0, learningDays: 0 }, init("anon")),
        async (h) => {
          await h.feed(login("alice", day(1), "45.1.1.2"));
          assert.equal(h.alerts.length, 0);
          await Deno.writeTextFile(path, "185.220.101.0/24\n45.1.1.0/24\n");
          await h.feed(login("alice", day(2), "45.1.1.2"));
          assert.equal(h.alerts.length, 1);
          await Deno.writeTextFile(path, "# emptied\n");
          await h.feed(login("alice", day(3), "45.1.1.2"), login("alice", day(4), "185.220.101.7"));
          assert.equal(h.alerts.length, 1);
        },
      );
    } finally {
      restore();
    }
  });
});

Deno.test("anonymous_ip refuses to start without its list file", async () => {
  await assert.rejects(
    () => createAnonymousIp({ lists: ["/nonexistent/tor.txt"] }, init("anonymous_ip")),
    /anonymous_ip: cannot read the IP list \/nonexistent\/tor\.txt/,
  );
  assert.throws(
    () =>
      resolveConfig({
        sources: { logs: { type: "local", path: "/tmp" } },
        detectors: { anonymous_ip: {} },
      }, "/"),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.problems.some((p) => p.path === "detectors.anonymous_ip.lists"),
  );
});

Deno.test("anonymous_ip: the learning period filters logins of new users", async () => {
  await withList("185.220.101.0/24\n", async (path) => {
    await using(createAnonymousIp({ lists: [path] }, init("anonymous_ip")), async (h) => {
      await h.feed(login("alice", day(1), "81.2.69.142"), login("alice", day(2), "185.220.101.7"));
      assert.equal(h.alerts.length, 0);
      assert.deepEqual(h.suppressed.map((s) => s.filter), ["learningDays"]);
      await h.feed(login("alice", day(20), "185.220.101.7"));
      assert.equal(h.alerts.length, 1);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// user_risk

let alertSeq = 0;

function fakeAlert(detector: string, user: string, time: string): Alert {
  return {
    id: `alert-${++alertSeq}`,
    detector,
    severity: "medium",
    title: `${detector} for ${user}`,
    time,
    user,
    account_id: ACCOUNT,
    event_ids: [],
    details: {},
  };
}

Deno.test("user_risk follows BuffaLogs' levels: 0 none, 1-3 low, 4-6 medium, 7+ high", () => {
  assert.deepEqual(
    [0, 1, 3, 4, 6, 7, 50].map(riskLevel),
    ["no_risk", "low", "low", "medium", "medium", "high", "high"],
  );
});

Deno.test("user_risk alerts when the level rises to medium, then to high, and only then", async () => {
  await using(createUserRisk({}, init("user_risk")), async (h) => {
    const levels: string[] = [];
    const detectors = ["new_country", "atypical_country", "impossible_travel", "anonymous_ip"];
    for (let i = 0; i < 9; i++) {
      await h.detector.onAlert!(fakeAlert(detectors[i % 4], "alice", day(1, i)), h.context);
      levels.push((await h.context.state.get<RiskProfile>(["user", ACCOUNT, "alice"]))!.level);
    }
    assert.deepEqual(levels, [
      "low",
      "low",
      "low",
      "medium",
      "medium",
      "medium",
      "high",
      "high",
      "high",
    ]);
    assert.deepEqual(h.alerts.map((a) => [a.title, a.severity]), [
      ["Risk level of alice rose from low to medium (4 alerts)", "medium"],
      ["Risk level of alice rose from medium to high (7 alerts)", "high"],
    ]);
    assert.equal(h.alerts[0].id, alertId("user_risk", [], "alice|medium|2026-11-01", ACCOUNT));
    assert.equal(h.alerts[1].details.alerts_counted, 7);
  });
});

Deno.test("user_risk counts only the listed detector instances, each alert once", async () => {
  await using(
    createUserRisk({ threshold: "low", countDetectors: ["travel_eu"] }, init("user_risk")),
    async (h) => {
      await h.detector.onAlert!(fakeAlert("root_activity", "alice", day(1)), h.context);
      await h.detector.onAlert!(fakeAlert("impossible_travel", "alice", day(1)), h.context);
      assert.equal(h.alerts.length, 0);
      const counted = fakeAlert("travel_eu", "alice", day(1));
      await h.detector.onAlert!(counted, h.context);
      await h.detector.onAlert!(counted, h.context);
      assert.equal(h.alerts.length, 1);
      const profile = await h.context.state.get<RiskProfile>(["user", ACCOUNT, "alice"]);
      assert.equal(profile?.a.length, 1);
    },
  );
});

Deno.test("user_risk decays: alerts older than the window stop counting, a new rise alerts again", async () => {
  await using(createUserRisk({ window: "45d" }, init("user_risk")), async (h) => {
    const raise = (d: number, hh: number) =>
      h.detector.onAlert!(fakeAlert("new_country", "alice", day(d, hh)), h.context);
    for (let i = 0; i < 4; i++) await raise(1, i);
    assert.equal(h.alerts.length, 1);
    await raise(60, 0);
    const profile = await h.context.state.get<RiskProfile>(["user", ACCOUNT, "alice"]);
    assert.equal(profile?.level, "low");
    for (let i = 1; i < 4; i++) await raise(60, i);
    assert.equal(h.alerts.length, 2);
    assert.notEqual(h.alerts[0].id, h.alerts[1].id);
    assert.match(h.alerts[1].title, /from low to medium/);
  });
});

Deno.test("user_risk: the user filters apply to its alert", async () => {
  await using(createUserRisk({ ignoredUsers: ["^alice$"] }, init("user_risk")), async (h) => {
    for (let i = 0; i < 4; i++) {
      await h.detector.onAlert!(fakeAlert("new_country", "alice", day(1, i)), h.context);
    }
    assert.equal(h.alerts.length, 0);
    assert.deepEqual(h.suppressed.map((s) => s.filter), ["ignoredUsers"]);
  });
});

Deno.test("login detectors' options are validated by the config loader", () => {
  const sources = { logs: { type: "local", path: "/tmp" } };
  const config = resolveConfig({
    sources,
    detectors: {
      impossible_travel: { learningDays: 0, scopes: ["user"], ignoredCountryPairs: [["US", "CA"]] },
      new_country: { ignoredUsers: ["^svc-"], allowedCountries: ["DE"] },
      atypical_country: { atypicalDays: 60 },
      new_device: { ignoreMobile: true, maxLogins: 50 },
      user_risk: { threshold: "high", window: "30d" },
    },
  }, "/");
  assert.deepEqual(config.detectors.map((d) => d.type), [
    "impossible_travel",
    "new_country",
    "atypical_country",
    "new_device",
    "user_risk",
  ]);
  assert.throws(
    () =>
      resolveConfig({
        sources,
        detectors: {
          new_country: { allowedCountries: ["germany"], idleExpiry: "soon" },
          user_risk: { threshold: "extreme", countDetectors: [] },
        },
      }, "/"),
    (error: unknown) =>
      error instanceof ConfigError &&
      JSON.stringify(error.problems.map((p) => p.path).sort()) === JSON.stringify([
          "detectors.new_country.allowedCountries[0]",
          "detectors.new_country.idleExpiry",
          "detectors.user_risk.countDetectors",
          "detectors.user_risk.threshold",
        ]),
  );
});
