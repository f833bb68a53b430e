/**
 * `custom_mapping`: overrides or extends the normalized event with values read from the raw
 * record by dotted paths, BuffaLogs-style (`{"username": "userIdentity.arn"}`).
 *
 * Paths are walked through own properties only; the segments `__proto__`, `constructor` and
 * `prototype` are refused at load time, so a mapping can never reach an object's prototype.
 *
 * @module
 */

import { RecordError } from "../core/errors.ts";
import type { CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { isIp } from "./ip.ts";

/** A custom mapping: normalized field name → dotted path in the CloudTrail record. */
export type CustomMapping = Record<string, string>;

/** Path segments that would reach a prototype; refused in paths and field names. */
export const FORBIDDEN_SEGMENTS: ReadonlySet<string> = new Set([
  "__proto__",
  "constructor",
  "prototype",
]);

/** Normalized fields a mapping may override, and how each value is checked. */
const STANDARD: Record<string, "string" | "time" | "ip" | "number"> = {
  timestamp: "time",
  event_id: "string",
  event_name: "string",
  event_source: "string",
  username: "string",
  ip: "ip",
  region: "string",
  account_id: "string",
  agent: "string",
  country: "string",
  city: "string",
  lat: "number",
  lon: "number",
  session_name: "string",
  access_key_id: "string",
  user_type: "string",
};

/** Problem with a mapping entry (its target or its path), or undefined when it is valid. */
export function checkMappingEntry(target: string, path: string): string | undefined {
  if (FORBIDDEN_SEGMENTS.has(target)) return `field name "${target}" is not allowed`;
  if (path === "") return "path must not be empty";
  for (const segment of path.split(".")) {
    if (segment === "") return `path "${path}" has an empty segment`;
    if (FORBIDDEN_SEGMENTS.has(segment)) return `path segment "${segment}" is not allowed`;
  }
  return undefined;
}

/** Reads a dotted path through own properties (array indexes allowed); undefined when absent. */
export function getPath(record: unknown, path: string | readonly string[]): unknown {
  const segments = typeof path === "string" ? path.split(".") : path;
  let value: unknown = record;
  for (const segment of segments) {
    if (value === null || typeof value !== "object") return undefined;
    if (FORBIDDEN_SEGMENTS.has(segment) || !Object.hasOwn(value, segment)) return undefined;
    value = (value as Record<string, unknown>)[segment];
  }
  return value;
}

/** Applies a mapping to an event in place. */
export type MappingFunction = (record: CloudTrailRecord, event: NormalizedEvent) => void;

/**
 * Compiles a mapping once. `customFields` (BuffaLogs' `__custom_fields__`) lists extra field
 * names that must be present in the mapping; every non-standard target lands in `event.custom`.
 * Throws a TypeError naming the bad entry.
 *
 * @example Mapping the user from the ARN
 * ```ts
 * import { compileCustomMapping } from "./custom_mapping.ts";
 * const apply = compileCustomMapping({ username: "userIdentity.arn", team: "requestParameters.team" });
 * ```
 */
export function compileCustomMapping(
  mapping: CustomMapping,
  customFields: string[] = [],
): MappingFunction {
  for (const name of customFields) {
    if (!Object.hasOwn(mapping, name)) {
      throw new TypeError(`__custom_fields__: "${name}" has no entry in custom_mapping`);
    }
  }
  const entries = Object.entries(mapping).map(([target, path]) => {
    const problem = checkMappingEntry(target, path);
    if (problem) throw new TypeError(`custom_mapping.${target}: ${problem}`);
    return { target, path, segments: path.split("."), kind: STANDARD[target] };
  });
  return (record, event) => {
    for (const { target, path, segments, kind } of entries) {
      const value = getPath(record, segments);
      if (value === undefined || value === null) continue;
      const target_ = event as unknown as Record<string, unknown>;
      switch (kind) {
        case undefined:
          event.custom ??= Object.create(null) as Record<string, unknown>;
          event.custom[target] = value;
          break;
        case "time": {
          const time = typeof value === "string" ? Date.parse(value) : NaN;
          if (Number.isNaN(time)) {
            throw new RecordError(`custom_mapping.timestamp: ${path} is not a valid time`);
          }
          event.timestamp = value as string;
          event.time = time;
          break;
        }
        case "ip":
          if (typeof value === "string" && isIp(value)) event.ip = value;
          break;
        case "number": {
          const n = typeof value === "number"
            ? value
            : typeof value === "string"
            ? Number(value)
            : NaN;
          if (Number.isFinite(n)) target_[target] = n;
          break;
        }
        default:
          if (typeof value === "string" || typeof value === "number") {
            target_[target] = String(value);
          }
      }
    }
  };
}
