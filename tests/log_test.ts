import assert from "node:assert/strict";
import {
  captureLog,
  log,
  maskUrl,
  redact,
  registerSecret,
  registerSecretUrl,
} from "../core/log.ts";

Deno.test("log: registered secrets are redacted from every line", () => {
  registerSecret("AKIAIOSFODNN7EXAMPLE");
  registerSecret("abc"); // too short to register: would mask ordinary text
  const lines: string[] = [];
  const restore = captureLog((line) => lines.push(line));
  try {
    log.error("request signed with AKIAIOSFODNN7EXAMPLE failed for abc");
  } finally {
    restore();
  }
  assert.match(lines[0], /ERROR request signed with \*\*\* failed for abc$/);
});

Deno.test("log: webhook URLs are masked whole and by their token parts, not by common words", () => {
  registerSecretUrl(
    "https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/x0y1z2SecretTokenValue99",
  );
  registerSecretUrl(
    "https://prod-01.westus.logic.azure.com/workflows/abc123def456/triggers/manual/paths/invoke?api-version=2016-06-01&sig=Zm9vYmFyYmF6cXV4",
  );
  assert.equal(
    redact(
      "POST https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/x0y1z2SecretTokenValue99 → 500",
    ),
    "POST *** → 500",
  );
  assert.equal(redact("token x0y1z2SecretTokenValue99 leaked"), "token *** leaked");
  assert.equal(redact("sig=Zm9vYmFyYmF6cXV4"), "sig=***");
  assert.equal(
    redact("slack services and discord webhooks and teams workflows"),
    "slack services and discord webhooks and teams workflows",
  );
  assert.equal(
    maskUrl("https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/xyz"),
    "https://hooks.slack.com/***",
  );
  assert.equal(maskUrl("not a url"), "***");
});
