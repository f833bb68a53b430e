/**
 * The trailwatch command line and Deno Deploy entry point.
 *
 * - `deno task ingest [--once]` reads new CloudTrail logs, runs the detectors, delivers alerts.
 * - `deno task validate` checks the config.
 * - `deno task outbox list|retry` shows and resends dead alerts.
 * - On Deno Deploy (`DENO_DEPLOY` set) the crons are registered at top level and a health
 *   endpoint is served; the config is the `"trailwatch"` block of deno.json.
 *
 * @module
 */

import { parseArgs } from "node:util";
import denoJson from "./deno.json" with { type: "json" };
import { type Config, loadConfig, resolveConfig } from "./core/config.ts";
import { ConfigError, errorMessage } from "./core/errors.ts";
import { log, redact } from "./core/log.ts";
import { formatSummary, LeaseBusyError, Runtime, type Summary } from "./core/pipeline.ts";
import { formatAlertLine } from "./sinks/stdout.ts";

/** Exit codes. */
export const EXIT = { ok: 0, usage: 1, fatal: 2, failures: 3, busy: 4 } as const;

const HELP: Record<string, string> = {
  main: `trailwatch: CloudTrail logs → login anomalies and rule detections → webhooks

Usage: trailwatch <command> [options]

Commands:
  ingest     Read new logs from every source, detect, deliver alerts
  validate   Check the config and print every problem
  outbox     List or resend alerts the sinks did not take

Run 'trailwatch <command> --help' for a command's options.
Exit codes: 0 ok, 1 usage/config error, 2 fatal error, 3 some objects or records failed,
            4 another process holds the state (run skipped).`,
  ingest: `Usage: trailwatch ingest [--config FILE] [--once] [--source NAME] [--state PATH]
                         [--summary FILE] [--dry-run]

Without --once, registers one Deno.cron per source (its "schedule", default every 5 minutes)
plus the delivery cron, runs a first pass at once, and stops cleanly on SIGINT/SIGTERM after
committing the object in hand.

Options:
  --config FILE   JSON or YAML config (default: the "trailwatch" block of deno.json)
  --once          Run every enabled source until nothing new is left, deliver, exit
  --source NAME   Only this source
  --state PATH    State file (overrides state.path; ":memory:" keeps nothing)
  --summary FILE  Write the run summary as JSON (with --once)
  --dry-run       Read and detect, print the alerts, write nothing, deliver nothing
  --help          This help`,
  validate: `Usage: trailwatch validate [--config FILE] [--check-sinks] [--check-sources]

Checks the config and prints every problem with its key path (exit 1 if any).

Options:
  --config FILE     JSON or YAML config (default: the "trailwatch" block of deno.json)
  --check-sinks     Also call every sink's health check
  --check-sources   Also check that every source is reachable
  --help            This help`,
  outbox: `Usage: trailwatch outbox list [--sink NAME] [--pending] [--config FILE] [--state PATH]
       trailwatch outbox retry [--sink NAME] [--config FILE] [--state PATH]

  list    Show dead alerts (the sinks refused them or the attempts ran out); --pending shows
          the alerts still waiting for delivery instead
  retry   Put dead alerts back in the outbox and deliver them now`,
};

/** Loads `--config FILE`, or the `"trailwatch"` block of deno.json. */
export function configFrom(path: string | undefined): Promise<Config> {
  if (path) return loadConfig(path);
  return Promise.resolve(
    resolveConfig((denoJson as Record<string, unknown>).trailwatch, Deno.cwd()),
  );
}

function reportConfigError(error: ConfigError): void {
  console.error(
    `trailwatch: invalid config (${error.problems.length} problem${
      error.problems.length === 1 ? "" : "s"
    }):`,
  );
  for (const p of error.problems) console.error(`  ${p.path}: ${redact(p.message)}`);
}

async function ingest(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string" },
      once: { type: "boolean", default: false },
      source: { type: "string" },
      state: { type: "string" },
      summary: { type: "string" },
      "dry-run": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(HELP.ingest);
    return EXIT.ok;
  }
  const config = await configFrom(values.config);
  if (values.source && !config.sources.some((s) => s.name === values.source)) {
    throw new ConfigError([{
      path: "--source",
      message: `no enabled source named "${values.source}" (sources: ${
        config.sources.map((s) => s.name).join(", ")
      })`,
    }]);
  }
  const dryRun = values["dry-run"];
  const encoder = new TextEncoder();
  const runtime = await Runtime.create(config, {
    statePath: values.state,
    dryRun,
    warmUp: true,
    onAlert: dryRun
      ? (alert) => Deno.stdout.writeSync(encoder.encode(`(dry run) ${formatAlertLine(alert)}\n`))
      : undefined,
  });
  const controller = new AbortController();
  const stop = (signal: Deno.Signal) => {
    if (controller.signal.aborted) return;
    log.info(`${signal}: finishing the object in hand, committing, then exiting`);
    controller.abort(new Error(signal));
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((s) => [s, () => stop(s)] as const);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  try {
    // The geo database (~110 MB, read in ~0.2 s on this thread) loads, and the decode workers
    // (if any) start, before the first pass rather than in the middle of it: a pass that starts
    // before its workers decodes its first object on this thread. A failure surfaces in the
    // pass that needs the thing.
    await runtime.warmUp().catch(() => {});
    if (values.once) {
      let summary: Summary;
      try {
        summary = await runtime.runOnce({ source: values.source, signal: controller.signal });
      } catch (error) {
        if (error instanceof LeaseBusyError) {
          log.warn(error.message);
          return EXIT.busy;
        }
        throw error;
      }
      log.summary(formatSummary("trailwatch", summary));
      if (values.summary) {
        await Deno.writeTextFile(values.summary, JSON.stringify(summary, null, 2) + "\n");
      }
      return summary.failures.length > 0 ? EXIT.failures : EXIT.ok;
    }
    await serve(runtime, config, values.source, controller.signal);
    return EXIT.ok;
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    await runtime.close();
  }
}

/** Long-running mode: one cron per source + the delivery cron; resolves when `signal` aborts. */
async function serve(
  runtime: Runtime,
  config: Config,
  only: string | undefined,
  signal: AbortSignal,
): Promise<void> {
  const passes = registerCrons(runtime, config, only, signal);
  // First pass at start, then the crons take over.
  await Promise.all(passes.map((run) => run()));
  if (!signal.aborted) {
    log.info(
      `running; ${passes.length} source(s) on their schedules, delivery ${config.delivery.schedule}. Ctrl-C stops.`,
    );
    await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
  }
}

/**
 * Registers `Deno.cron` jobs: one per source (never two passes of one source at once) and one for
 * delivery. Returns the per-source pass functions.
 */
export function registerCrons(
  runtime: Runtime,
  config: Config,
  only: string | undefined,
  signal?: AbortSignal,
  onSummary?: (source: string, summary: Summary) => void,
): (() => Promise<void>)[] {
  const running = new Set<string>();
  const passes: (() => Promise<void>)[] = [];
  for (const source of config.sources) {
    if (only && source.name !== only) continue;
    const run = async () => {
      if (running.has(source.name)) {
        log.info(`source ${source.name}: previous pass still running; skipping this tick`);
        return;
      }
      running.add(source.name);
      try {
        const summary = await runtime.pass(source.name, { signal });
        onSummary?.(source.name, summary);
        // Deliver what the pass raised now; the delivery cron retries what is left.
        if (!signal?.aborted) await runtime.deliver({ signal });
        if (summary.failures.some((f) => f.object === `source ${source.name}`)) {
          throw new Error(`source ${source.name} failed; the cron will retry`);
        }
      } catch (error) {
        if (error instanceof LeaseBusyError) log.warn(error.message);
        else throw error;
      } finally {
        running.delete(source.name);
      }
    };
    Deno.cron(`trailwatch source ${source.name}`, source.schedule, {
      backoffSchedule: source.backoffSchedule,
      signal,
    }, run);
    passes.push(run);
  }
  Deno.cron("trailwatch delivery", config.delivery.schedule, { signal }, async () => {
    try {
      await runtime.deliver({ signal });
    } catch (error) {
      if (!(error instanceof LeaseBusyError)) throw error;
    }
  });
  return passes;
}

async function validate(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string" },
      "check-sinks": { type: "boolean", default: false },
      "check-sources": { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(HELP.validate);
    return EXIT.ok;
  }
  const config = await configFrom(values.config);
  for (const note of config.notes) console.log(`note: ${note}`);
  console.log(
    `config OK: sources ${
      config.sources.map((s) => `${s.name} (${s.type})`).join(", ") || "none"
    }; ` +
      `detectors ${config.detectors.map((d) => d.name).join(", ") || "none"}; ` +
      `sinks ${config.sinks.map((s) => `${s.name} (${s.type})`).join(", ") || "none"}`,
  );
  if (!values["check-sinks"] && !values["check-sources"]) return EXIT.ok;
  const runtime = await Runtime.create(config, { statePath: ":memory:" });
  let failed = 0;
  try {
    if (values["check-sources"]) {
      for (const { source } of runtime.sources.values()) {
        try {
          await source.preflight?.();
          console.log(`source ${source.name}: ok`);
        } catch (error) {
          failed++;
          console.log(`source ${source.name}: FAILED: ${redact(errorMessage(error))}`);
        }
      }
    }
    if (values["check-sinks"]) {
      for (const { sink } of runtime.outbox.routes) {
        try {
          console.log(`sink ${sink.name}: ok (${redact(await sink.healthcheck())})`);
        } catch (error) {
          failed++;
          console.log(`sink ${sink.name}: FAILED: ${redact(errorMessage(error))}`);
        }
      }
    }
  } finally {
    await runtime.close();
  }
  return failed ? EXIT.failures : EXIT.ok;
}

async function outbox(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      config: { type: "string" },
      state: { type: "string" },
      sink: { type: "string" },
      pending: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: true,
  });
  const action = positionals[0];
  if (values.help || !action) {
    console.log(HELP.outbox);
    return values.help ? EXIT.ok : EXIT.usage;
  }
  if (!["list", "retry"].includes(action) || positionals.length > 1) {
    console.error(`trailwatch outbox: unknown action "${positionals.join(" ")}"\n\n${HELP.outbox}`);
    return EXIT.usage;
  }
  const config = await configFrom(values.config);
  if (values.sink && !config.sinks.some((s) => s.name === values.sink)) {
    throw new ConfigError([{ path: "--sink", message: `no enabled sink named "${values.sink}"` }]);
  }
  const runtime = await Runtime.create(config, { statePath: values.state });
  try {
    if (action === "list") {
      if (values.pending) {
        const pending = await runtime.outbox.listPending(values.sink);
        for (const { sink, entry } of pending) {
          console.log(
            `${sink}\t${entry.alert.id}\tattempts=${entry.attempts}\t${entry.alert.severity}\t${entry.alert.title}` +
              (entry.error ? `\tlast error: ${entry.error}` : ""),
          );
        }
        console.log(`${pending.length} pending alert(s)`);
      } else {
        const dead = await runtime.outbox.listDead(values.sink);
        for (const { sink, entry } of dead) {
          console.log(
            `${sink}\t${entry.alert.id}\t${entry.failed_at}\tattempts=${entry.attempts}\t${entry.alert.title}\t${entry.error}`,
          );
        }
        console.log(`${dead.length} dead alert(s)`);
      }
      return EXIT.ok;
    }
    const moved = await runtime.outbox.retryDead(values.sink);
    const report = await runtime.deliver({ sink: values.sink });
    console.log(
      `${moved} dead alert(s) put back; delivered ${report.delivered}, retrying ${report.retried}, dead ${report.dead}`,
    );
    return report.dead > 0 ? EXIT.failures : EXIT.ok;
  } catch (error) {
    if (error instanceof LeaseBusyError) {
      log.warn(error.message);
      return EXIT.busy;
    }
    throw error;
  } finally {
    await runtime.close();
  }
}

/** Runs the CLI with `args`; resolves with the exit code. */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "ingest":
        return await ingest(rest);
      case "validate":
        return await validate(rest);
      case "outbox":
        return await outbox(rest);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        console.log(HELP.main);
        return command === undefined ? EXIT.usage : EXIT.ok;
      default:
        console.error(`trailwatch: unknown command "${command}"\n\n${HELP.main}`);
        return EXIT.usage;
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      reportConfigError(error);
      return EXIT.usage;
    }
    if (
      error instanceof TypeError && (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")
    ) {
      console.error(`trailwatch ${command}: ${error.message}\n\n${HELP[command] ?? HELP.main}`);
      return EXIT.usage;
    }
    log.error(`fatal: ${redact(errorMessage(error))}`);
    return EXIT.fatal;
  }
}

/** Deno Deploy: crons at top level, a health endpoint, KV from `Deno.openKv()`. */
async function deploy(): Promise<void> {
  const config = await configFrom(undefined);
  // The platform KV on Deno Deploy; TRAILWATCH_STATE points elsewhere (a local trial of this mode).
  const runtime = await Runtime.create(config, {
    statePath: Deno.env.get("TRAILWATCH_STATE") ?? "",
  });
  const last: Record<string, Summary & { at: string }> = {};
  registerCrons(runtime, config, undefined, undefined, (name, summary) => {
    last[name] = { ...summary, at: new Date().toISOString() };
  });
  const port = Number(Deno.env.get("PORT") ?? 8000);
  Deno.serve({ port, onListen: () => log.info(`health endpoint on port ${port}`) }, (request) => {
    const path = new URL(request.url).pathname;
    if (path !== "/" && path !== "/health") return new Response("not found\n", { status: 404 });
    return Response.json({ ok: true, sources: config.sources.map((s) => s.name), last });
  });
}

function onDeploy(): boolean {
  try {
    return Deno.env.get("DENO_DEPLOY") !== undefined ||
      Deno.env.get("DENO_DEPLOYMENT_ID") !== undefined;
  } catch {
    return false;
  }
}

if (onDeploy()) {
  await deploy();
} else if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
