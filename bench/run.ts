/**
 * `deno task bench`: the end-to-end benchmark.
 *
 * 1. Generates (once, cached under .trailwatch/bench/) a deterministic dataset: 10 `.json.gz`
 *    files × 20,000 records (~1.5 KB each, ~5% ConsoleLogin), one object of ≥ 1 GB decompressed
 *    and one of ~100 MB.
 * 2. floor: `node:zlib` gunzip + `JSON.parse` of the 10 files, in this process; and, for the
 *    record, the same split over two Workers (every other file each): what two threads give this
 *    machine for work that needs no coordination, the ceiling of `workers2`.
 * 3. pipeline: `main.ts ingest --once` over the 10 files (local source, every default detector,
 *    the built-in rule pack, a jsonl sink, a fresh KV file), in one thread (`pipeline.workers: 0`).
 * 4. workers2: the same with `pipeline.workers: 2` (and, for the record, `workers: 1`, and one
 *    thread with no detectors: what decoding, normalizing, dedupe and the commits cost alone).
 *    Each ingest's CPU time (all its threads) is read from /proc as it runs: one thread already
 *    keeps part of the second CPU busy, which with step 2's ceiling bounds what `workers: 2` can
 *    gain here (README, Performance).
 * 5. Peak RSS (VmHWM) of `ingest --once` on the big object and on the 100 MB object.
 *
 * An ingest's rate is its events over the pass (the summary's `duration_s`): start-up (modules, the
 * rule pack, the geo database, which `ingest` loads before its first pass) is not in it, as the
 * floor's module loading is not in the floor; each run also prints its whole process time.
 *
 * Steps 2–4 run in rounds (floor, pipeline, workers2, back to back), so that each round's ratios
 * compare runs made at about the same machine speed: on a shared VM the speed drifts by up to 2×
 * within minutes. The last line gives the round whose pipeline/floor ratio is the median.
 *
 * Last line: `bench: floor=<N> ev/s pipeline=<N> ev/s ratio=<R> workers2=<N> ev/s rss_big=<N> MB rss_small=<N> MB`.
 *
 * Flags: `--quick` (skip the big object), `--runs N` (rounds, default 5).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { trailFile, writeBigObject } from "./dataset.ts";
import { FloorPair, floorPass } from "./floor.ts";
import { ingestArgs, ROOT } from "./ingest.ts";
import { watchProcess } from "./rss.ts";

const CACHE = `${ROOT}/.trailwatch/bench`;
const FILES = 10;
const PER_FILE = 20_000;
const BIG_BYTES = 1_100_000_000;
const SMALL_BYTES = 100_000_000;

const { values } = parseArgs({
  args: Deno.args,
  options: { quick: { type: "boolean", default: false }, runs: { type: "string", default: "5" } },
});
const runs = Math.max(1, Number(values.runs) || 5);

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function prepare(): Promise<void> {
  await Deno.mkdir(`${CACHE}/files`, { recursive: true });
  for (let i = 0; i < FILES; i++) {
    const path = `${CACHE}/files/111122223333_CloudTrail_us-east-1_20261110T${
      String(i).padStart(2, "0")
    }00Z_bench.json.gz`;
    if (!(await exists(path))) await Deno.writeFile(path, trailFile(PER_FILE, i * PER_FILE));
  }
  for (
    const [name, bytes, offset] of [["small", SMALL_BYTES, 5_000_000], [
      "big",
      BIG_BYTES,
      10_000_000,
    ]] as const
  ) {
    if (name === "big" && values.quick) continue;
    const dir = `${CACHE}/${name}`;
    await Deno.mkdir(dir, { recursive: true });
    const path = `${dir}/object.json.gz`;
    if (!(await exists(path))) {
      const started = performance.now();
      const count = await writeBigObject(`${path}.tmp`, bytes, offset);
      await Deno.rename(`${path}.tmp`, path);
      console.log(
        `generated ${name} object: ${count} records in ${
          ((performance.now() - started) / 1000).toFixed(1)
        } s`,
      );
    }
  }
}

/** One timed floor pass over the 10 files, in events/s. */
function floor(): number {
  const started = performance.now();
  const events = floorPass(`${CACHE}/files`);
  return events / ((performance.now() - started) / 1000);
}

const floorPair = new FloorPair();

/** One timed floor pass over the 10 files split over two workers, in events/s. */
async function floorOnTwo(): Promise<number> {
  const started = performance.now();
  const events = await floorPair.pass(`${CACHE}/files`);
  return events / ((performance.now() - started) / 1000);
}

interface IngestResult {
  eventsPerSecond: number;
  peakRssMb: number;
  events: number;
  /** The pass (the summary's duration). */
  seconds: number;
  /** The whole child process, start-up included. */
  processSeconds: number;
  /** CPU time of all the child's threads (V8's compiler and GC threads, SQLite's writer). */
  cpuSeconds: number;
}

/** Runs `ingest --once` over `path`; `detectors: {}` runs none (default: every default one). */
async function ingest(
  path: string,
  workers: number,
  detectors?: Record<string, never>,
): Promise<IngestResult> {
  const work = await Deno.makeTempDir({ prefix: "trailwatch-bench-" });
  try {
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args: await ingestArgs(work, path, workers, detectors),
      env: { TRAILWATCH_LOG: "warn", NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stopWatching = watchProcess(child.pid);
    const output = await child.output();
    const processSeconds = (performance.now() - started) / 1000;
    const use = stopWatching();
    if (output.code !== 0) {
      throw new Error(
        `ingest exited ${output.code}: ${new TextDecoder().decode(output.stderr).slice(-2000)}`,
      );
    }
    const summary = JSON.parse(await Deno.readTextFile(`${work}/summary.json`));
    return {
      eventsPerSecond: summary.events / summary.duration_s,
      peakRssMb: use.peakRssMb,
      events: summary.events,
      seconds: summary.duration_s,
      processSeconds,
      cpuSeconds: use.cpuSeconds,
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

await prepare();
floor(); // warm-up: the first pass also grows the heap
await floorOnTwo();
function report(label: string, result: IngestResult): void {
  console.log(
    `pipeline (${label}): ${
      Math.round(result.eventsPerSecond)
    } events/s (${result.events} events in ${result.seconds.toFixed(2)} s; process ${
      result.processSeconds.toFixed(2)
    } s, ${result.cpuSeconds.toFixed(2)} s of CPU; peak RSS ${result.peakRssMb.toFixed(0)} MB)`,
  );
}
const rounds: {
  floor: number;
  floorTwo: number;
  pipeline: IngestResult;
  workers2: IngestResult;
}[] = [];
for (let round = 1; round <= runs; round++) {
  const floorRate = floor();
  const floorTwo = await floorOnTwo();
  const pipeline = await ingest(`${CACHE}/files`, 0);
  const workers2 = await ingest(`${CACHE}/files`, 2);
  rounds.push({ floor: floorRate, floorTwo, pipeline, workers2 });
  console.log(
    `round ${round}: floor ${Math.round(floorRate)} events/s (on two workers ${
      (floorTwo / floorRate).toFixed(2)
    }×), pipeline ${Math.round(pipeline.eventsPerSecond)} (ratio ${
      (pipeline.eventsPerSecond / floorRate).toFixed(2)
    }), workers: 2 ${Math.round(workers2.eventsPerSecond)} (${
      (workers2.eventsPerSecond / pipeline.eventsPerSecond).toFixed(2)
    }× one thread)`,
  );
}
floorPair.close();
const twoThreads = rounds.map((r) => r.floorTwo / r.floor).sort((a, b) => a - b);
rounds.sort((a, b) => a.pipeline.eventsPerSecond / a.floor - b.pipeline.eventsPerSecond / b.floor);
const { floor: floorRate, floorTwo, pipeline, workers2 } = rounds[(rounds.length - 1) >> 1];
console.log(
  `floor (gunzip + JSON.parse, ${FILES * PER_FILE} records, median round): ${
    Math.round(floorRate)
  } events/s`,
);
console.log(
  `floor on two workers (same round): ${Math.round(floorTwo)} events/s, ${
    (floorTwo / floorRate).toFixed(2)
  }× the floor (${twoThreads.map((x) => x.toFixed(2)).join(", ")} by round): what two threads ` +
    `give this machine for work that needs no coordination`,
);
report("one thread", pipeline);
report("workers: 2", workers2);
// What one thread already takes of the second CPU: `workers: 2` has at least its CPU time to spend.
const busy = pipeline.cpuSeconds / pipeline.processSeconds;
if (busy > 0) {
  console.log(
    `one thread keeps ${busy.toFixed(2)} CPUs busy (its CPU time over its wall time: V8's ` +
      `compiler and GC threads and SQLite's writer run beside it)`,
  );
}
// For the record: one decode worker beside the main thread, and one thread without any detector.
report("workers: 1", await ingest(`${CACHE}/files`, 1));
report("one thread, no detectors", await ingest(`${CACHE}/files`, 0, {}));
const small = await ingest(`${CACHE}/small`, 0);
console.log(`100 MB object: ${small.events} events, peak RSS ${small.peakRssMb.toFixed(0)} MB`);
let big: IngestResult | undefined;
if (!values.quick) {
  big = await ingest(`${CACHE}/big`, 0);
  console.log(`1 GB object: ${big.events} events, peak RSS ${big.peakRssMb.toFixed(0)} MB`);
}
console.log(
  `bench: floor=${Math.round(floorRate)} ev/s pipeline=${
    Math.round(pipeline.eventsPerSecond)
  } ev/s ratio=${(pipeline.eventsPerSecond / floorRate).toFixed(2)} workers2=${
    Math.round(workers2.eventsPerSecond)
  } ev/s rss_big=${big ? Math.round(big.peakRssMb) : "skipped"} MB rss_small=${
    Math.round(small.peakRssMb)
  } MB`,
);
