import assert from "node:assert/strict";
import { loadConfig, mapForeignBlocks, parseConfigText, resolveConfig } from "../core/config.ts";
import { ConfigError } from "../core/errors.ts";
import { redact } from "../core/log.ts";
import { detectors } from "../detectors/mod.ts";
import { tempDir } from "./helpers/records.ts";

function problemsOf(raw: unknown): string[] {
  try {
    resolveConfig(raw, "/base");
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.problems.map((p) => `${p.path}: ${p.message}`);
  }
  assert.fail("expected a ConfigError");
}

Deno.test("config: a minimal config gets defaults", () => {
  const config = resolveConfig({ sources: { logs: { type: "local", path: "logs" } } }, "/base");
  assert.equal(config.sources.length, 1);
  assert.equal(config.sources[0].schedule, "*/5 * * * *");
  assert.deepEqual(config.sources[0].options, { path: "logs" });
  assert.equal(config.state.path, "/base/.trailwatch/state.kv");
  assert.deepEqual(config.sinks.map((s) => s.type), ["stdout"]);
  const builtins = Object.entries(detectors).filter(([, p]) => p.builtin !== false).map(([n]) => n);
  assert.deepEqual(config.detectors.map((d) => d.name), builtins);
});

Deno.test("config: every problem is reported with its key path", () => {
  const problems = problemsOf({
    sources: {
      logs: { type: "local", path: 7, extra: true, schedule: "every minute" },
      other: { type: "ftp" },
    },
    detectors: { root_activity: { severity: "urgent" }, nope: {} },
    sinks: {
      out: { type: "jsonl" },
      hook: { type: "stdout", minSeverity: "low", detectors: ["missing"] },
    },
    state: { path: 3 },
    bogus: 1,
  });
  const expected = [
    /^sources\.logs\.path: expected a non-empty string, got 7$/,
    /^sources\.logs\.extra: unknown key$/,
    /^sources\.logs\.schedule: expected a 5-field cron expression/,
    /^sources\.other\.type: unknown source type "ftp"/,
    /^detectors\.root_activity\.severity: expected one of info, low, medium, high, critical, got "urgent"$/,
    /^detectors\.nope: unknown detector type "nope"/,
    /^sinks\.out\.path: is required$/,
    /^sinks\.hook\.detectors\[0\]: no detector named "missing"$/,
    /^state\.path: expected a non-empty string, got 3$/,
    /^bogus: unknown key$/,
  ];
  for (const pattern of expected) {
    assert.ok(
      problems.some((p) => pattern.test(p)),
      `missing ${pattern}\nin:\n${problems.join("\n")}`,
    );
  }
  assert.equal(problems.length, expected.length, problems.join("\n"));
});

Deno.test("config: sources are required and must be objects", () => {
  assert.deepEqual(problemsOf({}), ["sources: at least one source is required"]);
  assert.match(
    problemsOf({ sources: [] })[0],
    /^sources: expected an object keyed by instance name/,
  );
  assert.match(problemsOf({ sources: { a: "local" } })[0], /^sources\.a: expected an object/);
});

Deno.test("config: disabled plugins are left out and detector type defaults to the name", () => {
  const config = resolveConfig({
    sources: { a: { type: "local", path: "x" }, b: { type: "local", path: "y", enabled: false } },
    detectors: {
      root_activity: {},
      strict_mfa: { type: "console_login_no_mfa", severity: "high" },
      console_login_no_mfa: { enabled: false },
    },
  }, "/base");
  assert.deepEqual(config.sources.map((s) => s.name), ["a"]);
  assert.deepEqual(config.detectors.map((d) => [d.name, d.type]), [
    ["root_activity", "root_activity"],
    ["strict_mfa", "console_login_no_mfa"],
  ]);
  assert.deepEqual(config.detectors[1].options, { severity: "high" });
});

Deno.test("config: custom_mapping is validated, including prototype paths", () => {
  const problems = problemsOf({
    sources: {
      a: {
        type: "local",
        path: "x",
        custom_mapping: JSON.parse(
          '{"username": "userIdentity.__proto__.x", "__proto__": "eventName", "ok": "a..b"}',
        ),
      },
    },
  });
  assert.ok(
    problems.some((p) =>
      p.includes('sources.a.custom_mapping.username: path segment "__proto__" is not allowed')
    ),
  );
  assert.ok(
    problems.some((p) =>
      p.includes('sources.a.custom_mapping.__proto__: key "__proto__" is not allowed')
    ),
  );
  assert.ok(
    problems.some((p) => p.includes("sources.a.custom_mapping.ok: path")),
    problems.join("\n"),
  );
  const config = resolveConfig({
    sources: {
      a: {
        type: "local",
        path: "x",
        customMapping: { team: "requestParameters.team" },
        customFields: ["team"],
      },
    },
  }, "/base");
  assert.equal(typeof config.sources[0].mapping, "function");
});

Deno.test("config: BuffaLogs' cloudtrail ingestion block maps onto an s3 source", () => {
  const buffalogs = {
    active_ingestion: "cloudtrail",
    cloudtrail: {
      aws_access_key_id: "AKIAEXAMPLEBUFFALOGS",
      aws_secret_access_key: "buffalogs-secret-key-value",
      region: "eu-west-1",
      bucket_name: "org-trail",
      prefix: "AWSLogs/",
      custom_mapping: { username: "userIdentity.arn" },
      __custom_fields__: [],
    },
    elasticsearch: { url: "http://elasticsearch:9200/" },
  };
  const { raw, notes, problems } = mapForeignBlocks(buffalogs);
  assert.deepEqual(problems, []);
  assert.deepEqual(raw.sources, {
    cloudtrail: {
      type: "s3",
      bucket: "org-trail",
      prefix: "AWSLogs/",
      region: "eu-west-1",
      credentials: {
        accessKeyId: "AKIAEXAMPLEBUFFALOGS",
        secretAccessKey: "buffalogs-secret-key-value",
      },
      customMapping: { username: "userIdentity.arn" },
      customFields: [],
    },
  });
  assert.equal("cloudtrail" in raw || "active_ingestion" in raw || "elasticsearch" in raw, false);
  assert.match(notes[0], /elasticsearch: BuffaLogs ingestion block ignored/);
  const wrong = mapForeignBlocks({
    active_ingestion: "splunk",
    cloudtrail: { bucket_name: "b", typo: 1 },
  });
  assert.deepEqual(wrong.problems.map((p) => p.path), ["active_ingestion", "cloudtrail.typo"]);
});

Deno.test("config: LimaCharlie s3 and sqs adapter blocks map onto sources named by hostname", () => {
  const { raw, notes, problems } = mapForeignBlocks({
    s3: {
      bucket_name: "lc-trail",
      access_key: "AKIAEXAMPLELIMACHARLIE",
      secret_key: "limacharlie-secret",
      prefix: "AWSLogs/",
      client_options: {
        hostname: "cloudtrail-prod",
        identity: { oid: "00000000-0000-0000-0000-000000000000", installation_key: "ik" },
        platform: "aws",
        sensor_seed_key: "cloudtrail",
      },
    },
    sqs: {
      queue_url: "https://sqs.us-east-1.amazonaws.com/111122223333/trail",
      region: "us-east-1",
      access_key: "AKIAEXAMPLELIMACHARLIE",
      secret_key: "limacharlie-secret",
      client_options: { identity: { oid: "x" } },
    },
  });
  assert.deepEqual(problems, []);
  assert.deepEqual(raw.sources, {
    "cloudtrail-prod": {
      type: "s3",
      bucket: "lc-trail",
      prefix: "AWSLogs/",
      credentials: { accessKeyId: "AKIAEXAMPLELIMACHARLIE", secretAccessKey: "limacharlie-secret" },
    },
    sqs: {
      type: "sqs",
      queueUrl: "https://sqs.us-east-1.amazonaws.com/111122223333/trail",
      region: "us-east-1",
      credentials: { accessKeyId: "AKIAEXAMPLELIMACHARLIE", secretAccessKey: "limacharlie-secret" },
    },
  });
  assert.ok(
    notes.some((n) => n.startsWith("s3.client_options.identity: LimaCharlie setting ignored")),
  );
  assert.ok(notes.some((n) => n.startsWith("sqs.client_options.identity")));
  const bad = mapForeignBlocks({ s3: { bucket: "x", client_options: { color: "red" } } });
  assert.deepEqual(bad.problems.map((p) => p.path).sort(), [
    "s3.bucket",
    "s3.client_options.color",
  ]);
});

Deno.test("config: secrets from the config are registered for redaction", () => {
  try {
    resolveConfig({
      cloudtrail: {
        bucket_name: "b",
        aws_secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      },
      active_ingestion: "cloudtrail",
      sinks: {
        hook: {
          type: "webhook",
          url: "https://hooks.example.com/services/T0001/B0002/XYZsecrettoken123",
        },
      },
    }, "/base");
  } catch {
    // s3/webhook may not be registered yet; secrets are registered before validation anyway
  }
  const text = "signed with wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY to XYZsecrettoken123";
  assert.equal(redact(text), "signed with *** to ***");
  assert.equal(
    redact("POST https://hooks.example.com/services/T0001/B0002/XYZsecrettoken123 failed"),
    "POST *** failed",
  );
});

Deno.test("config: YAML files, JSON files and deno.json's trailwatch block load", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(
      `${dir.path}/trailwatch.yaml`,
      "sources:\n  logs:\n    type: local\n    path: ./logs\nstate:\n  path: ./state/kv\n",
    );
    const yaml = await loadConfig(`${dir.path}/trailwatch.yaml`);
    assert.equal(yaml.sources[0].name, "logs");
    assert.equal(yaml.state.path, `${dir.path}/state/kv`);
    assert.equal(yaml.baseDir, dir.path);
    await Deno.writeTextFile(
      `${dir.path}/deno.json`,
      JSON.stringify({ tasks: {}, trailwatch: { sources: { a: { type: "local", path: "x" } } } }),
    );
    assert.equal((await loadConfig(`${dir.path}/deno.json`)).sources[0].name, "a");
    await Deno.writeTextFile(`${dir.path}/broken.json`, "{ sources: ");
    await assert.rejects(
      () => loadConfig(`${dir.path}/broken.json`),
      (e: unknown) => e instanceof ConfigError && /broken\.json/.test(e.message),
    );
    await assert.rejects(() => loadConfig(`${dir.path}/missing.json`), /cannot read/);
    assert.throws(() => parseConfigText("{}", "deno.json"), /no "trailwatch" block/);
  } finally {
    await dir.cleanup();
  }
});
