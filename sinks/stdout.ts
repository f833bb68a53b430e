/**
 * The `stdout` sink: one readable line per alert, or the alert JSON with `format: "json"`.
 *
 * @module
 */

import type { Alert } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { Sink, SinkContext, SinkPlugin } from "./mod.ts";

/** Options of the `stdout` sink. */
export interface Options {
  /** `text` (one readable line) or `json` (one JSON object per line). */
  format: "text" | "json";
}

/** Defaults of the `stdout` sink. */
export const defaults = { format: "text" } satisfies Options;

/** One readable line for an alert. */
export function formatAlertLine(alert: Alert): string {
  const who = [
    alert.user && `user=${alert.user}`,
    alert.ip && `ip=${alert.ip}`,
    typeof alert.details.country === "string" && `country=${alert.details.country}`,
    alert.account_id && `account=${alert.account_id}`,
    alert.region && `region=${alert.region}`,
  ].filter(Boolean).join(" ");
  return `[${alert.severity.toUpperCase()}] ${alert.time} ${alert.detector}: ${alert.title}${
    who ? ` (${who})` : ""
  }`;
}

/** Creates a `stdout` sink. */
export function createStdoutSink(options: Partial<Options>, context: SinkContext): Sink {
  const opts = { ...defaults, ...options };
  const encoder = new TextEncoder();
  return {
    name: context.name,
    type: "stdout",
    maxBatch: 500,
    send(alerts) {
      const text = alerts.map((
        a,
      ) => (opts.format === "json" ? JSON.stringify(a) : formatAlertLine(a))).join("\n");
      Deno.stdout.writeSync(encoder.encode(text + "\n"));
      return Promise.resolve();
    },
    healthcheck: () => Promise.resolve("stdout"),
  };
}

/** The `stdout` plugin. */
export const stdoutSink: SinkPlugin = {
  description: "Alerts printed on standard output",
  check(check: OptionsChecker) {
    check.string("format", { oneOf: ["text", "json"] });
  },
  create: (options: RawOptions, context) => createStdoutSink(options as Partial<Options>, context),
};
