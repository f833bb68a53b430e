/**
 * Progress of a pass: objects listed and done, megabytes, events per second. On a terminal a
 * one-line bar redrawn in place (only once a pass has run for a second, so short passes print
 * nothing but their summary); otherwise a log line every few seconds.
 *
 * @example Feeding a progress display
 * ```ts
 * import { Progress } from "./progress.ts";
 * const progress = new Progress({ label: "source trail" });
 * progress.listed(2, 4_096);
 * progress.done(2_048, 120);
 * progress.done(2_048, 80);
 * progress.finish();
 * ```
 *
 * @module
 */

import { log } from "./log.ts";

/** Options of {@link Progress}. */
export interface ProgressOptions {
  /** What is progressing, e.g. `source trail`. */
  label?: string;
  /** Draw a bar (default: whether stderr is a terminal). */
  tty?: boolean;
  /** Writes bar text (default: stderr). */
  write?: (text: string) => void;
  /** Writes a log line (default: `log.info`). */
  log?: (line: string) => void;
  /** Milliseconds between log lines (default 5000). */
  intervalMs?: number;
  /** Milliseconds before the bar first shows (default 1000). */
  delayMs?: number;
  /** Clock (ms). */
  now?: () => number;
}

/** The counters of a {@link Progress}. */
export interface ProgressSnapshot {
  /** Objects found to process. */
  listed: number;
  /** Their bytes (as stored). */
  listedBytes: number;
  /** Objects processed. */
  done: number;
  /** Their bytes. */
  doneBytes: number;
  /** Events processed. */
  events: number;
  /** Milliseconds since the first update. */
  elapsedMs: number;
}

const BAR_WIDTH = 24;
const REDRAW_MS = 100;
const encoder = new TextEncoder();

function isTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

function number(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function megabytes(bytes: number): string {
  return (bytes / 1_048_576).toFixed(1);
}

function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/**
 * Progress of one pass (see the module example). `listed` and `done` may be called in any
 * order; `finish` prints the last state (if anything was shown) and stops the timer.
 */
export class Progress {
  readonly #label: string;
  readonly #tty: boolean;
  readonly #write: (text: string) => void;
  readonly #log: (line: string) => void;
  readonly #intervalMs: number;
  readonly #delayMs: number;
  readonly #now: () => number;
  #started: number | undefined;
  #listed = 0;
  #listedBytes = 0;
  #done = 0;
  #doneBytes = 0;
  #events = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastDraw = 0;
  #drawn = false;
  #lastLogged = "";
  #finished = false;

  /** Creates a progress display; nothing is shown until the first update. */
  constructor(options: ProgressOptions = {}) {
    this.#label = options.label ?? "progress";
    this.#tty = options.tty ?? isTerminal();
    this.#write = options.write ?? ((text) => Deno.stderr.writeSync(encoder.encode(text)));
    this.#log = options.log ?? ((line) => log.info(line));
    this.#intervalMs = options.intervalMs ?? 5_000;
    this.#delayMs = options.delayMs ?? 1_000;
    this.#now = options.now ?? (() => performance.now());
  }

  /** `count` more objects (of `bytes` total) were found to process. */
  listed(count: number, bytes = 0): void {
    this.#start();
    this.#listed += count;
    this.#listedBytes += bytes;
    this.#update();
  }

  /** One object (of `objectBytes`) was processed, with `events` events. */
  done(objectBytes = 0, events = 0): void {
    this.#start();
    this.#done++;
    this.#doneBytes += objectBytes;
    this.#events += events;
    this.#update();
  }

  /** The counters so far. */
  get snapshot(): ProgressSnapshot {
    return {
      listed: this.#listed,
      listedBytes: this.#listedBytes,
      done: this.#done,
      doneBytes: this.#doneBytes,
      events: this.#events,
      elapsedMs: this.#started === undefined ? 0 : this.#now() - this.#started,
    };
  }

  /** Events per second since the first update. */
  get eventsPerSecond(): number {
    const elapsed = this.snapshot.elapsedMs;
    return elapsed > 0 ? (this.#events * 1000) / elapsed : 0;
  }

  /** The progress as one line, e.g. `source trail ▕██░░▏ 12/40 objects · 1.2/4.0 MB · …`. */
  format(bar = this.#tty): string {
    const { listed, done, listedBytes, doneBytes, elapsedMs } = this.snapshot;
    const total = Math.max(listed, done);
    const share = total > 0 ? done / total : 0;
    const rate = this.eventsPerSecond;
    const parts = [
      `${number(done)}/${number(total)} objects${bar ? "" : ` (${Math.floor(share * 100)}%)`}`,
      `${megabytes(doneBytes)}/${megabytes(Math.max(listedBytes, doneBytes))} MB`,
      `${number(rate)} events/s`,
    ];
    if (done > 0 && done < total && elapsedMs > 0) {
      parts.push(`ETA ${duration((elapsedMs / done) * (total - done))}`);
    }
    if (!bar) return `${this.#label}: ${parts.join(", ")}`;
    const filled = Math.round(share * BAR_WIDTH);
    return `${this.#label} ▕${"█".repeat(filled)}${"░".repeat(BAR_WIDTH - filled)}▏ ` +
      parts.join(" · ");
  }

  /** Prints the final state (if anything was shown) and stops the timer. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#tty) {
      if (this.#drawn) this.#write(`\r\x1b[2K${this.format(true)}\n`);
    } else if (this.#lastLogged) this.#emitLine();
  }

  #start(): void {
    if (this.#started !== undefined || this.#finished) return;
    this.#started = this.#now();
    const timer = setInterval(() => this.#tick(), this.#tty ? 1_000 : this.#intervalMs);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #update(): void {
    if (!this.#tty || this.#finished) return;
    const now = this.#now();
    if (now - this.#started! < this.#delayMs || now - this.#lastDraw < REDRAW_MS) return;
    this.#draw(now);
  }

  #draw(now: number): void {
    this.#lastDraw = now;
    this.#drawn = true;
    this.#write(`\r\x1b[2K${this.format(true)}`);
  }

  #tick(): void {
    if (this.#finished) return;
    if (this.#tty) {
      if (this.#now() - this.#started! >= this.#delayMs) this.#draw(this.#now());
    } else this.#emitLine();
  }

  #emitLine(): void {
    const line = this.format(false);
    const counters = `${this.#listed}/${this.#done}/${this.#events}`;
    if (counters === this.#lastLogged) return;
    this.#lastLogged = counters;
    this.#log(line);
  }
}
