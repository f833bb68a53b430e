/**
 * End-to-end throughput of the login-anomaly detectors: events/s through the real pipeline
 * (`Runtime`, the local source over generated `.json.gz` files in a temp dir, `:memory:` state,
 * decoding on the main thread) for two streams:
 *
 * - `logins`: 100% successful `ConsoleLogin` (2,000 users, mostly from home, some travelling);
 * - `mix`: a normal mix — ~5% `ConsoleLogin`, 95% API calls signed by 2,000 IAM users' access keys
 *   and 300 roles' temporary keys, from IPs across 20 countries, 2% away from home.
 *
 * Each stream runs with no detectors (the pipeline floor), with only the login detectors
 * (`impossible_travel` with both scopes, `new_country`, `atypical_country`, `new_device`,
 * `anonymous_ip`, `user_risk`), and with every default detector (no `detectors` block).
 *
 * GeoIP: a fixed table (`staticGeoProvider`, 400 IPs) by default, so the numbers measure the
 * detectors rather than geoip-lite; `--geoip` uses the real geoip-lite database instead.
 *
 * Usage: `deno run -A bench/login_bench.ts [--events N] [--runs N] [--geoip]`
 * Last line: `login_bench: logins=<N> ev/s mix=<N> ev/s (login detectors); logins=<N> ev/s
 * mix=<N> ev/s (all default detectors)`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { resolveConfig } from "../core/config.ts";
import { setLogLevel } from "../core/log.ts";
import { Runtime } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import { type GeoInfo, type GeoProvider, staticGeoProvider } from "../mapping/geo.ts";
import { seeded } from "./dataset.ts";

const PER_FILE = 10_000;
const USERS = 2000;
const ROLES = 300;

const COUNTRIES: [string, number, number][] = [
  ["US", 39.0, -77.5],
  ["US", 47.6, -122.3],
  ["GB", 51.5, -0.13],
  ["DE", 50.1, 8.7],
  ["FR", 48.9, 2.35],
  ["NL", 52.4, 4.9],
  ["IE", 53.3, -6.3],
  ["IT", 45.5, 9.2],
  ["ES", 40.4, -3.7],
  ["SE", 59.3, 18.1],
  ["PL", 52.2, 21.0],
  ["BR", -23.5, -46.6],
  ["AR", -34.6, -58.4],
  ["IN", 19.1, 72.9],
  ["JP", 35.7, 139.7],
  ["SG", 1.35, 103.8],
  ["AU", -33.9, 151.2],
  ["ZA", -26.2, 28.0],
  ["CA", 43.7, -79.4],
  ["MX", 19.4, -99.1],
];

/** 400 public IPs spread over the countries (20 per country, slightly apart). */
const IPS: string[] = [];
/** The fixed GeoIP table of the generated IPs. */
export const GEO: Record<string, GeoInfo> = {};
for (let i = 0; i < 400; i++) {
  const [country, lat, lon] = COUNTRIES[i % COUNTRIES.length];
  const ip = `${81 + (i % 60)}.${2 + Math.floor(i / 60)}.${(i * 7) % 250}.${1 + (i % 200)}`;
  IPS.push(ip);
  GEO[ip] = { country, city: `${country}-city-${i % 3}`, lat: lat + (i % 3) * 0.1, lon };
}

const BROWSERS = [
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
];
const SDK =
  "aws-sdk-go-v2/1.32.6 ua/2.1 os/linux lang/go#1.23.4 md/GOOS#linux md/GOARCH#amd64 api/s3#1.71.0";
const CALLS: [string, string][] = [
  ["ec2.amazonaws.com", "DescribeInstances"],
  ["s3.amazonaws.com", "ListBuckets"],
  ["iam.amazonaws.com", "GetUser"],
  ["sts.amazonaws.com", "GetCallerIdentity"],
  ["kms.amazonaws.com", "Decrypt"],
  ["logs.amazonaws.com", "DescribeLogGroups"],
  ["lambda.amazonaws.com", "ListFunctions20150331"],
  ["dynamodb.amazonaws.com", "DescribeTable"],
];

const hex = (r: () => number, n: number) => {
  let s = "";
  for (let i = 0; i < n; i++) s += Math.floor(r() * 16).toString(16);
  return s;
};

/**
 * Generates `count` records of one stream, in time order, as JSON strings. API calls come in
 * bursts (1–40 calls of one principal, as CLI and SDK sessions make them), logins one by one.
 */
function* stream(kind: "logins" | "mix", count: number): Generator<string> {
  const r = seeded(kind === "logins" ? 7 : 11);
  const start = Date.parse("2026-11-10T00:00:00Z");
  const stepMs = (3 * 86_400_000) / count;
  const home = (u: number) => IPS[(u * 13) % IPS.length];
  const roleKeys = Array.from({ length: ROLES }, () => `ASIA${hex(r, 16).toUpperCase()}`);
  let burst = { left: 0, role: false, u: 0, ip: "" };
  for (let n = 0; n < count; n++) {
    const login = kind === "logins" || r() < 0.05;
    if (!login && burst.left === 0) {
      const role = r() < 0.3;
      const u = Math.floor(r() * (role ? ROLES : USERS));
      const away = r() < 0.02;
      const ip = away ? IPS[Math.floor(r() * IPS.length)] : home(role ? USERS + u : u);
      burst = { left: 1 + Math.floor(r() * r() * 40), role, u, ip };
    }
    if (!login) burst.left--;
    const role = !login && burst.role;
    const u = login ? Math.floor(r() * USERS) : burst.u;
    const ip = login ? (r() < 0.02 ? IPS[Math.floor(r() * IPS.length)] : home(u)) : burst.ip;
    const away = ip !== home(role ? USERS + u : u);
    const time = new Date(start + n * stepMs).toISOString().replace(/\.\d{3}Z$/, "Z");
    const account = ["111122223333", "444455556666"][u % 2];
    const identity = role
      ? {
        type: "AssumedRole",
        principalId: `AROAROLE${u}:session-${u}`,
        arn: `arn:aws:sts::${account}:assumed-role/role-${u}/session-${u}`,
        accountId: account,
        accessKeyId: roleKeys[u],
        sessionContext: {
          sessionIssuer: {
            type: "Role",
            arn: `arn:aws:iam::${account}:role/role-${u}`,
            userName: `role-${u}`,
          },
        },
      }
      : {
        type: "IAMUser",
        principalId: `AIDAUSER${u}`,
        arn: `arn:aws:iam::${account}:user/user-${u}`,
        accountId: account,
        ...(login
          ? {}
          : { accessKeyId: `AKIA${(u * 7919).toString(16).toUpperCase().padStart(16, "0")}` }),
        userName: `user-${u}`,
      };
    const [source, name] = login
      ? ["signin.amazonaws.com", "ConsoleLogin"]
      : CALLS[Math.floor(r() * CALLS.length)];
    const record: Record<string, unknown> = {
      eventVersion: "1.10",
      userIdentity: identity,
      eventTime: time,
      eventSource: source,
      eventName: name,
      awsRegion: ["us-east-1", "eu-west-1", "ap-northeast-1"][u % 3],
      sourceIPAddress: ip,
      userAgent: login ? BROWSERS[(u + (away ? 1 : 0)) % BROWSERS.length] : SDK,
      requestParameters: login ? null : { maxResults: 100, filter: `tag:team=${hex(r, 8)}` },
      responseElements: login
        ? { ConsoleLogin: kind === "logins" || r() < 0.9 ? "Success" : "Failure" }
        : null,
      eventID: `${n.toString(16).padStart(8, "0")}-${hex(r, 4)}-4${hex(r, 3)}-8${hex(r, 3)}-${
        hex(r, 12)
      }`,
      eventType: login ? "AwsConsoleSignIn" : "AwsApiCall",
      recipientAccountId: account,
    };
    if (login) {
      record.additionalEventData = { MobileVersion: "No", MFAUsed: r() < 0.8 ? "Yes" : "No" };
    }
    yield JSON.stringify(record);
  }
}

/** Writes `events` records of one stream as `.json.gz` files of 10,000 records under `dir`. */
export async function writeStream(
  dir: string,
  kind: "logins" | "mix",
  events: number,
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  let batch: string[] = [];
  let file = 0;
  const flush = async () => {
    const body = new TextEncoder().encode(`{"Records":[${batch.join(",")}]}`);
    const name = `${dir}/111122223333_CloudTrail_us-east-1_${
      String(file++).padStart(4, "0")
    }.json.gz`;
    await Deno.writeFile(name, gzipSync(body, { level: 1 }));
    batch = [];
  };
  for (const text of stream(kind, events)) {
    batch.push(text);
    if (batch.length === PER_FILE) await flush();
  }
  if (batch.length) await flush();
}

async function run(
  events: number,
  dir: string,
  detectors: Record<string, unknown> | undefined,
  geo: GeoProvider | undefined,
): Promise<{ rate: number; alerts: number; suppressed: number }> {
  const raw: Record<string, unknown> = {
    sources: { logs: { type: "local", path: dir } },
    sinks: {},
    pipeline: { workers: 0 },
  };
  if (detectors) raw.detectors = detectors;
  const config = resolveConfig(raw, "/");
  const store = await StateStore.open(":memory:");
  const runtime = await Runtime.create(config, { store, geo });
  try {
    const started = performance.now();
    const summary = await runtime.runOnce();
    const seconds = (performance.now() - started) / 1000;
    if (summary.events !== events) throw new Error(`read ${summary.events} of ${events} events`);
    return {
      rate: summary.events / seconds,
      alerts: summary.alerts,
      suppressed: summary.alerts_suppressed,
    };
  } finally {
    await runtime.close();
    store.close();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      events: { type: "string", default: "100000" },
      runs: { type: "string", default: "2" },
      geoip: { type: "boolean", default: false },
    },
  });
  const EVENTS = Math.max(1000, Number(values.events) || 100_000);
  const RUNS = Math.max(1, Number(values.runs) || 1);
  setLogLevel("warn");
  const tmp = await Deno.makeTempDir({ prefix: "trailwatch-login-bench-" });
  try {
    await Deno.writeTextFile(`${tmp}/anonymous.txt`, "185.220.100.0/22\n2a0b:f4c2::/40\n");
    const login = {
      impossible_travel: {},
      new_country: {},
      atypical_country: {},
      new_device: {},
      anonymous_ip: { lists: [`${tmp}/anonymous.txt`] },
      user_risk: {},
    };
    const setups: [string, Record<string, unknown> | undefined][] = [
      ["no detectors", {}],
      ["login detectors", login],
      ["all default detectors", undefined],
    ];
    const geo = values.geoip ? undefined : staticGeoProvider(GEO);
    console.log(
      `login_bench: ${EVENTS} events per stream, ${PER_FILE} per .json.gz file, ` +
        `${values.geoip ? "real geoip-lite" : "static geo table"}, best of ${RUNS}`,
    );
    const results: Record<string, Record<string, number>> = {};
    for (const kind of ["logins", "mix"] as const) {
      const dir = `${tmp}/${kind}`;
      await writeStream(dir, kind, EVENTS);
      for (const [label, detectors] of setups) {
        let best = { rate: 0, alerts: 0, suppressed: 0 };
        for (let i = 0; i < RUNS; i++) {
          const result = await run(EVENTS, dir, detectors, geo);
          if (result.rate > best.rate) best = result;
        }
        (results[label] ??= {})[kind] = best.rate;
        console.log(
          `  ${kind.padEnd(6)} ${label.padEnd(22)} ${
            Math.round(best.rate).toString().padStart(8)
          } ev/s` +
            `  (${best.alerts} alerts, ${best.suppressed} filtered)`,
        );
      }
    }
    const fmt = (n: number) => Math.round(n);
    const l = results["login detectors"];
    const a = results["all default detectors"];
    console.log(
      `login_bench: logins=${fmt(l.logins)} ev/s mix=${fmt(l.mix)} ev/s (login detectors); ` +
        `logins=${fmt(a.logins)} ev/s mix=${fmt(a.mix)} ev/s (all default detectors)`,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}
