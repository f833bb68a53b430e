/**
 * Sources: where CloudTrail objects come from. The contract and the static registry.
 *
 * A source lists or polls, owns its credentials and its checkpoint, and hands the pipeline
 * *objects* (bytes plus where they came from). It never parses JSON. The pipeline tells it when
 * an object is committed (its alerts are in the outbox) or released (it could not be read).
 *
 * @module
 */

import type { Commit, StateStore } from "../core/state.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import { localSource } from "./local.ts";
import { s3Source } from "./s3.ts";
import { sqsSource } from "./sqs.ts";

/** One object to decode: a log file, an S3 object, or records carried by a queue message. */
export interface SourceObject {
  /** Stable, unique id that names the object in failures: `s3://bucket/key`, a path, … */
  readonly id: string;
  /** Size in bytes as stored (compressed), when known. */
  readonly size?: number;
  /** The records are CloudTrail Insights events. */
  readonly insight?: boolean;
  /**
   * Opens the bytes (gzip is detected by magic bytes). May be called again after a failed
   * attempt. Errors should be {@link SourceReadError}s.
   */
  open?(signal: AbortSignal): Promise<ReadableStream<Uint8Array>>;
  /**
   * A local file holding the same bytes `open` gives: the pipeline then reads it directly (into
   * one reused buffer, and in a decode worker without the main thread's help).
   */
  readonly path?: string;
  /** Records already decoded (e.g. an EventBridge event in a queue message), instead of `open`. */
  readonly records?: readonly unknown[];
}

/** Progress counters a source feeds while it lists (for the progress bar / log lines). */
export interface SourceProgress {
  /** `count` more objects (of `bytes` total) were found to process. */
  listed(count: number, bytes?: number): void;
}

/** What a source gets for one pass. */
export interface SourceRun {
  /** Aborted when the pass must stop (signal, time budget): return after the current object. */
  readonly signal: AbortSignal;
  /** The state store, to read checkpoints. Writes go through {@link Source.checkpoint}. */
  readonly state: StateStore;
  /** Records a failure that is not tied to an object being decoded (listing, poison message). */
  fail(object: string, reason: string): void;
  /** Listing progress. */
  readonly progress: SourceProgress;
}

/** A source instance, created from its config block. */
export interface Source {
  /** Instance name (the key under `sources`). */
  readonly name: string;
  /** Plugin type, e.g. `local`, `s3`, `sqs`. */
  readonly type: string;
  /** Checks that the source is reachable; throws an error naming what is wrong. */
  preflight?(): Promise<void>;
  /**
   * Yields the objects not processed yet, in the order their checkpoints must be committed.
   * Returns when nothing new remains or `run.signal` is aborted.
   */
  objects(run: SourceRun): AsyncIterable<SourceObject>;
  /**
   * Stages the checkpoint that marks `object` done into the commit carrying its last alerts.
   * `failure` is set when the object's content is bad (decode error): it is done, with a reason.
   */
  checkpoint(object: SourceObject, commit: Commit, failure?: string): void | Promise<void>;
  /** The checkpoint was committed (an SQS source deletes the message here). */
  committed?(object: SourceObject): void | Promise<void>;
  /** The object could not be read and was not checkpointed; it is offered again later. */
  released?(object: SourceObject, reason: string): void | Promise<void>;
  /** Frees clients and timers. */
  close?(): Promise<void>;
}

/** What a source factory receives besides its options. */
export interface SourceContext {
  /** Instance name. */
  name: string;
  /** Folder that relative paths in the config are resolved against. */
  baseDir: string;
}

/** A source plugin: checks its options and creates instances. */
export interface SourcePlugin {
  /** One line for docs and `--help`. */
  description: string;
  /** Reports every problem of the raw options (unknown keys included) on the checker. */
  check(check: OptionsChecker): void;
  /** Creates an instance from checked options. */
  create(options: RawOptions, context: SourceContext): Source;
}

/** The source registry: type name → plugin. */
export const sources: Record<string, SourcePlugin> = {
  local: localSource,
  s3: s3Source,
  sqs: sqsSource,
};
