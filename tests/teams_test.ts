import assert from "node:assert/strict";
import { OptionsChecker } from "../core/validate.ts";
import {
  ADAPTIVE_CARD_TYPE,
  type CardElement,
  createTeamsSink,
  TEAMS_MAX_BYTES,
  type TeamsPayload,
  teamsPayload,
  teamsSink,
} from "../sinks/teams.ts";
import { Receiver, sampleAlert } from "./helpers/receiver.ts";

const bytes = (value: unknown) => new TextEncoder().encode(JSON.stringify(value)).length;

/** Checks what Teams requires of a webhook message with an Adaptive Card; returns violations. */
function violations(payload: TeamsPayload): string[] {
  const out: string[] = [];
  if (payload.type !== "message") out.push("type must be message");
  if (payload.attachments?.length !== 1) out.push("exactly one attachment expected");
  const attachment = payload.attachments[0];
  if (attachment.contentType !== "application/vnd.microsoft.card.adaptive") {
    out.push("contentType");
  }
  const card = attachment.content;
  if (card.type !== "AdaptiveCard") out.push("card type");
  if (card.$schema !== "http://adaptivecards.io/schemas/adaptive-card.json") out.push("$schema");
  if (!/^1\.[0-5]$/.test(card.version)) out.push(`version ${card.version} not supported by Teams`);
  if (!Array.isArray(card.body) || card.body.length === 0) out.push("empty body");
  const walk = (elements: CardElement[], at: string) =>
    elements.forEach((e, i) => {
      const where = `${at}[${i}]`;
      if (e.type === "TextBlock") {
        if (typeof e.text !== "string" || e.text === "") out.push(`${where}: empty TextBlock`);
      } else if (e.type === "FactSet") {
        if (e.facts.length === 0) out.push(`${where}: empty FactSet`);
        for (const f of e.facts) {
          if (typeof f.title !== "string" || typeof f.value !== "string" || f.value === "") {
            out.push(`${where}: bad fact ${JSON.stringify(f)}`);
          }
        }
      } else if (e.type === "Container") walk(e.items, `${where}.items`);
      else out.push(`${where}: unexpected element ${(e as { type: string }).type}`);
    });
  walk(card.body, "body");
  if (bytes(payload) > 28 * 1024) out.push(`payload ${bytes(payload)} bytes > 28 KB`);
  return out;
}

function facts(payload: TeamsPayload): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (elements: CardElement[]) => {
    for (const e of elements) {
      if (e.type === "FactSet") { for (const f of e.facts) out[f.title] = f.value; }
      if (e.type === "Container") walk(e.items);
    }
  };
  walk(payload.attachments[0].content.body);
  return out;
}

Deno.test("teams payload is a message with one Adaptive Card and the alert facts", () => {
  const alert = sampleAlert({ severity: "medium" });
  const payload = teamsPayload([alert]);
  assert.deepEqual(violations(payload), []);
  assert.equal(payload.attachments[0].contentType, ADAPTIVE_CARD_TYPE);
  assert.equal(payload.attachments[0].contentUrl, null);
  const body = payload.attachments[0].content.body;
  assert.deepEqual(body[0], {
    type: "TextBlock",
    text: "MEDIUM · trailwatch",
    size: "Small",
    weight: "Bolder",
    color: "Warning",
  });
  assert.equal((body[1] as { text: string }).text, alert.title);
  assert.deepEqual(facts(payload), {
    Severity: "medium",
    Detector: "impossible_travel",
    User: "alice",
    IP: "203.0.113.7 (AU, Sydney)",
    Time: `2024-05-01 12:00:${alert.time.slice(17, 19)} UTC`,
    Account: "123456789012",
    Region: "eu-west-3",
    previous_country: "FR",
    distance_km: "16960",
    speed_kmh: "8480",
  });
  assert.ok(JSON.stringify(body.at(-1)).includes(alert.id));
});

Deno.test("teams payload stays under the size limit by truncating long fields", () => {
  const details: Record<string, unknown> = {};
  for (let i = 0; i < 40; i++) details[`field_${i}`] = "é".repeat(5000);
  const alert = sampleAlert({ title: "T".repeat(3000), details });
  const payload = teamsPayload([alert]);
  assert.deepEqual(violations(payload), []);
  assert.ok(bytes(payload) <= TEAMS_MAX_BYTES, `${bytes(payload)} bytes`);
  const values = Object.entries(facts(payload)).filter(([k]) => k.startsWith("field_"));
  assert.ok(values.length > 0, "details are kept, shortened");
  for (const [, v] of values) assert.ok(v.endsWith("…"));
  const title = (payload.attachments[0].content.body[1] as { text: string }).text;
  assert.ok(title.length < 3000 && title.endsWith("…"));

  const pathological = sampleAlert({
    event_ids: Array.from({ length: 5000 }, (_, i) => `event-${i}-${"x".repeat(20)}`),
  });
  assert.ok(bytes(teamsPayload([pathological])) <= TEAMS_MAX_BYTES);
});

Deno.test("teams group card lists every alert, and stays under the limit when large", () => {
  const group = Array.from(
    { length: 20 },
    (_, i) => sampleAlert({ severity: i === 7 ? "critical" : "low" }),
  );
  const payload = teamsPayload(group);
  assert.deepEqual(violations(payload), []);
  const body = payload.attachments[0].content.body;
  assert.equal((body[1] as { text: string }).text, "20 alerts from impossible_travel for alice");
  assert.equal(body[0].type === "TextBlock" && body[0].color, "Attention");
  const containers = body.filter((e) => e.type === "Container");
  assert.equal(containers.length, 20);
  for (const alert of group) assert.ok(JSON.stringify(body).includes(alert.title));

  const heavy = Array.from(
    { length: 20 },
    () =>
      sampleAlert({ details: { a: "a".repeat(3000), b: "b".repeat(3000), c: "c".repeat(3000) } }),
  );
  const heavyPayload = teamsPayload(heavy);
  assert.deepEqual(violations(heavyPayload), []);
  assert.ok(bytes(heavyPayload) <= TEAMS_MAX_BYTES);
  const text = JSON.stringify(heavyPayload);
  for (const alert of heavy) {
    assert.ok(text.includes(alert.title.slice(0, 30)), "each alert is at least named");
  }
});

Deno.test("teams sink posts the card and checks reachability with HEAD", async () => {
  await using receiver = await Receiver.start();
  const sink = createTeamsSink({ url: receiver.url + "?api-version=2016-06-01&sig=abcdef123456" }, {
    name: "teams",
    baseDir: ".",
  });
  const alert = sampleAlert();
  await sink.send([alert]);
  assert.deepEqual(JSON.parse(receiver.requests[0].body), teamsPayload([alert]));
  assert.equal(receiver.requests[0].headers["content-type"], "application/json");
  receiver.script({ status: 405, method: "HEAD" });
  const description = await sink.healthcheck();
  assert.match(description, /reachable/);
  assert.ok(!description.includes("abcdef123456"));
  assert.equal(receiver.requests[1].method, "HEAD");
});

Deno.test("teams plugin check requires an http(s) url", () => {
  const check = new OptionsChecker({ url: 42, timeout: "0s" }, "sinks.t");
  teamsSink.check(check);
  check.done();
  assert.deepEqual(check.problems.map((p) => p.path), ["sinks.t.url", "sinks.t.timeout"]);
});
