/**
 * The decode worker pool (`pipeline.workers: N`): N Deno Workers decompress, parse, normalize and
 * run the stateless checks of up to N objects at once, while the main thread consumes their
 * prepared batches object by object, in order, for the stateful detectors and the commits.
 *
 * The main thread reads each object's bytes and hands them to its worker chunk by chunk, only when
 * the worker asks; a worker asks only while few of its batches wait, so memory stays bounded.
 *
 * @module
 */

import type { SourceObject } from "../sources/mod.ts";
import type { SourceConfig } from "./config.ts";
import type { DecodeOptions } from "./decode.ts";
import { ObjectDecodeError, SourceReadError } from "./errors.ts";
import { type PackedBatch, type Prepared, unpackPrepared } from "./prepare.ts";
import type { RawOptions } from "./validate.ts";

/** A detector as the worker builds it. */
export interface WorkerDetector {
  /** Instance name. */
  name: string;
  /** Plugin type. */
  type: string;
  /** Plugin options. */
  options: RawOptions;
}

/** Messages to a worker. */
export type ToWorker =
  | { t: "init"; detectors: WorkerDetector[]; baseDir: string }
  | {
    t: "start";
    job: number;
    object: string;
    /** A local file the worker reads itself (no `data` messages then). */
    path?: string;
    insight?: boolean;
    customMapping?: Record<string, string>;
    customFields?: string[];
    decode: DecodeOptions;
  }
  | { t: "data"; job: number; bytes: Uint8Array }
  | { t: "end"; job: number }
  | { t: "ack"; job: number }
  | { t: "cancel"; job: number };

/** Messages from a worker. */
export type FromWorker =
  | { t: "ready" }
  | { t: "failed"; message: string }
  | { t: "want"; job: number; n: number }
  | { t: "batch"; job: number; batch: PackedBatch }
  | { t: "done"; job: number }
  | {
    t: "error";
    job: number;
    decode?: { object: string; offset: number; reason: string };
    /** The object could not be read (a {@link SourceReadError}). */
    read?: string;
    message: string;
  };

/** Bytes of input gathered into one message to a worker. */
const FEED_BYTES = 256 * 1024;

interface Slot {
  worker: Worker;
  job: DecodeJob | undefined;
}

/**
 * One object being decoded by a worker; iterate it for the prepared batches. Errors: an
 * {@link ObjectDecodeError} for bad content, otherwise the read error of the object's stream.
 */
export class DecodeJob {
  /** The object. */
  readonly object: SourceObject;
  readonly #pool: DecodePool;
  readonly #config: SourceConfig;
  readonly #signal: AbortSignal;
  readonly id: number;
  #slot: Slot | undefined;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #queue: PackedBatch[] = [];
  #done = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  #finished = false;
  /** Chunks the worker asked for and has not been sent yet. */
  #credits = 0;
  #feeding = false;

  /** Created by {@link DecodePool.start}. */
  constructor(
    pool: DecodePool,
    id: number,
    object: SourceObject,
    config: SourceConfig,
    signal: AbortSignal,
  ) {
    this.#pool = pool;
    this.id = id;
    this.object = object;
    this.#config = config;
    this.#signal = signal;
  }

  /** Binds the job to a free worker and starts it. */
  attach(slot: Slot): void {
    this.#slot = slot;
    slot.job = this;
    const message: ToWorker = {
      t: "start",
      job: this.id,
      object: this.object.id,
      path: this.object.path,
      insight: this.object.insight,
      customMapping: this.#config.customMapping,
      customFields: this.#config.customFields,
      decode: this.#config.decode,
    };
    slot.worker.postMessage(message);
  }

  /** Handles a message of the job's worker. */
  receive(message: FromWorker): void {
    switch (message.t) {
      case "want":
        this.#credits += message.n;
        if (!this.#feeding) void this.#feed();
        break;
      case "batch":
        this.#queue.push(message.batch);
        break;
      case "done":
        this.#done = true;
        this.#release();
        break;
      case "error":
        this.#error = message.decode
          ? new ObjectDecodeError(
            message.decode.object,
            message.decode.offset,
            message.decode.reason,
          )
          : message.read !== undefined
          ? new SourceReadError(this.object.id, message.read, false)
          : new Error(message.message);
        this.#release();
        break;
    }
    this.#wake?.();
  }

  async #feed(): Promise<void> {
    this.#feeding = true;
    try {
      while (this.#credits > 0 && !this.#finished) {
        this.#credits--;
        this.#reader ??= (await this.object.open!(this.#signal)).getReader();
        // Gather reads into one message of ~256 KiB: each message costs a turn of the main
        // thread's event loop, which is busy with the stateful detectors.
        const parts: Uint8Array[] = [];
        let size = 0;
        let done = false;
        while (size < FEED_BYTES) {
          const read = await this.#reader.read();
          if (this.#finished) return;
          if (read.done) {
            done = true;
            break;
          }
          parts.push(read.value);
          size += read.value.byteLength;
        }
        if (size > 0) {
          const bytes = new Uint8Array(size);
          let at = 0;
          for (const part of parts) {
            bytes.set(part, at);
            at += part.byteLength;
          }
          this.#slot?.worker.postMessage({ t: "data", job: this.id, bytes } satisfies ToWorker, [
            bytes.buffer,
          ]);
        }
        if (done) {
          this.#post({ t: "end", job: this.id });
          return;
        }
      }
    } catch (error) {
      this.#error = error;
      this.cancel();
      this.#wake?.();
    } finally {
      this.#feeding = false;
    }
  }

  #post(message: ToWorker): void {
    this.#slot?.worker.postMessage(message);
  }

  #release(): void {
    if (this.#finished) return;
    this.#finished = true;
    const slot = this.#slot;
    this.#slot = undefined;
    void this.#reader?.cancel().catch(() => undefined);
    if (slot) this.#pool.release(slot);
  }

  /** Stops the job (the object will not be consumed). */
  cancel(): void {
    if (this.#finished) return;
    this.#post({ t: "cancel", job: this.id });
    this.#release();
    this.#pool.forget(this);
  }

  /** The prepared batches, in order. */
  async *batches(): AsyncGenerator<Prepared[]> {
    try {
      while (true) {
        const batch = this.#queue.shift();
        if (batch) {
          this.#post({ t: "ack", job: this.id });
          yield unpackPrepared(batch);
          continue;
        }
        if (this.#error !== undefined) throw this.#error;
        if (this.#done) return;
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
      }
    } finally {
      this.cancel();
    }
  }
}

/** A pool of decode workers. */
export class DecodePool {
  readonly #slots: Slot[] = [];
  readonly #waiting: DecodeJob[] = [];
  #nextId = 1;

  private constructor() {}

  /** Starts `size` workers with the detectors (their stateless checks run in the workers). */
  static async create(
    size: number,
    detectors: WorkerDetector[],
    baseDir: string,
  ): Promise<DecodePool> {
    const pool = new DecodePool();
    const ready: Promise<void>[] = [];
    for (let i = 0; i < size; i++) {
      const worker = new Worker(new URL("./decode_worker.ts", import.meta.url), { type: "module" });
      const slot: Slot = { worker, job: undefined };
      pool.#slots.push(slot);
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.onmessage = (event: MessageEvent<FromWorker>) => {
            const message = event.data;
            if (message.t === "ready") resolve();
            else if (message.t === "failed") {
              reject(new Error(`decode worker failed to start: ${message.message}`));
            } else slot.job?.receive(message);
          };
          worker.onerror = (event) => {
            event.preventDefault();
            const error = new Error(`decode worker crashed: ${event.message}`);
            reject(error);
            slot.job?.receive({ t: "error", job: slot.job.id, message: error.message });
          };
        }),
      );
      worker.postMessage({ t: "init", detectors, baseDir } satisfies ToWorker);
    }
    try {
      await Promise.all(ready);
    } catch (error) {
      pool.close();
      throw error;
    }
    return pool;
  }

  /** Number of workers. */
  get size(): number {
    return this.#slots.length;
  }

  /** Starts decoding `object` as soon as a worker is free. */
  start(object: SourceObject, config: SourceConfig, signal: AbortSignal): DecodeJob {
    const job = new DecodeJob(this, this.#nextId++, object, config, signal);
    const free = this.#slots.find((s) => !s.job);
    if (free) job.attach(free);
    else this.#waiting.push(job);
    return job;
  }

  /** A worker finished its job: give it the next waiting one. */
  release(slot: Slot): void {
    slot.job = undefined;
    const next = this.#waiting.shift();
    if (next) next.attach(slot);
  }

  /** Drops a job that never got a worker. */
  forget(job: DecodeJob): void {
    const at = this.#waiting.indexOf(job);
    if (at >= 0) this.#waiting.splice(at, 1);
  }

  /** Stops every worker. */
  close(): void {
    for (const slot of this.#slots) slot.worker.terminate();
    this.#slots.length = 0;
  }
}
