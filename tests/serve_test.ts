import assert from "node:assert/strict";
import { ROOT, spawnCli } from "./helpers/cli.ts";
import { rootLogin, tempDir, trailFile, writeFiles } from "./helpers/records.ts";

/** Reads a child's stderr until `pattern` appears (or the stream ends). */
async function waitFor(
  child: Deno.ChildProcess,
  pattern: RegExp,
  seen: string[],
): Promise<boolean> {
  const decoder = new TextDecoder();
  const reader = child.stderr.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return false;
      seen.push(decoder.decode(value));
      if (pattern.test(seen.join(""))) return true;
    }
  } finally {
    reader.releaseLock();
  }
}

Deno.test("ingest without --once runs a first pass at start, keeps running, and stops cleanly on SIGTERM", async () => {
  const dir = await tempDir();
  try {
    await writeFiles(dir.path, { "logs/a.json.gz": trailFile([rootLogin(), rootLogin()]) });
    await Deno.writeTextFile(
      `${dir.path}/config.json`,
      JSON.stringify({
        sources: { logs: { type: "local", path: "logs", schedule: "*/30 * * * *" } },
        detectors: { root_activity: {} },
        sinks: { file: { type: "jsonl", path: "alerts.jsonl" } },
        state: { path: "state.kv" },
      }),
    );
    const child = spawnCli(["ingest", "--config", `${dir.path}/config.json`], {
      TRAILWATCH_LOG: "info",
    });
    const seen: string[] = [];
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    try {
      assert.ok(
        await waitFor(child, /running; 1 source\(s\) on their schedules/, seen),
        seen.join(""),
      );
      // The first pass read the file and delivered its alerts before "running".
      const alerts = (await Deno.readTextFile(`${dir.path}/alerts.jsonl`)).trim().split("\n");
      assert.equal(alerts.length, 2);
      assert.match(seen.join(""), /source logs: 1 objects read, 0 failed; 2 events/);
      child.kill("SIGTERM");
      const [status] = await Promise.all([child.status, waitFor(child, /$^/, seen)]);
      assert.equal(status.code, 0, seen.join(""));
      assert.match(
        seen.join(""),
        /SIGTERM: finishing the object in hand, committing, then exiting/,
      );
    } finally {
      clearTimeout(timer);
      await child.stdout.cancel().catch(() => {});
    }
  } finally {
    await dir.cleanup();
  }
});

Deno.test("on Deno Deploy (DENO_DEPLOY set) main.ts registers the crons and serves a health endpoint", async () => {
  const dir = await tempDir();
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/main.ts`],
    cwd: ROOT,
    env: {
      DENO_DEPLOY: "1",
      PORT: String(port),
      TRAILWATCH_STATE: `${dir.path}/state.kv`,
      TRAILWATCH_LOG: "info",
      NO_COLOR: "1",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const seen: string[] = [];
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    assert.ok(await waitFor(child, /health endpoint on port/, seen), seen.join(""));
    const response = await fetch(`http://127.0.0.1:${port}/health`);
    const body = await response.json();
    assert.equal(response.status, 200);
    assert.equal(body.ok, true);
    assert.deepEqual(body.sources, ["demo"]);
    assert.equal(
      await fetch(`http://127.0.0.1:${port}/nope`).then(async (
        r,
      ) => (await r.body?.cancel(), r.status)),
      404,
    );
  } finally {
    clearTimeout(timer);
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    await child.stderr.cancel().catch(() => {});
    await dir.cleanup();
  }
});
