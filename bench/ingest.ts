/**
 * The `ingest --once` child process the benchmarks run: its config (local source over a folder,
 * a jsonl sink, a fresh KV file, every default detector unless told otherwise) and its command
 * line, with the V8 flags of the `ingest` task so that the benchmarks run what users run.
 *
 * @module
 */

/** The repository root. */
export const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** The V8 flags of the `ingest` task (deno.json). */
export const V8_FLAGS: string[] =
  (JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)).tasks.ingest as string)
    .split(/\s+/).filter((arg) => arg.startsWith("--v8-flags="));

/**
 * Writes the config of one run into `work` (a fresh folder) and returns the `deno` arguments of
 * `ingest --once` with it; the summary lands in `work/summary.json`. `detectors: {}` runs none.
 */
export async function ingestArgs(
  work: string,
  path: string,
  workers: number,
  detectors?: Record<string, never>,
  v8Flags: string[] = V8_FLAGS,
): Promise<string[]> {
  const config = {
    sources: { bench: { type: "local", path, maxObjectBytes: 4 * 1024 ** 3 } },
    sinks: { file: { type: "jsonl", path: `${work}/alerts.jsonl` } },
    state: { path: `${work}/state.kv` },
    pipeline: { workers },
    ...(detectors ? { detectors } : {}),
  };
  await Deno.writeTextFile(`${work}/config.json`, JSON.stringify(config));
  return [
    "run",
    "-A",
    ...v8Flags,
    `${ROOT}/main.ts`,
    "ingest",
    "--once",
    "--config",
    `${work}/config.json`,
    "--summary",
    `${work}/summary.json`,
  ];
}
