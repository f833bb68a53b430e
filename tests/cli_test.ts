import assert from "node:assert/strict";
import { ctRecord, rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";
import { ROOT, runCli } from "./helpers/cli.ts";

Deno.test("cli: --help works on every command", async () => {
  for (
    const args of [["--help"], ["ingest", "--help"], ["validate", "--help"], ["outbox", "--help"]]
  ) {
    const result = await runCli(args);
    assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
    assert.match(result.stdout, /Usage: trailwatch/);
  }
  const unknown = await runCli(["ingest", "--bogus"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /bogus/);
  assert.equal((await runCli(["frobnicate"])).code, 1);
});

Deno.test("cli: validate prints every config problem with its key path and exits 1", async () => {
  const dir = await tempDir();
  try {
    const path = `${dir.path}/bad.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        sources: { logs: { type: "local" }, s2: { type: "local", path: "x", concurrency: "8x" } },
        sinks: { out: { type: "stdout", format: "xml" } },
      }),
    );
    const result = await runCli(["validate", "--config", path]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /sources\.logs\.path: is required/);
    assert.match(result.stderr, /sources\.s2\.concurrency: unknown key/);
    assert.match(result.stderr, /sinks\.out\.format: expected one of text, json, got "xml"/);
    const ok = await runCli(["validate"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /config OK: sources demo \(local\)/);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("cli: ingest --once on the demo prints alerts, a second run reads nothing", async () => {
  const dir = await tempDir();
  try {
    const state = `${dir.path}/state.kv`;
    const summaryPath = `${dir.path}/summary.json`;
    const first = await runCli(["ingest", "--once", "--state", state, "--summary", summaryPath]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /\[HIGH\] .* root_activity: Root account used: ConsoleLogin/);
    assert.match(first.stdout, /console_login_no_mfa: Console login without MFA by bob/);
    const summary = JSON.parse(await Deno.readTextFile(summaryPath));
    assert.deepEqual(Object.keys(summary).sort(), [
      "alerts",
      "alerts_suppressed",
      "duplicates_skipped",
      "duration_s",
      "events",
      "events_failed",
      "failures",
      "objects_failed",
      "objects_read",
    ]);
    assert.ok(summary.objects_read > 50);
    assert.ok(summary.alerts >= 2);
    assert.deepEqual(summary.failures, []);
    assert.match(first.stderr, /trailwatch: \d+ objects read, 0 failed; \d+ events/);
    const second = await runCli(["ingest", "--once", "--state", state, "--summary", summaryPath]);
    assert.equal(second.code, 0, second.stderr);
    const again = JSON.parse(await Deno.readTextFile(summaryPath));
    assert.equal(again.objects_read, 0);
    assert.equal(again.alerts, 0);
    assert.equal(second.stdout, "");
  } finally {
    await dir.cleanup();
  }
});

Deno.test("cli: ingest --once exits 3 and lists each failure when objects or records fail", async () => {
  const dir = await tempDir();
  try {
    const noName = ctRecord();
    delete noName.eventName;
    await writeFiles(dir.path, {
      "logs/good.json.gz": trailFile([rootLogin()]),
      "logs/bad-records.json": JSON.stringify({ Records: [noName, rootLogin()] }),
      "logs/truncated.json.gz": trailFile([rootLogin(), rootLogin()]).slice(0, 40),
    });
    await Deno.writeTextFile(
      `${dir.path}/config.json`,
      JSON.stringify({
        sources: { logs: { type: "local", path: "logs" } },
        state: { path: "state.kv" },
      }),
    );
    const result = await runCli([
      "ingest",
      "--once",
      "--config",
      `${dir.path}/config.json`,
      "--summary",
      `${dir.path}/s.json`,
    ]);
    assert.equal(result.code, 3, result.stderr);
    const summary = JSON.parse(await Deno.readTextFile(`${dir.path}/s.json`));
    assert.equal(summary.events_failed, 1);
    assert.equal(summary.objects_failed, 1);
    const reasons = summary.failures.map((f: { object: string; reason: string }) =>
      `${f.object.split("/").pop()}: ${f.reason}`
    );
    assert.ok(
      reasons.some((r: string) => /^bad-records\.json: record 1 .*missing eventName/.test(r)),
      reasons.join("\n"),
    );
    assert.ok(
      reasons.some((r: string) =>
        /^truncated\.json\.gz: Cannot decode .*truncated\.json\.gz/.test(r)
      ),
      reasons.join("\n"),
    );
  } finally {
    await dir.cleanup();
  }
});

Deno.test("cli: --dry-run prints alerts but writes no state and delivers nothing", async () => {
  const dir = await tempDir();
  try {
    await writeFiles(dir.path, { "logs/a.json": trailFile([rootLogin()], false) });
    await Deno.writeTextFile(
      `${dir.path}/config.json`,
      JSON.stringify({
        sources: { logs: { type: "local", path: "logs" } },
        sinks: { file: { type: "jsonl", path: "alerts.jsonl" } },
        state: { path: "state.kv" },
      }),
    );
    const dry = await runCli([
      "ingest",
      "--once",
      "--dry-run",
      "--config",
      `${dir.path}/config.json`,
    ]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /\(dry run\) \[HIGH\] .*Root account used/);
    await assert.rejects(() => Deno.stat(`${dir.path}/alerts.jsonl`));
    const real = await runCli(["ingest", "--once", "--config", `${dir.path}/config.json`]);
    assert.equal(real.code, 0, real.stderr);
    const lines = (await Deno.readTextFile(`${dir.path}/alerts.jsonl`)).trim().split("\n");
    assert.equal(lines.length, 1);
  } finally {
    await dir.cleanup();
  }
});

Deno.test("cli: the deno.json demo config is valid and points at the committed sample", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  assert.equal(denoJson.trailwatch.sources.demo.path, "examples/logs");
  const info = await Deno.stat(`${ROOT}/examples/logs`);
  assert.ok(info.isDirectory);
});
