/**
 * Secrets: a config full of distinctive fake secrets (AWS access key id, secret key and session
 * token; an STS external id; a webhook URL with a token in its path and its query; an HMAC secret;
 * header values) runs through every failing path — S3, SQS and STS endpoints that refuse with the
 * request (headers, body) echoed in their error, endpoints nobody listens on, a bucket that does
 * not exist, a webhook receiver answering 500 with the request URL and headers echoed in its body
 * (also with padding that puts a secret across the point where the error message is cut), a
 * receiver that is down — with debug logging on, through `validate --check-sinks
 * --check-sources`, `ingest --once --summary`, `outbox list [--pending]` and `outbox retry`. No
 * secret, nor a 10-character piece of one, may appear in any stdout, stderr or summary.
 */

import assert from "node:assert/strict";
import { startS3 } from "./helpers/fauxqs.ts";
import { rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";
import { type RunResult, runToEnd } from "./helpers/reliability.ts";

const SECRETS = {
  accessKeyId: "AKIALEAKCANARY7Z01QX",
  secretAccessKey: "sEcReT/LeakCanary+9f8e7d6c5b4a39281706ZZ",
  sessionToken: "IQoJb3JpZ2luX2VjEXAMPLE-LeakCanarySessionToken-4d3c2b1a0f9e8d7c6b5a",
  externalId: "ext-LeakCanary-31a9c",
  webhookPathToken: "whkPathLeakCanary5e6f7a8b9c0d",
  webhookQueryToken: "whkQueryLeakCanary1a2b3c4d5e6f",
  hmacSecret: "hmac-LeakCanary-0a1b2c3d4e5f",
  authorization: "Bearer hdrBearerLeakCanary7f6e5d4c3b2a",
  apiKey: "hdrApiKeyLeakCanary1234abcd5678",
};

/** Every secret, every 10-character piece of one, and the marker they all carry. */
function needles(): string[] {
  const out = new Set<string>(["LeakCanary", "LEAKCANARY"]);
  for (const secret of Object.values(SECRETS)) {
    out.add(secret);
    for (let i = 0; i + 10 <= secret.length; i++) out.add(secret.slice(i, i + 10));
  }
  return [...out];
}

function assertNoSecret(label: string, text: string): void {
  for (const needle of needles()) {
    const at = text.indexOf(needle);
    if (at >= 0) {
      assert.fail(
        `${label} leaks "${needle}": …${text.slice(Math.max(0, at - 150), at + 80)}…`,
      );
    }
  }
}

function xmlEscape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * Refuses every request and echoes it (request line, headers, body) in the error: S3-style XML,
 * SQS-style JSON, STS-style XML; under `/hook` a webhook answering 500, padded by `?pad=N`
 * characters.
 */
async function echoHandler(request: Request): Promise<Response> {
  const url = new URL(request.url);
  const body = await request.text();
  const headers = [...request.headers].map(([k, v]) => `${k}: ${v}`).join("; ");
  const echo = `${request.method} ${url.pathname}${url.search} | ${headers} | ${body}`;
  if (url.pathname.startsWith("/hook")) {
    const pad = "x".repeat(Number(url.searchParams.get("pad") ?? 0));
    const text = `${pad} authorization=${request.headers.get("authorization")} x-api-key=${
      request.headers.get("x-api-key")
    } ${echo}`;
    return new Response(request.method === "HEAD" ? null : text, { status: 500 });
  }
  if (request.headers.has("x-amz-target")) {
    return Response.json(
      {
        __type: "com.amazon.coral.service#InvalidClientTokenId",
        message: `The security token included in the request is invalid: ${echo}`,
      },
      {
        status: 403,
        headers: {
          "content-type": "application/x-amz-json-1.0",
          "x-amzn-query-error": "InvalidClientTokenId;Sender",
        },
      },
    );
  }
  if (body.includes("Action=AssumeRole")) {
    return new Response(
      `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender` +
        `</Type><Code>AccessDenied</Code><Message>not authorized: ${
          xmlEscape(echo)
        }</Message></Error><RequestId>echo</RequestId></ErrorResponse>`,
      { status: 403, headers: { "content-type": "text/xml" } },
    );
  }
  return new Response(
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>` +
      `<Message>The request signature we calculated does not match: ${
        xmlEscape(echo)
      }</Message><AWSAccessKeyId>${SECRETS.accessKeyId}</AWSAccessKeyId><StringToSign>${
        xmlEscape(echo)
      }</StringToSign><CanonicalRequest>${
        xmlEscape(echo)
      }</CanonicalRequest><RequestId>echo</RequestId></Error>`,
    { status: 403, headers: { "content-type": "application/xml" } },
  );
}

/** The sources of the test config that cannot work. */
const SOURCES_FAILING = [
  "s3_refused",
  "s3_down",
  "s3_no_bucket",
  "s3_role",
  "sqs_refused",
  "sqs_down",
];

/** A loopback port nobody listens on. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

Deno.test("secrets from the config never appear in logs, errors, summaries or outbox listings, whatever fails", async () => {
  const tmp = await tempDir();
  await using s3 = await startS3();
  let count = 0;
  const echo = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => {
      count++;
      return echoHandler(request);
    },
  );
  try {
    const echoUrl = `http://127.0.0.1:${echo.addr.port}`;
    const downUrl = `http://127.0.0.1:${closedPort()}`;
    const credentials = {
      accessKeyId: SECRETS.accessKeyId,
      secretAccessKey: SECRETS.secretAccessKey,
      sessionToken: SECRETS.sessionToken,
    };
    const aws = (endpoint: string) => ({
      region: "us-east-1",
      endpoint,
      forcePathStyle: true,
      credentials,
      maxAttempts: 2,
    });
    const hook = (base: string, pad = 0) => ({
      type: "webhook",
      url: `${base}/hook/${SECRETS.webhookPathToken}?token=${SECRETS.webhookQueryToken}` +
        (pad ? `&pad=${pad}` : ""),
      secret: SECRETS.hmacSecret,
      headers: { Authorization: SECRETS.authorization, "X-Api-Key": SECRETS.apiKey },
      timeout: "3s",
    });
    // The error message shows the first 200 characters of a receiver's answer: this padding puts
    // the Authorization value across that cut (" authorization=" is 15 characters).
    const cutPad = 199 - 15 - 12;
    await writeFiles(tmp.path, {
      "logs/root.json.gz": trailFile([rootLogin(), rootLogin(), rootLogin()]),
    });
    const config = `${tmp.path}/config.json`;
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        sources: {
          local: { type: "local", path: "logs" },
          s3_refused: { type: "s3", bucket: "trail", ...aws(echoUrl) },
          s3_down: { type: "s3", bucket: "trail", ...aws(downUrl) },
          s3_no_bucket: { type: "s3", bucket: "no-such-bucket", ...aws(s3.endpoint) },
          s3_role: {
            type: "s3",
            bucket: "trail",
            ...aws(s3.endpoint),
            roleArn: "arn:aws:iam::111122223333:role/trail-reader",
            externalId: SECRETS.externalId,
            stsEndpoint: echoUrl,
          },
          sqs_refused: {
            type: "sqs",
            queueUrl: `${echoUrl}/111122223333/trail`,
            waitTimeSeconds: 0,
            ...aws(echoUrl),
          },
          sqs_down: {
            type: "sqs",
            queueUrl: `${downUrl}/111122223333/trail`,
            waitTimeSeconds: 0,
            ...aws(downUrl),
          },
        },
        detectors: { root_activity: {} },
        sinks: {
          echo: hook(echoUrl),
          echo_cut: hook(echoUrl, cutPad),
          down: hook(downUrl),
        },
        geo: { provider: "none" },
        delivery: { maxAttempts: 2, baseDelay: "0s", maxInlineWait: "0s" },
        state: { path: "state.kv" },
      }),
    );

    const env = { TRAILWATCH_LOG: "debug" };
    const outputs: [string, RunResult][] = [];
    const run = async (label: string, args: string[], codes: number[]) => {
      const result = await runToEnd([...args], env);
      outputs.push([label, result]);
      assert.ok(
        codes.includes(result.code),
        `${label}: exit ${result.code}\n${result.stdout}\n${result.stderr}`,
      );
      return result;
    };
    await run("validate", ["validate", "--config", config], [0]);
    const checks = await run("validate --check-sinks --check-sources", [
      "validate",
      "--config",
      config,
      "--check-sinks",
      "--check-sources",
    ], [3]);
    await run("ingest (first)", [
      "ingest",
      "--once",
      "--config",
      config,
      "--summary",
      `${tmp.path}/first.json`,
    ], [3]);
    const pending = await run("outbox list --pending", [
      "outbox",
      "list",
      "--pending",
      "--config",
      config,
    ], [0]);
    await run("ingest (second)", [
      "ingest",
      "--once",
      "--config",
      config,
      "--summary",
      `${tmp.path}/second.json`,
    ], [3]);
    const dead = await run("outbox list", ["outbox", "list", "--config", config], [0]);
    const retry = await run("outbox retry", ["outbox", "retry", "--config", config], [0, 3]);

    for (const [label, result] of outputs) {
      assertNoSecret(`${label} stdout`, result.stdout);
      assertNoSecret(`${label} stderr`, result.stderr);
    }
    const summary = await Deno.readTextFile(`${tmp.path}/first.json`);
    assertNoSecret("first summary", summary);
    assertNoSecret("second summary", await Deno.readTextFile(`${tmp.path}/second.json`));

    // The paths were really taken: every failure is reported, with its reason.
    for (const name of SOURCES_FAILING) {
      assert.match(checks.stdout, new RegExp(`source ${name}: FAILED: `));
    }
    for (const name of ["echo", "echo_cut", "down"]) {
      assert.match(checks.stdout, new RegExp(`sink ${name}: FAILED: `));
    }
    assert.match(pending.stdout, /last error: POST http:\/\/127\.0\.0\.1:\d+\/\*\*\* → 500/);
    assert.match(dead.stdout, /3 dead alert\(s\)/);
    assert.match(retry.stdout, /3 dead alert\(s\) put back/);
    for (const name of SOURCES_FAILING) {
      assert.match(summary, new RegExp(`source ${name}`));
    }
    const stderr = outputs.map(([, r]) => r.stderr).join("\n");
    assert.match(stderr, /authorization=\*\*\*/, "the receiver's echo never reached the log");
    assert.ok(count > 10, `the echo server got ${count} requests`);
  } finally {
    await echo.shutdown();
    await tmp.cleanup();
  }
});
