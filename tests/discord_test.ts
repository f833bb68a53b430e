import assert from "node:assert/strict";
import { DeliveryError } from "../core/errors.ts";
import { OptionsChecker } from "../core/validate.ts";
import {
  createDiscordSink,
  DISCORD_LIMITS,
  type DiscordPayload,
  discordPayload,
  discordSink,
  embedChars,
  SEVERITY_COLOUR,
} from "../sinks/discord.ts";
import { Receiver, sampleAlert } from "./helpers/receiver.ts";

/** Checks a payload against Discord's documented embed limits; returns every violation. */
function violations(payload: DiscordPayload): string[] {
  const out: string[] = [];
  if (payload.embeds.length === 0 || payload.embeds.length > 10) {
    out.push(`${payload.embeds.length} embeds`);
  }
  if ((payload.content?.length ?? 0) > 2000) out.push("content > 2000");
  if ((payload.username?.length ?? 0) > 80) out.push("username > 80");
  let total = 0;
  payload.embeds.forEach((e, i) => {
    const at = `embeds[${i}]`;
    if (!e.title || e.title.length > 256) out.push(`${at}.title ${e.title.length}`);
    if ((e.description?.length ?? 0) > 4096) out.push(`${at}.description`);
    if (e.description === "") out.push(`${at}.description is empty`);
    if (!Number.isInteger(e.color) || e.color < 0 || e.color > 0xffffff) out.push(`${at}.color`);
    if ((e.fields?.length ?? 0) > 25) out.push(`${at}: ${e.fields!.length} fields`);
    for (const f of e.fields ?? []) {
      if (!f.name || f.name.length > 256) out.push(`${at} field name ${f.name.length}`);
      if (!f.value || f.value.length > 1024) out.push(`${at} field value ${f.value.length}`);
    }
    if ((e.footer?.text.length ?? 0) > 2048) out.push(`${at}.footer`);
    if (e.timestamp && Number.isNaN(Date.parse(e.timestamp))) out.push(`${at}.timestamp`);
    total += embedChars(e);
  });
  if (total > 6000) out.push(`embeds total ${total} > 6000`);
  return out;
}

Deno.test("discord payload is one embed coloured by severity with the alert fields", () => {
  const alert = sampleAlert({ severity: "high", title: "Login from @everyone's laptop" });
  const payload = discordPayload([alert]);
  assert.deepEqual(violations(payload), []);
  assert.deepEqual(payload.allowed_mentions, { parse: [] }, "mentions never ping");
  assert.equal(payload.content, undefined);
  const [embed] = payload.embeds;
  assert.equal(embed.color, 0xe74c3c);
  assert.equal(embed.title, "[HIGH] Login from @everyone's laptop");
  assert.equal(embed.timestamp, alert.time);
  assert.equal(embed.footer?.text, `trailwatch · alert ${alert.id}`);
  const fields = Object.fromEntries(embed.fields!.map((f) => [f.name, f.value]));
  assert.equal(fields.User, "alice");
  assert.equal(fields.IP, "203.0.113.7 (AU, Sydney)");
  assert.equal(fields.Severity, "high");
  assert.equal(fields.distance_km, "16960");
  const colours = new Set(Object.values(SEVERITY_COLOUR));
  assert.equal(colours.size, 5, "one colour per severity");
  for (const severity of ["info", "low", "medium", "critical"] as const) {
    assert.equal(
      discordPayload([sampleAlert({ severity })]).embeds[0].color,
      SEVERITY_COLOUR[severity],
    );
  }
});

Deno.test("discord payload truncates to the embed limits and the 6000-character total", () => {
  const details: Record<string, unknown> = {};
  for (let i = 0; i < 40; i++) details[`k${i}_${"n".repeat(300)}`] = "v".repeat(3000);
  const alert = sampleAlert({ title: "T".repeat(1000), details });
  const payload = discordPayload([alert], "u".repeat(200));
  assert.deepEqual(violations(payload), []);
  const [embed] = payload.embeds;
  assert.ok(embed.title.endsWith("…"));
  assert.ok(embed.fields!.length <= DISCORD_LIMITS.fields);
  assert.ok(embed.fields!.some((f) => f.value.endsWith("…")));
  assert.equal(payload.username!.length, 80);
});

Deno.test("discord group message: a headline and one embed per alert, at most 10", () => {
  const five = Array.from(
    { length: 5 },
    (_, i) => sampleAlert({ severity: i === 2 ? "critical" : "low" }),
  );
  const payload = discordPayload(five);
  assert.deepEqual(violations(payload), []);
  assert.equal(payload.embeds.length, 5);
  assert.equal(
    payload.content,
    "**5 alerts from impossible_travel for alice** (highest: critical)",
  );
  assert.deepEqual(
    payload.embeds.map((e) => e.color),
    five.map((a) => SEVERITY_COLOUR[a.severity]),
  );

  const twenty = Array.from(
    { length: 20 },
    () => sampleAlert({ details: { note: "n".repeat(2000), more: "m".repeat(2000) } }),
  );
  const big = discordPayload(twenty);
  assert.deepEqual(violations(big), []);
  assert.equal(big.embeds.length, 10);
  assert.equal(big.embeds[9].title, "…and 11 more");
  const text = JSON.stringify(big);
  for (const alert of twenty) assert.ok(text.includes(alert.id), "every alert is listed");
});

Deno.test("discord sink posts embeds; healthcheck GETs the webhook without posting", async () => {
  await using receiver = await Receiver.start();
  const sink = createDiscordSink({ url: receiver.url }, { name: "discord", baseDir: "." });
  const alert = sampleAlert();
  await sink.send([alert]);
  assert.deepEqual(JSON.parse(receiver.requests[0].body), discordPayload([alert]));

  receiver.script({
    method: "GET",
    status: 200,
    body: JSON.stringify({ name: "alerts-bot", channel_id: "1234", token: "leak-me-not-123" }),
  });
  const description = await sink.healthcheck();
  assert.match(description, /webhook "alerts-bot" \(channel 1234\)/);
  assert.ok(!description.includes("leak-me-not-123"));
  assert.equal(receiver.requests[1].method, "GET");

  receiver.script({ method: "GET", status: 401, body: '{"message": "Invalid Webhook Token"}' });
  await assert.rejects(sink.healthcheck(), DeliveryError);

  receiver.script({ status: 429, body: '{"message": "rate limited", "retry_after": 1.5}' });
  const error = await sink.send([alert]).then(() => undefined, (e) => e);
  assert.ok(error instanceof DeliveryError);
  assert.equal(error.retryAfterMs, 1500, "Discord's JSON retry_after is honoured");
});

Deno.test("discord plugin check accepts a username and rejects unknown keys", () => {
  const check = new OptionsChecker(
    { url: "https://discord.com/api/webhooks/1/abc", username: "trailwatch", avatar: "x" },
    "sinks.d",
  );
  discordSink.check(check);
  check.done();
  assert.deepEqual(check.problems.map((p) => p.path), ["sinks.d.avatar"]);
});
