import assert from "node:assert/strict";
import { Progress } from "../core/progress.ts";

function clock() {
  let t = 0;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

Deno.test("Progress draws a bar on a terminal once a backfill runs for a while", () => {
  const time = clock();
  const out: string[] = [];
  const progress = new Progress({
    label: "source trail",
    tty: true,
    write: (text) => out.push(text),
    now: time.now,
  });
  progress.listed(4, 4 * 1_048_576);
  progress.done(1_048_576, 500);
  assert.equal(out.length, 0, "nothing is drawn during the first second");
  time.advance(2_000);
  progress.done(1_048_576, 1_500);
  assert.equal(out.length, 1);
  assert.ok(out[0].startsWith("\r\x1b[2Ksource trail ▕"));
  assert.ok(out[0].includes("▕" + "█".repeat(12) + "░".repeat(12) + "▏"), out[0]);
  assert.match(out[0], /2\/4 objects · 2\.0\/4\.0 MB · 1,000 events\/s · ETA 2s/);
  progress.finish();
  assert.equal(out.length, 2);
  assert.ok(out[1].endsWith("\n"));
  progress.finish();
  assert.equal(out.length, 2);
});

Deno.test("Progress stays quiet on a terminal for a short pass", () => {
  const out: string[] = [];
  const progress = new Progress({ tty: true, write: (text) => out.push(text), now: () => 0 });
  progress.listed(3);
  progress.done();
  progress.finish();
  assert.deepEqual(out, []);
});

Deno.test("Progress writes log lines instead of a bar when stderr is not a terminal", async () => {
  const lines: string[] = [];
  const progress = new Progress({
    label: "source trail",
    tty: false,
    log: (line) => lines.push(line),
    intervalMs: 20,
  });
  progress.listed(10, 10 * 1_048_576);
  for (let i = 0; i < 3; i++) progress.done(1_048_576, 100);
  await new Promise((resolve) => setTimeout(resolve, 70));
  progress.finish();
  assert.ok(lines.length >= 1);
  assert.match(lines[0], /^source trail: 3\/10 objects \(30%\), 3\.0\/10\.0 MB, [\d,]+ events\/s/);
  assert.ok(lines.every((l) => !l.includes("\r")));
});
