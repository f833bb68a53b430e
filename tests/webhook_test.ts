import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { verifyTrailwatchSignature } from "../docs/verify_signature.ts";
import { DeliveryError } from "../core/errors.ts";
import { captureLog } from "../core/log.ts";
import { OptionsChecker } from "../core/validate.ts";
import { parseRetryAfter, truncate } from "../sinks/_http.ts";
import { createWebhookSink, idempotencyKey, webhookSink } from "../sinks/webhook.ts";
import { Receiver, sampleAlert } from "./helpers/receiver.ts";

const context = { name: "hook", baseDir: "." };
const SECRET = "whsec-test-0123456789";

async function failure(promise: Promise<unknown>): Promise<DeliveryError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof DeliveryError, `expected a DeliveryError, got ${error}`);
    return error;
  }
  assert.fail("expected the send to fail");
}

Deno.test("webhook sink POSTs the alert JSON with Idempotency-Key equal to the alert id", async () => {
  await using receiver = await Receiver.start();
  const sink = createWebhookSink({ url: receiver.url }, context);
  const alert = sampleAlert();
  await sink.send([alert]);
  assert.equal(receiver.requests.length, 1);
  const request = receiver.requests[0];
  assert.equal(request.method, "POST");
  assert.equal(request.headers["content-type"], "application/json");
  assert.equal(request.headers["idempotency-key"], alert.id);
  assert.match(request.headers["user-agent"], /^trailwatch\//);
  assert.deepEqual(JSON.parse(request.body), alert);
  assert.equal(request.headers["x-trailwatch-signature"], undefined, "no secret, no signature");
});

Deno.test("webhook signature verifies with the documented snippet", async () => {
  await using receiver = await Receiver.start();
  const sink = createWebhookSink({ url: receiver.url, secret: SECRET }, context);
  const alert = sampleAlert({ title: 'Ünïcode title ✓ with "quotes"' });
  await sink.send([alert]);
  const { headers, body } = receiver.requests[0];
  const timestamp = headers["x-trailwatch-timestamp"];
  const signature = headers["x-trailwatch-signature"];
  assert.match(timestamp, /^\d+$/);
  assert.ok(Math.abs(Number(timestamp) - Date.now() / 1000) < 60);
  assert.match(signature, /^sha256=[0-9a-f]{64}$/);
  assert.equal(headers["idempotency-key"], alert.id);

  assert.equal(await verifyTrailwatchSignature(SECRET, timestamp, signature, body), true);
  assert.equal(
    await verifyTrailwatchSignature(SECRET, timestamp, signature, body.replace("alice", "mallory")),
    false,
    "a tampered body fails",
  );
  assert.equal(
    await verifyTrailwatchSignature("another-secret-value", timestamp, signature, body),
    false,
    "a wrong secret fails",
  );
  assert.equal(
    await verifyTrailwatchSignature(SECRET, String(Number(timestamp) - 1), signature, body),
    false,
    "the timestamp is signed",
  );
  assert.equal(await verifyTrailwatchSignature(SECRET, null, signature, body), false);
});

Deno.test("documented snippet rejects an old timestamp even with a valid signature", async () => {
  const old = String(Math.floor(Date.now() / 1000) - 3600);
  const body = JSON.stringify(sampleAlert());
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${old}.${body}`));
  const signature = "sha256=" +
    Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(await verifyTrailwatchSignature(SECRET, old, signature, body, 7200), true);
  assert.equal(await verifyTrailwatchSignature(SECRET, old, signature, body), false);
  assert.equal(await verifyTrailwatchSignature(SECRET, old, "sha256=abc", body, 7200), false);
});

Deno.test("the README contains the verification snippet the test runs, verbatim", async () => {
  const doc = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const snippet = await Deno.readTextFile(new URL("../docs/verify_signature.ts", import.meta.url));
  assert.ok(doc.includes(snippet.trim()), "README.md must embed docs/verify_signature.ts");
});

Deno.test("webhook sink sends configured headers but never lets them replace its own", async () => {
  await using receiver = await Receiver.start();
  const sink = createWebhookSink({
    url: receiver.url,
    headers: { Authorization: "Bearer tok-0123456789", "X-Team": "secops" },
  }, context);
  const alert = sampleAlert();
  await sink.send([alert]);
  const { headers } = receiver.requests[0];
  assert.equal(headers["authorization"], "Bearer tok-0123456789");
  assert.equal(headers["x-team"], "secops");
  assert.equal(headers["idempotency-key"], alert.id);

  const check = new OptionsChecker({
    url: receiver.url,
    headers: { "Idempotency-Key": "x", "bad header": "y" },
  }, "sinks.hook");
  webhookSink.check(check);
  check.done();
  assert.deepEqual(check.problems.map((p) => p.path).sort(), [
    "sinks.hook.headers.Idempotency-Key",
    "sinks.hook.headers.bad header",
  ]);
});

Deno.test("webhook sink POSTs a group once with a key derived from the sorted ids", async () => {
  await using receiver = await Receiver.start();
  const sink = createWebhookSink({ url: receiver.url, secret: SECRET }, context);
  const alerts = [sampleAlert(), sampleAlert(), sampleAlert()];
  await sink.send(alerts);
  assert.equal(receiver.requests.length, 1);
  const { headers, body } = receiver.requests[0];
  const expected = "group-" +
    createHash("sha256").update(alerts.map((a) => a.id).sort().join(",")).digest("hex");
  assert.equal(headers["idempotency-key"], expected);
  assert.equal(await idempotencyKey(alerts.map((a) => a.id).reverse()), expected);
  const parsed = JSON.parse(body);
  assert.deepEqual(parsed.alerts, alerts);
  assert.deepEqual(parsed.group, { detector: "impossible_travel", user: "alice", count: 3 });
  assert.equal(
    await verifyTrailwatchSignature(
      SECRET,
      headers["x-trailwatch-timestamp"],
      headers["x-trailwatch-signature"],
      body,
    ),
    true,
  );
});

Deno.test("webhook sink maps statuses onto retryable or final DeliveryErrors", async () => {
  await using receiver = await Receiver.start();
  const sink = createWebhookSink({ url: receiver.url }, context);
  const alert = sampleAlert();
  const inOneMinute = new Date(Date.now() + 60_000).toUTCString();
  receiver.script(
    { status: 429, headers: { "retry-after": "7" }, body: "slow down" },
    { status: 503, headers: { "retry-after": inOneMinute } },
    { status: 500 },
    { status: 408 },
    { status: 400, body: "bad payload" },
    { status: 401 },
    { status: 404 },
    { status: 302, headers: { location: "http://127.0.0.1:1/elsewhere" } },
    { status: 202 },
  );
  const tooMany = await failure(sink.send([alert]));
  assert.equal(tooMany.retryable, true);
  assert.equal(tooMany.status, 429);
  assert.equal(tooMany.retryAfterMs, 7000);
  assert.match(tooMany.message, /429.*slow down/);

  const unavailable = await failure(sink.send([alert]));
  assert.equal(unavailable.retryable, true);
  assert.ok(unavailable.retryAfterMs! > 50_000 && unavailable.retryAfterMs! <= 60_000);

  for (const status of [500, 408]) {
    const error = await failure(sink.send([alert]));
    assert.equal(error.status, status);
    assert.equal(error.retryable, true);
  }
  for (const status of [400, 401, 404, 302]) {
    const error = await failure(sink.send([alert]));
    assert.equal(error.status, status);
    assert.equal(error.retryable, false, `${status} is final`);
  }
  await sink.send([alert]); // 202 is a success
  assert.equal(receiver.requests.length, 9);
});

Deno.test("parseRetryAfter() reads seconds and HTTP-dates", () => {
  const now = Date.parse("2024-05-01T12:00:00Z");
  assert.equal(parseRetryAfter("120", now), 120_000);
  assert.equal(parseRetryAfter("0", now), 0);
  assert.equal(parseRetryAfter("Wed, 01 May 2024 12:00:30 GMT", now), 30_000);
  assert.equal(parseRetryAfter("Wed, 01 May 2024 11:00:00 GMT", now), 0);
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
});

Deno.test("truncate() cuts with an ellipsis and never splits a surrogate pair", () => {
  assert.equal(truncate("abcdef", 10), "abcdef");
  assert.equal(truncate("abcdef", 4), "abc…");
  assert.equal(truncate("ab😀cd", 4), "ab…");
  assert.ok(truncate("x".repeat(5000), 3000).length <= 3000);
});

Deno.test("webhook errors and logs never contain the URL token, the secret or header values", async () => {
  const receiver = await Receiver.start();
  const url = receiver.url;
  const token = new URL(url).pathname.split("/").pop()!;
  const sink = createWebhookSink({
    url,
    secret: SECRET,
    headers: { Authorization: "Bearer hdr-secret-987654" },
    timeout: "300ms",
  }, context);
  receiver.script({ status: 500, body: `echo ${url} Bearer hdr-secret-987654` });
  const lines: string[] = [];
  const restore = captureLog((line) => lines.push(line));
  try {
    const echoed = await failure(sink.send([sampleAlert()]));
    receiver.script({ delayMs: 1000 });
    const slow = await failure(sink.send([sampleAlert()]));
    assert.match(slow.message, /timed out/);
    assert.equal(slow.retryable, true);
    await receiver.stop();
    const down = await failure(sink.send([sampleAlert()]));
    assert.equal(down.retryable, true);
    const health = await sink.healthcheck().then(() => "ok", (e) => e as Error);
    assert.ok(health instanceof Error, "healthcheck fails when the receiver is down");
    for (const error of [echoed, slow, down, health]) {
      const text = `${error.message} ${(error.cause as Error | undefined)?.message ?? ""}`;
      assert.ok(!text.includes(token), `token leaked: ${text}`);
      assert.ok(!text.includes(SECRET));
      assert.ok(!text.includes("hdr-secret-987654"), `header leaked: ${text}`);
      assert.match(error.message, /http:\/\/127\.0\.0\.1:\d+\/\*\*\*/);
    }
  } finally {
    restore();
    await receiver.stop();
  }
  for (const line of lines) assert.ok(!line.includes(token));
});

Deno.test("webhook healthcheck sends a HEAD request and posts nothing", async () => {
  await using receiver = await Receiver.start();
  const sink = createWebhookSink({ url: receiver.url, headers: { "X-Api-Key": "k-123456" } }, {
    name: "hook",
    baseDir: ".",
  });
  receiver.script({ status: 405, method: "HEAD" });
  const description = await sink.healthcheck();
  assert.match(description, /reachable \(HEAD → 405\)/);
  assert.ok(!description.includes("T0KEN"));
  assert.deepEqual(receiver.requests.map((r) => r.method), ["HEAD"]);
  assert.equal(receiver.requests[0].headers["x-api-key"], "k-123456");
  receiver.script({ status: 502, method: "HEAD" });
  await assert.rejects(sink.healthcheck(), DeliveryError);
});

Deno.test("webhook plugin check reports unknown keys, a missing or non-http url, a bad timeout", () => {
  const problems = (raw: Record<string, unknown>) => {
    const check = new OptionsChecker(raw, "sinks.hook");
    webhookSink.check(check);
    check.done();
    return check.problems.map((p) => `${p.path}: ${p.message}`);
  };
  assert.deepEqual(
    problems({ url: "https://example.com/hook", timeout: "5s", secret: "12345678" }),
    [],
  );
  assert.deepEqual(problems({}), ["sinks.hook.url: is required"]);
  const bad = problems({
    url: "ftp://example.com/x?token=abc",
    timeout: "soon",
    extra: 1,
    secret: 5,
  });
  assert.equal(bad.length, 4);
  assert.ok(bad.some((p) => p.startsWith("sinks.hook.url: expected an http")));
  assert.ok(bad.some((p) => p.startsWith("sinks.hook.timeout:")));
  assert.ok(bad.some((p) => p === "sinks.hook.extra: unknown key"));
  assert.ok(bad.some((p) => p.startsWith("sinks.hook.secret:")));
  assert.ok(!bad.join("\n").includes("token=abc"), "the URL is not echoed");
});
