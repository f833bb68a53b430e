import assert from "node:assert/strict";
import { DeliveryError } from "../core/errors.ts";
import { OptionsChecker } from "../core/validate.ts";
import {
  createSlackSink,
  SLACK_LIMITS,
  type SlackBlock,
  type SlackPayload,
  slackPayload,
  slackSink,
  type SlackText,
} from "../sinks/slack.ts";
import { Receiver, sampleAlert } from "./helpers/receiver.ts";

/** Checks a payload against the Block Kit rules Slack documents; returns every violation. */
function violations(payload: SlackPayload): string[] {
  const out: string[] = [];
  const text = (t: SlackText | undefined, max: number, where: string, plainOnly = false) => {
    if (!t) return;
    if (t.type !== "plain_text" && t.type !== "mrkdwn") out.push(`${where}: bad type ${t.type}`);
    if (plainOnly && t.type !== "plain_text") out.push(`${where}: must be plain_text`);
    if (typeof t.text !== "string" || t.text.length === 0) out.push(`${where}: empty text`);
    if (t.text.length > max) out.push(`${where}: ${t.text.length} > ${max}`);
    if (t.type === "mrkdwn" && /<|>/.test(t.text)) out.push(`${where}: unescaped < or >`);
  };
  if (typeof payload.text !== "string" || payload.text.length === 0) out.push("text: missing");
  if (payload.text.length > SLACK_LIMITS.text) out.push("text: too long");
  if (!Array.isArray(payload.blocks) || payload.blocks.length === 0) out.push("blocks: none");
  if (payload.blocks.length > 50) out.push(`blocks: ${payload.blocks.length} > 50`);
  payload.blocks.forEach((block: SlackBlock, i) => {
    const at = `blocks[${i}] (${block.type})`;
    switch (block.type) {
      case "header":
        text(block.text, 150, at, true);
        break;
      case "section":
        if (!block.text && !block.fields) out.push(`${at}: needs text or fields`);
        text(block.text, 3000, `${at}.text`);
        if (block.fields) {
          if (block.fields.length > 10) out.push(`${at}: ${block.fields.length} fields > 10`);
          block.fields.forEach((f, j) => text(f, 2000, `${at}.fields[${j}]`));
        }
        break;
      case "context":
        if (block.elements.length === 0 || block.elements.length > 10) {
          out.push(`${at}: ${block.elements.length} elements`);
        }
        block.elements.forEach((e, j) => text(e, 3000, `${at}.elements[${j}]`));
        break;
      case "divider":
        break;
      default:
        out.push(`${at}: unexpected block type`);
    }
  });
  return out;
}

Deno.test("slack payload has a header, the alert fields, details, ids and a text fallback", () => {
  const alert = sampleAlert({ severity: "critical" });
  const payload = slackPayload([alert]);
  assert.deepEqual(violations(payload), []);
  const [header, common, details, context] = payload.blocks as [
    Extract<SlackBlock, { type: "header" }>,
    Extract<SlackBlock, { type: "section" }>,
    Extract<SlackBlock, { type: "section" }>,
    Extract<SlackBlock, { type: "context" }>,
  ];
  assert.equal(header.type, "header");
  assert.equal(header.text.text, `🚨 ${alert.title}`);
  const fields = common.fields!.map((f) => f.text);
  assert.ok(fields.includes("*Severity*\ncritical"));
  assert.ok(fields.includes("*User*\nalice"));
  assert.ok(fields.includes("*IP*\n203.0.113.7 (AU, Sydney)"));
  assert.ok(fields.includes("*Time*\n2024-05-01 12:00:" + alert.time.slice(17, 19) + " UTC"));
  assert.ok(fields.includes("*Detector*\nimpossible_travel"));
  assert.deepEqual(details.fields!.map((f) => f.text), [
    "*previous_country*\nFR",
    "*distance_km*\n16960",
    "*speed_kmh*\n8480",
  ]);
  assert.equal(context.type, "context");
  assert.ok(context.elements[0].text.includes(alert.id));
  assert.ok(payload.text.startsWith("[CRITICAL] Impossible travel for alice"));
  assert.ok(payload.text.includes("203.0.113.7"));
});

Deno.test("slack payload truncates long fields with an ellipsis instead of failing", () => {
  const details: Record<string, unknown> = {};
  for (let i = 0; i < 45; i++) details[`field_${i}`] = `v${i} ` + "x".repeat(5000);
  const alert = sampleAlert({
    title: "T".repeat(1000),
    user: "u".repeat(3000),
    details,
  });
  const payload = slackPayload([alert]);
  assert.deepEqual(violations(payload), []);
  const header = payload.blocks[0] as Extract<SlackBlock, { type: "header" }>;
  assert.equal(header.text.text.length, 150);
  assert.ok(header.text.text.endsWith("…"));
  const sections = payload.blocks.filter((b) => b.type === "section");
  assert.equal(sections.length, 5, "common fields + 4 detail sections");
  const longField = (sections[1] as { fields: SlackText[] }).fields[0].text;
  assert.equal(longField.length, 2000);
  assert.ok(longField.endsWith("…"));
  const more = JSON.stringify(payload.blocks.at(-2));
  assert.match(more, /5 more details: field_40, field_41/);
});

Deno.test("slack payload escapes &, < and > and never cuts inside an entity", () => {
  const alert = sampleAlert({
    title: "<script> & <b>",
    details: { note: "<!channel> & " + "<".repeat(2000) },
  });
  const payload = slackPayload([alert]);
  assert.deepEqual(violations(payload), []);
  const note = JSON.stringify(payload.blocks).match(/\*note\*\\n([^"]*)"/)![1];
  assert.ok(note.startsWith("&lt;!channel&gt; &amp; &lt;"));
  assert.match(note, /(&lt;)+…$/, "ends on a whole entity");
  assert.ok(payload.text.includes("&lt;script&gt; &amp; &lt;b&gt;"));
  const header = payload.blocks[0] as Extract<SlackBlock, { type: "header" }>;
  assert.equal(header.text.text, "🔴 <script> & <b>", "plain_text is not escaped");
});

Deno.test("slack group message lists every alert of the group within 50 blocks", () => {
  const small = Array.from(
    { length: 5 },
    (_, i) => sampleAlert({ severity: i === 3 ? "critical" : "medium", ip: `198.51.100.${i}` }),
  );
  const payload = slackPayload(small);
  assert.deepEqual(violations(payload), []);
  const header = payload.blocks[0] as Extract<SlackBlock, { type: "header" }>;
  assert.equal(header.text.text, "🚨 5 alerts from impossible_travel for alice");
  const sections = payload.blocks.filter((b) => b.type === "section" && b.text);
  assert.equal(sections.length, 5);
  for (const alert of small) assert.ok(JSON.stringify(payload).includes(alert.id));
  assert.ok(
    payload.text.startsWith("5 alerts from impossible_travel for alice (highest critical)"),
  );

  const big = Array.from(
    { length: 120 },
    () => sampleAlert({ details: { note: "n".repeat(4000) } }),
  );
  const bigPayload = slackPayload(big);
  assert.deepEqual(violations(bigPayload), []);
  assert.equal(bigPayload.blocks.length, 50);
  assert.match(JSON.stringify(bigPayload.blocks.at(-2)), /…and 74 more/);
});

Deno.test("slack sink posts the Block Kit JSON to the webhook", async () => {
  await using receiver = await Receiver.start();
  const sink = createSlackSink({ url: receiver.url }, { name: "slack", baseDir: "." });
  const alert = sampleAlert();
  await sink.send([alert]);
  const [request] = receiver.requests;
  assert.equal(request.method, "POST");
  assert.equal(request.headers["content-type"], "application/json");
  assert.deepEqual(JSON.parse(request.body), slackPayload([alert]));
  receiver.script({ status: 429, headers: { "retry-after": "3" }, body: "rate_limited" });
  const error = await sink.send([alert]).then(() => undefined, (e) => e);
  assert.ok(error instanceof DeliveryError);
  assert.equal(error.retryAfterMs, 3000);
  assert.equal(error.retryable, true);
});

Deno.test("slack healthcheck posts an empty payload that Slack refuses, and reads the answer", async () => {
  await using receiver = await Receiver.start();
  const sink = createSlackSink({ url: receiver.url }, { name: "slack", baseDir: "." });
  receiver.script({ status: 400, body: "no_text" });
  assert.match(await sink.healthcheck(), /accepts the webhook token/);
  assert.equal(receiver.requests[0].body, "{}");
  receiver.script({ status: 404, body: "no_service" });
  const error = await sink.healthcheck().then(() => undefined, (e) => e);
  assert.ok(error instanceof DeliveryError);
  assert.match(error.message, /404.*no_service/);
  assert.ok(!error.message.includes("T0KEN"));
});

Deno.test("slack plugin check requires an http(s) url and rejects unknown keys", () => {
  const check = new OptionsChecker(
    { url: "hooks.slack.com/services/x", channel: "#sec" },
    "sinks.s",
  );
  slackSink.check(check);
  check.done();
  assert.deepEqual(check.problems.map((p) => p.path), ["sinks.s.url", "sinks.s.channel"]);
});
