/**
 * The `jsonl` sink: appends one alert JSON per line to a file.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { DeliveryError } from "../core/errors.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { Sink, SinkContext, SinkPlugin } from "./mod.ts";

/** Options of the `jsonl` sink. */
export interface Options {
  /** File to append to; relative paths are resolved against the config file's folder. */
  path: string;
}

/** Defaults of the `jsonl` sink. */
export const defaults = { path: ".trailwatch/alerts.jsonl" } satisfies Options;

/** Creates a `jsonl` sink. */
export function createJsonlSink(options: Partial<Options>, context: SinkContext): Sink {
  const opts = { ...defaults, ...options };
  const path = resolve(context.baseDir, opts.path);
  const encoder = new TextEncoder();
  let file: Deno.FsFile | undefined;
  return {
    name: context.name,
    type: "jsonl",
    maxBatch: 500,
    async send(alerts) {
      try {
        if (!file) {
          await Deno.mkdir(dirname(path), { recursive: true });
          file = await Deno.open(path, { append: true, create: true });
        }
        const bytes = encoder.encode(alerts.map((a) => JSON.stringify(a) + "\n").join(""));
        let written = 0;
        while (written < bytes.length) written += await file.write(bytes.subarray(written));
      } catch (error) {
        throw new DeliveryError(`cannot append to ${path}: ${(error as Error).message}`, {
          retryable: true,
        }, {
          cause: error,
        });
      }
    },
    async healthcheck() {
      await Deno.mkdir(dirname(path), { recursive: true });
      const f = await Deno.open(path, { append: true, create: true });
      f.close();
      return `appending to ${path}`;
    },
    close() {
      file?.close();
      file = undefined;
      return Promise.resolve();
    },
  };
}

/** The `jsonl` plugin. */
export const jsonlSink: SinkPlugin = {
  description: "Alerts appended to a JSON Lines file",
  check(check: OptionsChecker) {
    check.string("path", { required: true });
  },
  create: (options: RawOptions, context) => createJsonlSink(options as Partial<Options>, context),
};
