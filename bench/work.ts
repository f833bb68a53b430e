/**
 * Work, not time: the instructions the floor and `ingest --once` retire over the benchmark's 10
 * files, counted by Linux `perf stat -e instructions:u` (every thread of the process). On a shared
 * VM whose speed drifts by 2× within an hour, wall-clock rates of separate runs cannot show a 5%
 * change; instruction counts repeat within ~3%.
 *
 * Each process runs with V8's `--single-threaded` (added to the `ingest` task's V8 flags), so that
 * garbage collection and compilation are counted once, on the thread that needs them, rather
 * than as helper threads' spinning. Start-up is subtracted: each count is a run over the files
 * minus the same run over one file of one record (module loading, the rule pack, the geo
 * database). With decode workers the count also holds the workers' own start-up.
 *
 * Needs the dataset of `deno task bench` (run it once, `--quick` is enough) and either `perf` on a
 * machine that exposes hardware counters or, where it does not (many VMs: "no PMU driver, software
 * events only"), Valgrind: `cachegrind --cache-sim=no` counts the same instructions by emulation,
 * ~50× slower (about 15 minutes for all counts). `--counter perf|valgrind` picks one; by default
 * perf if it can count instructions here, else Valgrind.
 *
 * Usage: `deno run -A bench/work.ts [--runs N] [--counter perf|valgrind]` (each count: the lowest
 * of N runs).
 * Last line: `work: floor=<G> pipeline=<G> ratio=<R> no_detectors=<G> workers2=<G>` (billions of
 * instructions for the 200,000 events; ratio = floor / pipeline, to set against the bench's; on
 * two cores `workers: 2` can be at most 2 × pipeline / workers2 times as fast as one thread).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { trailFile } from "./dataset.ts";
import { ingestArgs, ROOT, V8_FLAGS } from "./ingest.ts";

const FILES = `${ROOT}/.trailwatch/bench/files`;

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string" }, counter: { type: "string" } },
});
const runs = Math.max(1, Number(values.runs ?? 1) || 1);

const SINGLE_THREADED = V8_FLAGS.length
  ? V8_FLAGS.map((flag) => `${flag},--single-threaded`)
  : ["--v8-flags=--single-threaded"];

/** Runs `command args`, its stdout dropped; throws with the end of its stderr if it fails. */
async function run(command: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(command, {
    args,
    env: { TRAILWATCH_LOG: "warn", NO_COLOR: "1" },
    stdout: "null",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(result.stderr);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited ${result.code}: ${stderr.slice(-1000)}`);
  }
  return stderr;
}

/** Instructions (user space, all threads) of `deno <args>`, counted by perf. */
async function perfCount(args: string[]): Promise<number> {
  const out = await Deno.makeTempFile({ prefix: "trailwatch-perf-" });
  try {
    await run("perf", ["stat", "-x", ",", "-e", "instructions:u", "-o", out, "--", ...args]);
    const line = (await Deno.readTextFile(out)).split("\n").find((l) => l.includes("instructions"));
    const count = Number(line?.split(",")[0]);
    if (!Number.isFinite(count)) throw new Error(`perf counted no instructions: ${line}`);
    return count;
  } finally {
    await Deno.remove(out);
  }
}

/** Instructions (all threads) of `deno <args>`, counted by Valgrind's cachegrind. */
async function valgrindCount(args: string[]): Promise<number> {
  const out = await Deno.makeTempFile({ prefix: "trailwatch-cachegrind-" });
  try {
    const stderr = await run("valgrind", [
      "--tool=cachegrind",
      "--cache-sim=no",
      // V8 writes and rewrites the code it runs.
      "--smc-check=all-non-file",
      `--cachegrind-out-file=${out}`,
      ...args,
    ]);
    const match = stderr.match(/I\s+refs:\s+([\d,]+)/);
    if (!match) throw new Error(`cachegrind counted no instructions: ${stderr.slice(-500)}`);
    return Number(match[1].replaceAll(",", ""));
  } finally {
    await Deno.remove(out);
  }
}

/** Whether perf can count instructions on this machine (not on VMs without a PMU). */
async function perfCounts(): Promise<boolean> {
  try {
    await perfCount(["true"]);
    return true;
  } catch {
    return false;
  }
}

const counter = values.counter ?? (await perfCounts() ? "perf" : "valgrind");
if (counter !== "perf" && counter !== "valgrind") {
  console.error(`--counter must be perf or valgrind, not ${counter}`);
  Deno.exit(2);
}
const count = counter === "perf" ? perfCount : valgrindCount;

/**
 * Instructions of `deno <args>`. An `ingest` run must have read every object and event: a run
 * cut short (a failed commit, say) would look cheap.
 */
async function instructions(args: string[]): Promise<number> {
  const n = await count([Deno.execPath(), ...args]);
  const at = args.indexOf("--summary");
  if (at >= 0) {
    const summary = JSON.parse(await Deno.readTextFile(args[at + 1]));
    const config = JSON.parse(await Deno.readTextFile(args[args.indexOf("--config") + 1]));
    const files = await Array.fromAsync(Deno.readDir(config.sources.bench.path));
    if (summary.objects_read !== files.length || summary.failures.length) {
      throw new Error(`ingest did not read everything: ${JSON.stringify(summary)}`);
    }
  }
  return n;
}

/** The lowest count of `runs` runs of what `args(folder)` gives, over the files minus one record. */
async function work(args: (folder: string) => Promise<string[]>, one: string): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    best = Math.min(
      best,
      await instructions(await args(FILES)) - await instructions(await args(one)),
    );
  }
  return best / 1e9;
}

/** Temporary folders, removed at the end. */
const cleanup: string[] = [];

/** `ingest --once` with `workers` (and `detectors`) in a fresh folder per run. */
function ingest(workers: number, detectors?: Record<string, never>) {
  return async (folder: string) => {
    const dir = await Deno.makeTempDir({ prefix: "trailwatch-work-" });
    cleanup.push(dir);
    return ingestArgs(dir, folder, workers, detectors, SINGLE_THREADED);
  };
}

try {
  await new Deno.Command(counter, { args: ["--version"], stdout: "null", stderr: "null" })
    .output();
} catch {
  console.error(`bench/work.ts: ${counter} was not found (it needs perf or valgrind).`);
  Deno.exit(1);
}
console.log(`counting instructions with ${counter}`);
if (!(await Deno.stat(FILES).then(() => true, () => false))) {
  console.error(`no dataset in ${FILES}: run \`deno task bench --quick\` once first`);
  Deno.exit(1);
}
const one = await Deno.makeTempDir({ prefix: "trailwatch-work-one-" });
cleanup.push(one);
await Deno.writeFile(`${one}/one.json.gz`, trailFile(1, 0));
try {
  const floor = await work(
    (folder) =>
      Promise.resolve(["run", "-R", ...SINGLE_THREADED, `${ROOT}/bench/floor.ts`, folder]),
    one,
  );
  console.log(`floor (gunzip + JSON.parse): ${floor.toFixed(2)} G instructions`);
  const report = (label: string, count: number) =>
    console.log(
      `pipeline (${label}): ${count.toFixed(2)} G instructions (floor / this: ${
        (floor / count).toFixed(2)
      })`,
    );
  const pipeline = await work(ingest(0), one);
  report("one thread", pipeline);
  const bare = await work(ingest(0, {}), one);
  report("one thread, no detectors", bare);
  const workers2 = await work(ingest(2), one);
  // What running in parallel costs: on two cores, workers: 2 can be at most 2 / this times as fast.
  console.log(
    `pipeline (workers: 2, all threads): ${workers2.toFixed(2)} G instructions (${
      (workers2 / pipeline).toFixed(2)
    }× one thread's)`,
  );
  console.log(
    `work: floor=${floor.toFixed(2)} pipeline=${pipeline.toFixed(2)} ratio=${
      (floor / pipeline).toFixed(2)
    } no_detectors=${bare.toFixed(2)} workers2=${workers2.toFixed(2)}`,
  );
} finally {
  for (const dir of cleanup) await Deno.remove(dir, { recursive: true }).catch(() => {});
}
