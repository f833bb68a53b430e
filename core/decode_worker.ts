/**
 * A decode worker (`pipeline.workers`): decompresses, splits, parses and normalizes the records of
 * one object at a time and runs the stateless checks, posting prepared batches back to the main
 * thread, which keeps state, the stateful detectors and the commits in order.
 *
 * Protocol (main → worker): `init`, `start`, `data` (bytes, transferred), `end`, `ack` (a batch
 * was consumed), `cancel`; for a local file `start` names its path and the worker reads it
 * itself (no `data`, no `end`). Worker → main: `ready` | `failed`, `want` (send the next chunk),
 * `batch`, `done`, `error`. A worker asks for input only while less than `MAX_UNACKED_BYTES`
 * of its batches wait on the main thread, so memory stays bounded.
 *
 * @module
 */

/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />

import { detectors as registry } from "../detectors/mod.ts";
import type { Detector } from "../detectors/mod.ts";
import { compileCustomMapping } from "../mapping/custom_mapping.ts";
import { type DecodedRecord, DEFERRED_PAYLOADS, ObjectDecoder, readFileChunks } from "./decode.ts";
import { errorMessage, ObjectDecodeError, SourceReadError } from "./errors.ts";
import { captureLog } from "./log.ts";
import { packedSize, packedTransfer, packPrepared, Preparer } from "./prepare.ts";
import type { FromWorker, ToWorker } from "./workers.ts";

/** Batches a worker may have outstanding before it waits for the main thread. */
const MAX_UNACKED_BYTES = 16 * 1024 * 1024;
/** Input chunks asked for ahead, so the worker rarely waits for the main thread's reads. */
const INPUT_AHEAD = 3;

interface Job {
  id: number;
  decoder: ObjectDecoder;
  preparer: Preparer;
  /** Sizes of the batches posted and not yet taken, oldest first, and their sum. */
  sizes: number[];
  unacked: number;
  /** Input chunks not asked for because too many batches wait. */
  owed: number;
  /** Resumes reading a local file once enough batches are taken. */
  resume?: () => void;
}

// Logs go to the main thread's stderr as they would; the worker keeps quiet about its own set-up.
captureLog(() => {}, "warn");

let detectors: Detector[] = [];
let job: Job | undefined;

function post(message: FromWorker): void {
  self.postMessage(message);
}

function send(current: Job, records: DecodedRecord[]): void {
  if (records.length === 0) return;
  const packed = packPrepared(current.preparer.decoded(records));
  const size = packedSize(packed);
  current.sizes.push(size);
  current.unacked += size;
  self.postMessage(
    { t: "batch", job: current.id, batch: packed } satisfies FromWorker,
    packedTransfer(packed),
  );
}

function askForMore(current: Job): void {
  if (current.unacked < MAX_UNACKED_BYTES) post({ t: "want", job: current.id, n: 1 });
  else current.owed++;
}

function fail(current: Job, error: unknown): void {
  current.decoder.close();
  job = undefined;
  if (error instanceof ObjectDecodeError) {
    post({
      t: "error",
      job: current.id,
      decode: { object: error.object, offset: error.offset, reason: error.reason },
      message: error.message,
    });
  } else post({ t: "error", job: current.id, message: errorMessage(error) });
}

/** Drops a job (a file it reads is closed once its reading wakes up). */
function stop(current: Job): void {
  current.decoder.close();
  job = undefined;
  current.resume?.();
}

/** Decodes a chunk of the object; false if the job failed. */
function decode(current: Job, bytes: Uint8Array): boolean {
  const out: DecodedRecord[] = [];
  try {
    current.decoder.push(bytes, out);
  } catch (error) {
    send(current, out);
    fail(current, error);
    return false;
  }
  send(current, out);
  return true;
}

/** Ends the object. */
function finish(current: Job): void {
  const out: DecodedRecord[] = [];
  try {
    current.decoder.end(out);
  } catch (error) {
    send(current, out);
    fail(current, error);
    return;
  }
  send(current, out);
  job = undefined;
  post({ t: "done", job: current.id });
}

/** Reads a local file itself, pausing while too many batches wait on the main thread. */
async function readFile(current: Job, path: string): Promise<void> {
  try {
    for await (const chunk of readFileChunks(path)) {
      if (job !== current || !decode(current, chunk)) return;
      while (job === current && current.unacked >= MAX_UNACKED_BYTES) {
        await new Promise<void>((resolve) => (current.resume = resolve));
        current.resume = undefined;
      }
      if (job !== current) return;
    }
    finish(current);
  } catch (error) {
    if (job !== current) return;
    current.decoder.close();
    job = undefined;
    const reason = error instanceof SourceReadError ? error.reason : errorMessage(error);
    post({ t: "error", job: current.id, read: reason, message: reason });
  }
}

async function init(message: Extract<ToWorker, { t: "init" }>): Promise<void> {
  try {
    detectors = [];
    for (const d of message.detectors) {
      detectors.push(
        await registry[d.type].create(d.options, { name: d.name, baseDir: message.baseDir }),
      );
    }
    post({ t: "ready" });
  } catch (error) {
    post({ t: "failed", message: errorMessage(error) });
  }
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.t) {
    case "init":
      void init(message);
      return;
    case "start": {
      if (job) stop(job);
      const mapping = message.customMapping
        ? compileCustomMapping(message.customMapping, message.customFields ?? [])
        : undefined;
      const current: Job = {
        id: message.job,
        decoder: new ObjectDecoder(message.object, { ...message.decode, defer: DEFERRED_PAYLOADS }),
        preparer: new Preparer(detectors, { mapping, insight: message.insight }),
        sizes: [],
        unacked: 0,
        owed: 0,
      };
      job = current;
      if (message.path !== undefined) void readFile(current, message.path);
      else post({ t: "want", job: current.id, n: INPUT_AHEAD });
      return;
    }
    case "data": {
      const current = job;
      if (current?.id === message.job && decode(current, message.bytes)) askForMore(current);
      return;
    }
    case "end":
      if (job?.id === message.job) finish(job);
      return;
    case "ack": {
      const current = job;
      if (!current || current.id !== message.job) return;
      current.unacked -= current.sizes.shift() ?? 0;
      if (current.unacked < MAX_UNACKED_BYTES) {
        current.resume?.();
        if (current.owed > 0) {
          post({ t: "want", job: current.id, n: current.owed });
          current.owed = 0;
        }
      }
      return;
    }
    case "cancel":
      if (job?.id === message.job) stop(job);
      return;
  }
};
