/**
 * A small checker for plugin options. Each plugin describes its options with it; every problem
 * is recorded with its dotted key path and unknown keys are errors.
 *
 * @example Checking a plugin's options
 * ```ts
 * import { OptionsChecker } from "./validate.ts";
 * const check = new OptionsChecker({ path: "./logs", extra: 1 }, "sources.demo");
 * check.string("path", { required: true });
 * check.done();
 * console.log(check.problems); // [{ path: "sources.demo.extra", message: "unknown key" }]
 * ```
 *
 * @module
 */

import type { ConfigProblem } from "./errors.ts";

/** A raw, not yet validated options object. */
export type RawOptions = Record<string, unknown>;

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/** Whether `value` is a plain JSON object (not an array, not null). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Describes a value for an error message, e.g. `"8x"`, `an array`, `null`. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") {
    return JSON.stringify(value.length > 40 ? value.slice(0, 40) + "…" : value);
  }
  if (typeof value === "object") return "an object";
  return String(value);
}

/** Parses a duration like `90s`, `15m`, `1h`, `7d` or a number of seconds into milliseconds. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value) && value >= 0) return value * 1000;
  if (typeof value !== "string") return undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$/.exec(value);
  if (!match) return undefined;
  const n = Number(match[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[
    (match[2] ?? "s") as "s"
  ];
  return n * unit;
}

/** Options every check takes. */
export interface Common {
  /** The key must be present. */
  required?: boolean;
}

/** Records the problems of one options object; see the module example. */
export class OptionsChecker {
  /** Problems found so far. */
  readonly problems: ConfigProblem[] = [];
  readonly #seen = new Set<string>();

  /** Checks `raw`, reporting problems under the dotted `path`. */
  constructor(readonly raw: RawOptions, readonly path: string) {}

  /** The dotted path of a key. */
  at(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  /** Adds a problem about `key`. */
  problem(key: string, message: string): void {
    this.problems.push({ path: this.at(key), message });
  }

  /** Marks `key` as known without checking it; returns its value. */
  any(key: string, opts: Common = {}): unknown {
    this.#seen.add(key);
    const value = this.raw[key];
    if (value === undefined && opts.required) this.problem(key, "is required");
    return value;
  }

  /** A string, optionally one of `oneOf` or matching `pattern`. */
  string(
    key: string,
    opts: Common & { oneOf?: readonly string[]; pattern?: RegExp; hint?: string } = {},
  ): string | undefined {
    const value = this.any(key, opts);
    if (value === undefined) return undefined;
    if (typeof value !== "string" || (opts.required && value === "")) {
      this.problem(key, `expected a non-empty string, got ${describe(value)}`);
      return undefined;
    }
    if (opts.oneOf && !opts.oneOf.includes(value)) {
      this.problem(key, `expected one of ${opts.oneOf.join(", ")}, got ${describe(value)}`);
      return undefined;
    }
    if (opts.pattern && !opts.pattern.test(value)) {
      this.problem(key, `expected ${opts.hint ?? opts.pattern}, got ${describe(value)}`);
      return undefined;
    }
    return value;
  }

  /** A number, optionally an integer within bounds. */
  number(
    key: string,
    opts: Common & { integer?: boolean; min?: number; max?: number } = {},
  ): number | undefined {
    const value = this.any(key, opts);
    if (value === undefined) return undefined;
    const kind = opts.integer ? "an integer" : "a number";
    const bounds = [
      opts.min !== undefined ? `≥ ${opts.min}` : "",
      opts.max !== undefined ? `≤ ${opts.max}` : "",
    ].filter(Boolean).join(" and ");
    if (
      typeof value !== "number" || !Number.isFinite(value) ||
      (opts.integer && !Number.isInteger(value)) ||
      (opts.min !== undefined && value < opts.min) ||
      (opts.max !== undefined && value > opts.max)
    ) {
      this.problem(key, `expected ${kind}${bounds ? " " + bounds : ""}, got ${describe(value)}`);
      return undefined;
    }
    return value;
  }

  /** An integer within bounds. */
  integer(key: string, opts: Common & { min?: number; max?: number } = {}): number | undefined {
    return this.number(key, { ...opts, integer: true });
  }

  /** A boolean. */
  boolean(key: string, opts: Common = {}): boolean | undefined {
    const value = this.any(key, opts);
    if (value === undefined) return undefined;
    if (typeof value !== "boolean") {
      this.problem(key, `expected true or false, got ${describe(value)}`);
      return undefined;
    }
    return value;
  }

  /** A duration (`"15m"`, `"7d"`, or seconds as a number); returns milliseconds. */
  duration(key: string, opts: Common = {}): number | undefined {
    const value = this.any(key, opts);
    if (value === undefined) return undefined;
    const ms = parseDuration(value);
    if (ms === undefined) {
      this.problem(
        key,
        `expected a duration such as "90s", "15m", "1h" or "7d", got ${describe(value)}`,
      );
    }
    return ms;
  }

  /** An array of strings, each optionally checked by `each` (returning a problem or nothing). */
  strings(
    key: string,
    opts: Common & { each?: (item: string) => string | undefined; nonEmpty?: boolean } = {},
  ): string[] | undefined {
    const value = this.any(key, opts);
    if (value === undefined) return undefined;
    if (!Array.isArray(value)) {
      this.problem(key, `expected an array of strings, got ${describe(value)}`);
      return undefined;
    }
    if (opts.nonEmpty && value.length === 0) this.problem(key, "must not be empty");
    value.forEach((item, i) => {
      if (typeof item !== "string") {
        this.problems.push({
          path: `${this.at(key)}[${i}]`,
          message: `expected a string, got ${describe(item)}`,
        });
        return;
      }
      const problem = opts.each?.(item);
      if (problem) this.problems.push({ path: `${this.at(key)}[${i}]`, message: problem });
    });
    return value.filter((item): item is string => typeof item === "string");
  }

  /** A string or an array of strings, returned as an array. */
  stringOrStrings(key: string, opts: Common = {}): string[] | undefined {
    const value = this.raw[key];
    if (typeof value === "string") {
      this.#seen.add(key);
      return [value];
    }
    return this.strings(key, opts);
  }

  /** An object whose values are strings (headers, mappings). */
  stringMap(
    key: string,
    opts: Common & {
      eachKey?: (k: string) => string | undefined;
      eachValue?: (v: string) => string | undefined;
    } = {},
  ): Record<string, string> | undefined {
    const value = this.any(key, opts);
    if (value === undefined) return undefined;
    if (!isObject(value)) {
      this.problem(key, `expected an object of strings, got ${describe(value)}`);
      return undefined;
    }
    const out: Record<string, string> = Object.create(null);
    for (const [k, v] of Object.entries(value)) {
      const at = `${this.at(key)}.${k}`;
      const keyProblem = FORBIDDEN_KEYS.has(k) ? `key "${k}" is not allowed` : opts.eachKey?.(k);
      if (keyProblem) {
        this.problems.push({ path: at, message: keyProblem });
        continue;
      }
      if (typeof v !== "string") {
        this.problems.push({ path: at, message: `expected a string, got ${describe(v)}` });
        continue;
      }
      const valueProblem = opts.eachValue?.(v);
      if (valueProblem) this.problems.push({ path: at, message: valueProblem });
      else out[k] = v;
    }
    return out;
  }

  /** A nested object, checked by `fn` with its own checker (unknown keys reported there). */
  object<T>(key: string, fn: (check: OptionsChecker) => T, opts: Common = {}): T | undefined {
    const value = this.any(key, opts);
    if (value === undefined) return undefined;
    if (!isObject(value)) {
      this.problem(key, `expected an object, got ${describe(value)}`);
      return undefined;
    }
    const nested = new OptionsChecker(value, this.at(key));
    const result = fn(nested);
    nested.done();
    this.problems.push(...nested.problems);
    return result;
  }

  /** Reports every key that was not checked as unknown. Call once, after all checks. */
  done(): void {
    for (const key of Object.keys(this.raw)) {
      if (!this.#seen.has(key)) this.problem(key, "unknown key");
    }
  }
}
