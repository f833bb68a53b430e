/**
 * Error classes that callers catch. Everything else uses the built-in error types.
 *
 * @module
 */

/** One problem in a configuration, with the dotted key path it is about. */
export interface ConfigProblem {
  /** Dotted key path, e.g. `sources.trail.concurrency`. */
  path: string;
  /** What is wrong, e.g. `expected an integer ≥ 1, got "8x"`. */
  message: string;
}

/** The configuration is invalid; `problems` lists every problem found, each naming its key. */
export class ConfigError extends Error {
  /** Every problem found. */
  readonly problems: ConfigProblem[];
  /** Creates a ConfigError from a list of problems. */
  constructor(problems: ConfigProblem[], options?: ErrorOptions) {
    super(
      problems.length === 1
        ? `Invalid config: ${problems[0].path}: ${problems[0].message}`
        : `Invalid config (${problems.length} problems):\n` +
          problems.map((p) => `  ${p.path}: ${p.message}`).join("\n"),
      options,
    );
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** An object could not be decoded: names the object and the byte offset where decoding stopped. */
export class ObjectDecodeError extends Error {
  /** The object, e.g. `s3://bucket/key` or a file path. */
  readonly object: string;
  /** Byte offset in the decompressed stream (or the compressed one, for gzip errors). */
  readonly offset: number;
  /** What went wrong, without the object and offset. */
  readonly reason: string;
  /** Creates an ObjectDecodeError. */
  constructor(object: string, offset: number, reason: string, options?: ErrorOptions) {
    super(`Cannot decode ${object}: ${reason} at byte ${offset}`, options);
    this.name = "ObjectDecodeError";
    this.object = object;
    this.offset = offset;
    this.reason = reason;
  }
}

/** One record could not be used; the rest of its object goes on. */
export class RecordError extends Error {
  /** Creates a RecordError; the message names the field. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RecordError";
  }
}

/**
 * An object could not be read from its source (network, permissions). `retryable` says whether a
 * later pass may succeed without a change on the user's side.
 */
export class SourceReadError extends Error {
  /** The object, e.g. `s3://bucket/key`. */
  readonly object: string;
  /** Whether retrying later can help. */
  readonly retryable: boolean;
  /** What went wrong, without the object's name. */
  readonly reason: string;
  /** Creates a SourceReadError. */
  constructor(object: string, message: string, retryable: boolean, options?: ErrorOptions) {
    super(`Cannot read ${object}: ${message}`, options);
    this.name = "SourceReadError";
    this.object = object;
    this.retryable = retryable;
    this.reason = message;
  }
}

/**
 * A sink could not take an alert. `retryable` false sends the alert to the dead list at once;
 * `retryAfterMs` honours a server's `Retry-After`.
 */
export class DeliveryError extends Error {
  /** Whether a later attempt can succeed. */
  readonly retryable: boolean;
  /** Wait requested by the server (429/503 `Retry-After`), in milliseconds. */
  readonly retryAfterMs?: number;
  /** HTTP status, when there was a response. */
  readonly status?: number;
  /** Creates a DeliveryError. */
  constructor(
    message: string,
    init: { retryable: boolean; retryAfterMs?: number; status?: number },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "DeliveryError";
    this.retryable = init.retryable;
    this.retryAfterMs = init.retryAfterMs;
    this.status = init.status;
  }
}

/** The message of any thrown value, for summaries and logs. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
