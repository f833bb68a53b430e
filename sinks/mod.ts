/**
 * Sinks: where alerts go. The contract and the static registry.
 *
 * Alerts never go to a sink directly: they enter the durable outbox (sinks/outbox.ts) in the same
 * atomic commit as their object's checkpoint, and the delivery loop hands them to each sink.
 *
 * @module
 */

import type { Alert } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import { discordSink } from "./discord.ts";
import { jsonlSink } from "./jsonl.ts";
import { slackSink } from "./slack.ts";
import { stdoutSink } from "./stdout.ts";
import { teamsSink } from "./teams.ts";
import { webhookSink } from "./webhook.ts";

/** A sink instance, created from its config block. */
export interface Sink {
  /** Instance name (the key under `sinks`). */
  readonly name: string;
  /** Plugin type. */
  readonly type: string;
  /**
   * Delivers alerts: one alert, or several when the sink groups them. Throws a
   * {@link DeliveryError} (retryable or not, with `retryAfterMs`) when the receiver refuses.
   */
  send(alerts: Alert[]): Promise<void>;
  /** Checks that the receiver is reachable; resolves with a short description, throws if not. */
  healthcheck(): Promise<string>;
  /**
   * How many alerts one `send` may carry when the route does not group (default 1: one message
   * per alert, as webhooks expect). Local sinks (files, stdout) take many at once.
   */
  readonly maxBatch?: number;
  /** Frees resources (open files). */
  close?(): Promise<void>;
}

/** What a sink factory receives besides its options. */
export interface SinkContext {
  /** Instance name. */
  name: string;
  /** Folder that relative paths in the config are resolved against. */
  baseDir: string;
}

/** A sink plugin. */
export interface SinkPlugin {
  /** One line for docs and `--help`. */
  description: string;
  /** Reports every problem of the raw options (unknown keys included) on the checker. */
  check(check: OptionsChecker): void;
  /** Creates an instance from checked options. */
  create(options: RawOptions, context: SinkContext): Sink;
}

/** The sink registry: type name → plugin. */
export const sinks: Record<string, SinkPlugin> = {
  stdout: stdoutSink,
  jsonl: jsonlSink,
  webhook: webhookSink,
  slack: slackSink,
  teams: teamsSink,
  discord: discordSink,
};

export { DeliveryError } from "../core/errors.ts";
