import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { resolveConfig } from "../core/config.ts";
import { Runtime } from "../core/pipeline.ts";
import { StateStore } from "../core/state.ts";
import type { Alert } from "../core/types.ts";
import { staticGeoProvider } from "../mapping/geo.ts";
import { ctRecord, rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";

async function run(dir: string, store: StateStore) {
  const config = resolveConfig({
    sources: { logs: { type: "local", path: dir } },
    detectors: { root_activity: {} },
    sinks: { out: { type: "jsonl", path: `${dir}.alerts.jsonl` } },
  }, "/");
  const alerts: Alert[] = [];
  const runtime = await Runtime.create(config, {
    store,
    geo: staticGeoProvider({}),
    onAlert: (a) => alerts.push(a),
  });
  try {
    const summary = await runtime.runOnce();
    return { summary, alerts };
  } finally {
    await runtime.close();
  }
}

Deno.test("local source reads every input shape and skips digests and other files", async () => {
  const dir = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    const ids: string[] = [];
    const rec = () => {
      const r = rootLogin();
      ids.push(r.eventID as string);
      return r;
    };
    const jsonl = (records: unknown[]) => records.map((r) => JSON.stringify(r)).join("\n") + "\n";
    await writeFiles(dir.path, {
      "a/records.json.gz": trailFile([rec(), rec()]),
      "a/records-plain.json": trailFile([rec()], false),
      "b/array.json": JSON.stringify([rec(), rec()]),
      "b/lines.jsonl": jsonl([rec(), rec(), rec()]),
      "b/lines.jsonl.gz": new Uint8Array(gzipSync(new TextEncoder().encode(jsonl([rec()])))),
      "c/single.json": JSON.stringify(rec()),
      "c/gzip-named-json.json": trailFile([rec()]),
      "AWSLogs/1/CloudTrail-Digest/us-east-1/digest.json.gz": trailFile([rootLogin()]),
      "notes.txt": JSON.stringify({ Records: [rootLogin()] }),
    });
    const { summary, alerts } = await run(dir.path, store);
    assert.deepEqual(summary.failures, []);
    assert.equal(summary.objects_read, 7);
    assert.equal(summary.events, ids.length);
    assert.deepEqual(alerts.flatMap((a) => a.event_ids).sort(), ids.sort());
  } finally {
    store.close();
    await dir.cleanup();
    await Deno.remove(`${dir.path}.alerts.jsonl`).catch(() => undefined);
  }
});

Deno.test("local source remembers processed files: a second run reads nothing", async () => {
  const dir = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    await writeFiles(dir.path, { "one.json.gz": trailFile([rootLogin(), ctRecord()]) });
    const first = await run(dir.path, store);
    assert.equal(first.summary.objects_read, 1);
    assert.equal(first.summary.alerts, 1);
    const second = await run(dir.path, store);
    assert.equal(second.summary.objects_read, 0);
    assert.equal(second.summary.events, 0);
    assert.equal(second.summary.alerts, 0);
    // A new file is read; a changed file is read again but its known events are duplicates.
    await writeFiles(dir.path, { "two.json": trailFile([rootLogin()], false) });
    const original = await Deno.readFile(`${dir.path}/one.json.gz`);
    await Deno.writeFile(`${dir.path}/one.json.gz`, new Uint8Array([...original]));
    await Deno.utime(`${dir.path}/one.json.gz`, new Date(), new Date(Date.now() + 5000));
    const third = await run(dir.path, store);
    assert.equal(third.summary.objects_read, 2);
    assert.equal(third.summary.events, 1);
    assert.equal(third.summary.duplicates_skipped, 2);
    assert.equal(third.summary.alerts, 1);
  } finally {
    store.close();
    await dir.cleanup();
    await Deno.remove(`${dir.path}.alerts.jsonl`).catch(() => undefined);
  }
});

Deno.test("local source reads a single file path", async () => {
  const dir = await tempDir();
  const store = await StateStore.open(":memory:");
  try {
    await writeFiles(dir.path, { "only.log": trailFile([rootLogin()]) });
    const { summary } = await run(`${dir.path}/only.log`, store);
    assert.equal(summary.objects_read, 1);
    assert.equal(summary.alerts, 1);
  } finally {
    store.close();
    await dir.cleanup();
    await Deno.remove(`${dir.path}/only.log.alerts.jsonl`).catch(() => undefined);
  }
});
