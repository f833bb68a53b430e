/**
 * Helpers of the reliability tests (crash-restart, fault injection, overlapping runs, secrets):
 * a CLI child that can be killed and whose output is collected, a read-only view of a state file
 * opened after its process ended, and the HMAC check of a webhook request.
 *
 * @module
 */

import type { LeaseHolder } from "../../core/state.ts";
import type { Alert } from "../../core/types.ts";
import type { PendingEntry } from "../../sinks/outbox.ts";
import { ROOT } from "./cli.ts";
import type { RecordedRequest } from "./receiver.ts";

/** How a CLI child ended. */
export interface RunResult {
  /** Exit code (137 after SIGKILL). */
  code: number;
  /** The signal that ended it, if any. */
  signal: Deno.Signal | null;
  /** Standard output. */
  stdout: string;
  /** Standard error (the log). */
  stderr: string;
  /** Whether it was killed for running longer than its `timeoutMs`. */
  timedOut: boolean;
}

/** A running CLI child. */
export interface Run {
  /** Its process id. */
  pid: number;
  /** Sends SIGKILL (no-op once it ended). */
  kill(): void;
  /** Whether it ended. */
  readonly ended: boolean;
  /** Resolves when it ended, with its output. */
  result: Promise<RunResult>;
}

/** Options of {@link startRun}. */
export interface RunOptions {
  /** Called with every line the child writes to stderr, as it comes. */
  onStderrLine?: (line: string) => void;
  /** SIGKILL after this long, so a hung child cannot hang the test (default 120 s). */
  timeoutMs?: number;
}

async function collect(
  stream: ReadableStream<Uint8Array>,
  onLine?: (line: string) => void,
): Promise<string> {
  let text = "";
  let partial = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    if (!onLine) continue;
    const lines = (partial + chunk).split("\n");
    partial = lines.pop()!;
    for (const line of lines) onLine(line);
  }
  if (onLine && partial) onLine(partial);
  return text;
}

/** Starts `main.ts <args>` with its output collected; `env` adds to the environment. */
export function startRun(
  args: string[],
  env: Record<string, string> = {},
  options: RunOptions = {},
): Run {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/main.ts`, ...args],
    cwd: ROOT,
    // Info level: the tests wait for lines such as "waiting for the state lease" (the test task
    // runs with TRAILWATCH_LOG=warn, which children would inherit).
    env: { NO_COLOR: "1", TRAILWATCH_LOG: "info", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let ended = false;
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, options.timeoutMs ?? 120_000);
  const result = Promise.all([
    child.status,
    collect(child.stdout),
    collect(child.stderr, options.onStderrLine),
  ]).then(([status, stdout, stderr]) => {
    ended = true;
    clearTimeout(watchdog);
    return { code: status.code, signal: status.signal, stdout, stderr, timedOut };
  });
  return {
    pid: child.pid,
    kill() {
      if (ended) return;
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    },
    get ended() {
      return ended;
    },
    result,
  };
}

/** Runs `main.ts <args>` to its end. */
export function runToEnd(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return startRun(args, env).result;
}

/** What a state file holds, read while no process uses it. */
export interface StateView {
  /** `local` source checkpoints by relative path: `["src", source, "file", rel]`. */
  files: Map<string, { size: number; mtime: number; failure?: string }>;
  /** Records committed of partly processed objects, by object id: `["progress", source, id]`. */
  progress: Map<string, { records: number; size?: number }>;
  /** Alert ids ever put in the outbox (`["alert", id]`). */
  enqueued: Set<string>;
  /** Alert ids pending per sink (`["outbox", sink, seq, id]`), with their entries. */
  pending: Map<string, Map<string, PendingEntry>>;
  /** Dead alert ids per sink. */
  dead: Map<string, Set<string>>;
  /** The lease entry, lapsed or not. */
  lease: LeaseHolder | undefined;
}

/** Reads a state file with `Deno.openKv` (call it only when no process has it open). */
export async function readState(path: string, source: string): Promise<StateView> {
  const kv = await Deno.openKv(path);
  try {
    const view: StateView = {
      files: new Map(),
      progress: new Map(),
      enqueued: new Set(),
      pending: new Map(),
      dead: new Map(),
      lease: undefined,
    };
    for await (
      const e of kv.list<{ size: number; mtime: number }>({
        prefix: ["src", source, "file"],
      })
    ) {
      view.files.set(e.key[3] as string, e.value);
    }
    for await (const e of kv.list<{ records: number }>({ prefix: ["progress", source] })) {
      view.progress.set(e.key[2] as string, e.value);
    }
    for await (const e of kv.list({ prefix: ["alert"] })) view.enqueued.add(e.key[1] as string);
    for await (const e of kv.list<PendingEntry>({ prefix: ["outbox"] })) {
      const sink = e.key[1] as string;
      if (!view.pending.has(sink)) view.pending.set(sink, new Map());
      view.pending.get(sink)!.set(e.key[3] as string, e.value);
    }
    for await (const e of kv.list({ prefix: ["dead"] })) {
      const sink = e.key[1] as string;
      if (!view.dead.has(sink)) view.dead.set(sink, new Set());
      view.dead.get(sink)!.add(e.key[2] as string);
    }
    view.lease = (await kv.get<LeaseHolder>(["lease"])).value ?? undefined;
    return view;
  } finally {
    kv.close();
  }
}

/** Alert ids pending for any sink. */
export function pendingIds(view: StateView): Set<string> {
  const ids = new Set<string>();
  for (const entries of view.pending.values()) for (const id of entries.keys()) ids.add(id);
  return ids;
}

/**
 * Whether a webhook request carries a valid `X-Trailwatch-Signature` for `secret`
 * (HMAC-SHA256 of `<timestamp>.<body>`).
 */
export async function signatureValid(secret: string, request: RecordedRequest): Promise<boolean> {
  const timestamp = request.headers["x-trailwatch-timestamp"];
  const signature = request.headers["x-trailwatch-signature"];
  if (!timestamp || !signature) return false;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["verify"],
  );
  const hex = signature.replace(/^sha256=/, "");
  const bytes = new Uint8Array(hex.match(/../g)?.map((h) => parseInt(h, 16)) ?? []);
  return await crypto.subtle.verify(
    "HMAC",
    key,
    bytes,
    new TextEncoder().encode(`${timestamp}.${request.body}`),
  );
}

/** The alert a webhook request carried (one alert per request: the sink is not grouped). */
export function alertOf(request: RecordedRequest): Alert {
  return JSON.parse(request.body) as Alert;
}

/** Waits `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
