/**
 * The malformed-input corpus: every kind of broken object or record gives a failure with a
 * reason in the summary, the process neither crashes nor hangs, memory stays bounded, no
 * prototype is polluted, and every valid record of the other objects is processed.
 */

import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { resolveConfig } from "../core/config.ts";
import { ConfigError } from "../core/errors.ts";
import { Runtime } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import { staticGeoProvider } from "../mapping/geo.ts";
import { watchPeakRss } from "../bench/rss.ts";
import { ROOT } from "./helpers/cli.ts";
import { ctRecord, rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";

const encoder = new TextEncoder();

/** Writes the corpus under `dir`; returns how many valid records it holds. */
async function writeCorpus(dir: string): Promise<number> {
  let valid = 0;
  const good = (n: number) => {
    valid += n;
    return Array.from({ length: n }, () => ctRecord());
  };
  const json = (value: unknown) => JSON.stringify(value);
  const goodGz = trailFile(good(3));
  const noTime = ctRecord();
  delete noTime.eventTime;
  const noName = ctRecord();
  delete noName.eventName;
  await writeFiles(dir, {
    "corpus/01-zero-byte.json": new Uint8Array(0),
    "corpus/02-truncated.json.gz": trailFile([ctRecord(), ctRecord()]).slice(0, 50),
    "corpus/03-garbage-trailer.json.gz": new Uint8Array([...goodGz, ...encoder.encode("GARBAGE!")]),
    "corpus/04-binary.json": new Uint8Array(
      Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 256),
    ),
    "corpus/05-invalid-start.json": "}{" + json({ Records: [ctRecord()] }),
    "corpus/06-invalid-middle.json": `{"Records":[${json(good(1)[0])},{"eventName": tru},${
      json(good(1)[0])
    }]}`,
    "corpus/07-invalid-end.json": `{"Records":[${json(good(1)[0])},${
      json(good(1)[0])
    },{"eventTime": "2026-`,
    "corpus/08-records-not-array.json": json({ Records: { eventName: "x" } }),
    "corpus/09-not-objects.json": json({ Records: [1, "text", null, [ctRecord()], ...good(1)] }),
    "corpus/10-missing-fields.json": json({ Records: [noTime, noName, ...good(1)] }),
    "corpus/11-wrong-types.json": json({
      Records: [
        ctRecord({ eventTime: 1763452800 }),
        ctRecord({ sourceIPAddress: { ip: "1.2.3.4" } }),
        ctRecord({ userIdentity: null }),
        ...good(1),
      ],
    }),
    "corpus/14-proto-keys.json":
      `{"Records":[{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}},` +
      `"prototype":{"polluted":"yes"},"eventTime":"2026-11-18T08:00:00Z","eventName":"ListBuckets",` +
      `"eventID":"proto-1","userIdentity":{"type":"IAMUser","userName":"alice","__proto__":{"isAdmin":true}}}]}`,
    "valid/a.json.gz": trailFile(good(20)),
    "valid/b.json": json({ Records: good(5) }),
  });
  valid++; // 14-proto-keys holds one valid record
  // 12: a 100 MB single string inside one record, between two valid records.
  const big = await Deno.open(`${dir}/corpus/12-huge-string.json`, { write: true, create: true });
  await big.write(encoder.encode(`{"Records":[${json(good(1)[0])},{"eventName":"x","blob":"`));
  const chunk = encoder.encode("A".repeat(1 << 20));
  for (let i = 0; i < 100; i++) await big.write(chunk);
  await big.write(encoder.encode(`"},${json(good(1)[0])}]}`));
  big.close();
  // 13: nesting 100,000 levels deep inside a record.
  await Deno.writeTextFile(
    `${dir}/corpus/13-deep.json`,
    `{"Records":[{"eventName":"x","deep":${"[".repeat(100_000)}${"]".repeat(100_000)}},${
      json(good(1)[0])
    }]}`,
  );
  // 15: a gzip bomb: a few KB expanding past the bomb source's 4 MB cap.
  await Deno.mkdir(`${dir}/bomb`, { recursive: true });
  const spaces = new Uint8Array(8 * 1024 * 1024).fill(0x20);
  spaces.set(encoder.encode('{"Records":['));
  await Deno.writeFile(`${dir}/bomb/bomb.json.gz`, gzipSync(spaces, { level: 9 }));
  return valid;
}

Deno.test("malformed corpus: every bad object or record is reported, the valid ones all processed, memory bounded", async () => {
  const tmp = await tempDir();
  try {
    const valid = await writeCorpus(tmp.path);
    const bombSize = (await Deno.stat(`${tmp.path}/bomb/bomb.json.gz`)).size;
    assert.ok(bombSize < 16_384, `the bomb is ${bombSize} bytes`);
    await Deno.writeTextFile(
      `${tmp.path}/config.json`,
      JSON.stringify({
        sources: {
          corpus: { type: "local", path: "corpus" },
          valid: { type: "local", path: "valid" },
          bomb: { type: "local", path: "bomb", maxObjectBytes: 4 * 1024 * 1024 },
        },
        detectors: { root_activity: {} },
        sinks: { file: { type: "jsonl", path: "alerts.jsonl" } },
        state: { path: "state.kv" },
      }),
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}/main.ts`,
        "ingest",
        "--once",
        "--config",
        `${tmp.path}/config.json`,
        "--summary",
        `${tmp.path}/summary.json`,
      ],
      env: { TRAILWATCH_LOG: "warn", NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stopWatching = watchPeakRss(child.pid, 20);
    const timeout = setTimeout(() => child.kill("SIGKILL"), 90_000);
    const output = await child.output();
    const peakMb = stopWatching();
    clearTimeout(timeout);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 3, `exit ${output.code}: ${stderr.slice(-3000)}`);
    assert.ok(peakMb < 400, `peak RSS ${peakMb.toFixed(0)} MB`);
    const summary = JSON.parse(await Deno.readTextFile(`${tmp.path}/summary.json`));
    assert.equal(summary.events, valid, JSON.stringify(summary, null, 1));
    const reasons = (summary.failures as { object: string; reason: string }[]).map((f) =>
      `${f.object.split("/").pop()}: ${f.reason}`
    );
    const expect = (file: string, pattern: RegExp) =>
      assert.ok(
        reasons.some((r) => r.startsWith(file) && pattern.test(r)),
        `no failure for ${file} matching ${pattern}:\n${reasons.join("\n")}`,
      );
    expect("01-zero-byte.json", /empty object \(0 bytes\)/);
    expect("02-truncated.json.gz", /gzip stream truncated at byte \d+/);
    expect("03-garbage-trailer.json.gz", /trailing garbage after gzip member/);
    expect("04-binary.json", /Cannot decode .*04-binary\.json: .* at byte \d+/);
    expect("05-invalid-start.json", /at byte 0/);
    expect("06-invalid-middle.json", /record 2 \(byte \d+\): invalid JSON/);
    expect("07-invalid-end.json", /unexpected end of input/);
    expect("08-records-not-array.json", /"Records" is not an array/);
    expect("09-not-objects.json", /record 1 .*not an object \(got a number\)/);
    expect("09-not-objects.json", /record 3 .*not an object \(got null\)/);
    expect("09-not-objects.json", /record 4 .*not an object \(got an array\)/);
    expect("10-missing-fields.json", /record 1 .*missing eventTime/);
    expect("10-missing-fields.json", /record 2 .*missing eventName/);
    expect(
      "11-wrong-types.json",
      /record 1 .*eventTime: expected an ISO 8601 string, got 1763452800/,
    );
    expect("11-wrong-types.json", /record 2 .*sourceIPAddress: expected a string, got an object/);
    expect("11-wrong-types.json", /record 3 .*userIdentity: expected an object, got null/);
    expect("12-huge-string.json", /record 2 .*exceeds/);
    expect("13-deep.json", /record 1 .*nesting exceeds 500 levels/);
    expect("bomb.json.gz", /decompressed size exceeds/);
    // Every failure names its object; nothing else failed.
    assert.equal(summary.objects_failed, 8, reasons.join("\n"));
    assert.equal(summary.objects_read, 9);
    assert.ok(!stderr.includes("Uncaught"), stderr);
  } finally {
    await tmp.cleanup();
  }
});

Deno.test("malformed corpus: __proto__, constructor and prototype keys pollute nothing", async () => {
  const tmp = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    await writeFiles(tmp.path, {
      "logs/proto.json":
        `{"__proto__":{"polluted":"top"},"Records":[{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}},` +
        `"eventTime":"2026-11-18T08:00:00Z","eventName":"ConsoleLogin","eventID":"p-1",` +
        `"responseElements":{"ConsoleLogin":"Success"},"additionalEventData":{"MFAUsed":"No","__proto__":{"x":1}},` +
        `"userIdentity":{"type":"Root","__proto__":{"isAdmin":true}}}]}`,
    });
    const config = resolveConfig({
      sources: {
        logs: {
          type: "local",
          path: `${tmp.path}/logs`,
          customMapping: { username: "userIdentity.type", team: "additionalEventData.MFAUsed" },
        },
      },
      detectors: { root_activity: {}, console_login_no_mfa: {}, rules: {} },
      sinks: { file: { type: "jsonl", path: `${tmp.path}/alerts.jsonl` } },
    }, "/");
    const runtime = await Runtime.create(config, { store, geo: staticGeoProvider({}) });
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.equal(summary.events, 1);
    assert.equal(summary.alerts, 2);
    const probe = {} as Record<string, unknown>;
    assert.equal(probe.polluted, undefined);
    assert.equal(probe.isAdmin, undefined);
    assert.equal(probe.x, undefined);
    assert.equal(Object.getPrototypeOf(probe), Object.prototype);
    assert.throws(
      () =>
        resolveConfig({
          sources: {
            logs: {
              type: "local",
              path: "x",
              customMapping: { username: "userIdentity.__proto__.isAdmin" },
            },
          },
        }, "/"),
      (error: unknown) =>
        error instanceof ConfigError && /custom_mapping|customMapping/.test(error.message) &&
        /__proto__/.test(error.message),
    );
  } finally {
    store.close();
    await tmp.cleanup();
  }
});

Deno.test("malformed corpus: a valid root login next to the bad ones raises its alert", async () => {
  const tmp = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    await writeFiles(tmp.path, {
      "logs/mixed.json": JSON.stringify({
        Records: [17, rootLogin({ eventID: "ok-1" }), { eventName: "x" }],
      }),
    });
    const config = resolveConfig({
      sources: { logs: { type: "local", path: `${tmp.path}/logs` } },
      detectors: { root_activity: {} },
      sinks: { file: { type: "jsonl", path: `${tmp.path}/alerts.jsonl` } },
    }, "/");
    const runtime = await Runtime.create(config, { store, geo: staticGeoProvider({}) });
    const summary = await runtime.runOnce();
    await runtime.close();
    assert.equal(summary.events, 1);
    assert.equal(summary.events_failed, 2);
    const alerts = (await Deno.readTextFile(`${tmp.path}/alerts.jsonl`)).trim().split("\n").map((
      l,
    ) => JSON.parse(l));
    assert.deepEqual(alerts.map((a) => a.event_ids), [["ok-1"]]);
  } finally {
    store.close();
    await tmp.cleanup();
  }
});
