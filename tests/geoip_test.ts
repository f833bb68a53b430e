/**
 * The login detectors with the real GeoIP database (geoip-lite, pinned in deno.json): a few
 * lookups of well-known addresses, one impossible travel end to end, and the demo data.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { resolveConfig } from "../core/config.ts";
import { setLogLevel } from "../core/log.ts";
import { Runtime } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import type { Alert } from "../core/types.ts";
import { GeoCache, geoipLiteProvider } from "../mapping/geo.ts";

const EXAMPLES = new URL("../examples/logs", import.meta.url).pathname;

/** Runs one pass with the configured (real) GeoIP provider and returns the alerts. */
async function ingest(path: string, detectors: Record<string, unknown>): Promise<Alert[]> {
  const config = resolveConfig({
    sources: { logs: { type: "local", path } },
    detectors,
    sinks: {},
  }, "/");
  assert.equal(config.geo.provider, "geoip-lite");
  const store = await StateStore.open(":memory:");
  const alerts: Alert[] = [];
  const runtime = await Runtime.create(config, { store, onAlert: (a) => alerts.push(a) });
  setLogLevel("warn");
  try {
    await runtime.runOnce();
    return alerts;
  } finally {
    setLogLevel("info");
    await runtime.close();
    store.close();
  }
}

Deno.test("geoip-lite (pinned) places well-known public IPs and skips private ones", async () => {
  assert.equal(
    (denoJson as { imports: Record<string, string> }).imports["geoip-lite"],
    "npm:geoip-lite@2.0.3",
  );
  const geo = new GeoCache(geoipLiteProvider());
  await geo.ready("8.8.8.8");
  assert.equal(geo.lookup("8.8.8.8")?.country, "US");
  const london = geo.lookup("81.2.69.142");
  assert.equal(london?.country, "GB");
  assert.equal(typeof london?.lat, "number");
  assert.equal(geo.lookup("200.147.67.142")?.country, "BR");
  assert.equal(geo.lookup("10.0.0.1"), undefined);
});

Deno.test("impossible_travel with real geoip-lite: London, then São Paulo an hour later", async () => {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-geoip-" });
  try {
    const login = (time: string, ip: string, id: string) => ({
      eventVersion: "1.10",
      userIdentity: {
        type: "IAMUser",
        principalId: "AIDAALICE",
        arn: "arn:aws:iam::111122223333:user/alice",
        accountId: "111122223333",
        userName: "alice",
      },
      eventTime: time,
      eventSource: "signin.amazonaws.com",
      eventName: "ConsoleLogin",
      awsRegion: "us-east-1",
      sourceIPAddress: ip,
      userAgent: "Mozilla/5.0",
      responseElements: { ConsoleLogin: "Success" },
      eventID: id,
      eventType: "AwsConsoleSignIn",
      recipientAccountId: "111122223333",
    });
    await Deno.writeTextFile(
      `${dir}/logins.json`,
      JSON.stringify({
        Records: [
          login("2026-11-18T09:00:00Z", "200.147.67.142", "e-2"),
          login("2026-11-18T08:00:00Z", "81.2.69.142", "e-1"),
        ],
      }),
    );
    const alerts = await ingest(dir, { impossible_travel: { learningDays: 0 } });
    assert.equal(alerts.length, 1);
    const { from, to, distance_km } = alerts[0].details as {
      from: { country: string; event_id: string };
      to: { country: string; event_id: string };
      distance_km: number;
    };
    assert.deepEqual([from.country, from.event_id, to.country, to.event_id], [
      "GB",
      "e-1",
      "BR",
      "e-2",
    ]);
    assert.ok(distance_km > 9000 && distance_km < 10000, `distance ${distance_km}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the demo data shows an impossible-travel, a new-country and a credential-travel alert", async () => {
  const alerts = await ingest(EXAMPLES, {
    impossible_travel: { learningDays: 0 },
    new_country: { learningDays: 0 },
    atypical_country: { learningDays: 0 },
    new_device: { learningDays: 0 },
    user_risk: {},
  });
  const summary = alerts.map((a) => `${a.detector} ${a.user} ${a.details.scope ?? ""}`.trim())
    .sort();
  assert.deepEqual(summary, [
    "impossible_travel alice user",
    "impossible_travel deploy-bot access_key",
    "new_country alice",
    "new_device alice",
  ]);
  const travel = alerts.find((a) => a.details.scope === "user")!;
  assert.match(travel.title, /^Impossible travel for alice: GB → BR/);
  const credential = alerts.find((a) => a.details.scope === "access_key")!;
  assert.equal(credential.details.access_key_id, "AKIAEXAMPLEDEPLOY001");
  assert.deepEqual(
    [credential.details.from, credential.details.to].map((e) => (e as { country: string }).country)
      .sort(),
    ["DE", "US"],
  );
});
