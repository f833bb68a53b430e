/**
 * Configuration: loading (JSON, YAML, or the `"trailwatch"` block of deno.json), mapping of the
 * BuffaLogs and LimaCharlie blocks onto sources, and validation that names every bad key.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import YAML from "yaml";
import { detectors as detectorRegistry } from "../detectors/mod.ts";
import {
  checkMappingEntry,
  compileCustomMapping,
  type MappingFunction,
} from "../mapping/custom_mapping.ts";
import { defaults as geoDefaults, type Options as GeoOptions } from "../mapping/geo.ts";
import { defaults as deliveryDefaults, type Options as DeliveryOptions } from "../sinks/outbox.ts";
import { sinks as sinkRegistry } from "../sinks/mod.ts";
import { sources as sourceRegistry } from "../sources/mod.ts";
import { type DecodeOptions, defaults as decodeDefaults } from "./decode.ts";
import { defaults as dedupeDefaults } from "./dedupe.ts";
import { ConfigError, type ConfigProblem } from "./errors.ts";
import { registerSecret, registerSecretUrl } from "./log.ts";
import { SEVERITIES, type Severity } from "./types.ts";
import { describe, isObject, OptionsChecker, type RawOptions } from "./validate.ts";

/** Default cron schedule of a source: every 5 minutes. */
export const DEFAULT_SCHEDULE = "*/5 * * * *";

/** A configured source. */
export interface SourceConfig {
  /** Instance name. */
  name: string;
  /** Plugin type. */
  type: string;
  /** Cron schedule (long-running mode). */
  schedule: string;
  /** Cron retry delays (ms) after a failed pass. */
  backoffSchedule: number[];
  /** Decode caps for this source. */
  decode: DecodeOptions;
  /** Compiled `custom_mapping`, if any. */
  mapping?: MappingFunction;
  /** The `custom_mapping` as configured (decode workers compile their own). */
  customMapping?: Record<string, string>;
  /** The `__custom_fields__` as configured. */
  customFields?: string[];
  /** Plugin options (common keys removed). */
  options: RawOptions;
}

/** A configured detector. */
export interface DetectorConfig {
  /** Instance name. */
  name: string;
  /** Plugin type. */
  type: string;
  /** Plugin options. */
  options: RawOptions;
}

/** A configured sink with its filters. */
export interface SinkConfig {
  /** Instance name. */
  name: string;
  /** Plugin type. */
  type: string;
  /** Lowest severity delivered. */
  minSeverity: Severity;
  /** Only these detectors, when set. */
  detectors?: string[];
  /** Never these detectors. */
  excludeDetectors: string[];
  /** Group alerts per (user, detector) in one delivery round. */
  group: boolean;
  /** Plugin options. */
  options: RawOptions;
}

/** State options. */
export interface StateConfig {
  /** KV file, `:memory:`, or "" for the platform default (Deno Deploy). */
  path: string;
  /** How long event ids are remembered for dedupe (ms). */
  dedupeTtlMs: number;
  /** Lease lifetime without renewal (ms). */
  leaseTtlMs: number;
  /** How long `ingest` waits for another process's lease before skipping (ms). */
  leaseWaitMs: number;
}

/** Pipeline options. */
export interface PipelineConfig {
  /** Decode workers (0 = decode on the main thread). */
  workers: number;
}

/** A validated configuration. Only enabled plugins are listed. */
export interface Config {
  /** Enabled sources. */
  sources: SourceConfig[];
  /** Enabled detectors. */
  detectors: DetectorConfig[];
  /** Enabled sinks. */
  sinks: SinkConfig[];
  /** State options. */
  state: StateConfig;
  /** Geo options. */
  geo: GeoOptions;
  /** Default decode caps. */
  decode: DecodeOptions;
  /** Delivery (outbox) options. */
  delivery: DeliveryOptions;
  /** Pipeline options. */
  pipeline: PipelineConfig;
  /** Folder relative paths are resolved against. */
  baseDir: string;
  /** Notes about accepted-but-ignored settings (printed by `validate`). */
  notes: string[];
}

const SOURCE_COMMON = [
  "type",
  "enabled",
  "schedule",
  "backoffSchedule",
  "maxObjectBytes",
  "maxRecordBytes",
  "customMapping",
  "custom_mapping",
  "customFields",
  "__custom_fields__",
];
const DETECTOR_COMMON = ["type", "enabled"];
const SINK_COMMON = ["type", "enabled", "minSeverity", "detectors", "excludeDetectors", "group"];

const CRON_FIELD = /^(\*|\d+(-\d+)?)(\/\d+)?(,(\*|\d+(-\d+)?)(\/\d+)?)*$/;

/** Problem with a 5-field cron expression, or undefined when it looks valid. */
export function checkCron(value: string): string | undefined {
  const fields = value.trim().split(/\s+/);
  if (fields.length !== 5 || !fields.every((f) => CRON_FIELD.test(f))) {
    return `expected a 5-field cron expression such as "*/5 * * * *", got ${describe(value)}`;
  }
  return undefined;
}

const SECRET_KEYS = new Set([
  "secretaccesskey",
  "sessiontoken",
  "accesskeyid",
  "aws_access_key_id",
  "aws_secret_access_key",
  "aws_session_token",
  "access_key",
  "secret_key",
  "secret",
  "token",
  "password",
  "installation_key",
  "sensor_seed_key",
  "externalid",
]);
const SECRET_URL_KEYS = new Set(["url", "webhookurl", "webhook_url"]);

/** Registers every secret found in a raw config for redaction (keys, tokens, webhook URLs). */
export function registerConfigSecrets(value: unknown, parentKey = ""): void {
  if (Array.isArray(value)) {
    for (const item of value) registerConfigSecrets(item, parentKey);
    return;
  }
  if (!isObject(value)) return;
  for (const [key, child] of Object.entries(value)) {
    const lower = key.toLowerCase();
    if (typeof child === "string") {
      if (SECRET_KEYS.has(lower)) registerSecret(child);
      else if (SECRET_URL_KEYS.has(lower)) registerSecretUrl(child);
      else if (parentKey.toLowerCase() === "headers") registerSecret(child);
    } else registerConfigSecrets(child, key);
  }
}

/**
 * Maps the BuffaLogs ingestion block (`active_ingestion: "cloudtrail"` + `cloudtrail`) and the
 * LimaCharlie adapter blocks (`s3:`, `sqs:`) onto trailwatch `sources`. Returns the rewritten
 * config and notes about what was ignored; problems name the original keys.
 */
export function mapForeignBlocks(
  raw: RawOptions,
): { raw: RawOptions; notes: string[]; problems: ConfigProblem[] } {
  const out: RawOptions = { ...raw };
  const notes: string[] = [];
  const problems: ConfigProblem[] = [];
  const sources: RawOptions = isObject(raw.sources) ? { ...raw.sources } : {};
  let mapped = false;
  const addSource = (name: string, from: string, value: RawOptions) => {
    if (Object.hasOwn(sources, name)) {
      problems.push({ path: from, message: `maps onto sources.${name}, which is already defined` });
      return;
    }
    sources[name] = value;
    mapped = true;
  };
  const credentials = (access: unknown, secret: unknown) =>
    access !== undefined || secret !== undefined
      ? { accessKeyId: access, secretAccessKey: secret }
      : undefined;

  if ("active_ingestion" in raw || "cloudtrail" in raw) {
    delete out.active_ingestion;
    delete out.cloudtrail;
    if (raw.active_ingestion !== undefined && raw.active_ingestion !== "cloudtrail") {
      problems.push({
        path: "active_ingestion",
        message: `trailwatch reads CloudTrail only; expected "cloudtrail", got ${
          describe(raw.active_ingestion)
        }`,
      });
    }
    const block = raw.cloudtrail;
    if (!isObject(block)) {
      problems.push({
        path: "cloudtrail",
        message: "expected the BuffaLogs cloudtrail block (an object)",
      });
    } else {
      const known = [
        "aws_access_key_id",
        "aws_secret_access_key",
        "region",
        "bucket_name",
        "prefix",
        "custom_mapping",
        "__custom_fields__",
      ];
      for (const key of Object.keys(block)) {
        if (!known.includes(key)) {
          problems.push({ path: `cloudtrail.${key}`, message: "unknown key" });
        }
      }
      const source: RawOptions = { type: "s3", bucket: block.bucket_name };
      if (block.prefix !== undefined) source.prefix = block.prefix;
      if (block.region !== undefined) source.region = block.region;
      const creds = credentials(block.aws_access_key_id, block.aws_secret_access_key);
      if (creds) source.credentials = creds;
      if (block.custom_mapping !== undefined) source.customMapping = block.custom_mapping;
      if (block.__custom_fields__ !== undefined) source.customFields = block.__custom_fields__;
      addSource("cloudtrail", "cloudtrail", source);
    }
    for (const other of ["elasticsearch", "opensearch", "splunk"]) {
      if (other in raw) {
        delete out[other];
        notes.push(
          `${other}: BuffaLogs ingestion block ignored (active_ingestion is "cloudtrail")`,
        );
      }
    }
  }

  const limaCharlie = (kind: "s3" | "sqs") => {
    const block = raw[kind];
    delete out[kind];
    if (!isObject(block)) {
      problems.push({
        path: kind,
        message: `expected the LimaCharlie ${kind} adapter block (an object)`,
      });
      return;
    }
    const source: RawOptions = { type: kind };
    const options = isObject(block.client_options) ? block.client_options : {};
    if (block.client_options !== undefined && !isObject(block.client_options)) {
      problems.push({ path: `${kind}.client_options`, message: "expected an object" });
    }
    for (const key of Object.keys(options)) {
      if (key === "hostname") continue;
      if (
        [
          "identity",
          "platform",
          "sensor_seed_key",
          "architecture",
          "mapping",
          "indexing",
          "is_compressed",
        ].includes(key)
      ) {
        notes.push(
          `${kind}.client_options.${key}: LimaCharlie setting ignored (trailwatch has no sensor identity)`,
        );
      } else problems.push({ path: `${kind}.client_options.${key}`, message: "unknown key" });
    }
    const known = kind === "s3"
      ? [
        "bucket_name",
        "access_key",
        "secret_key",
        "prefix",
        "region",
        "client_options",
        "single_load",
      ]
      : ["queue_url", "access_key", "secret_key", "region", "client_options"];
    for (const key of Object.keys(block)) {
      if (!known.includes(key)) problems.push({ path: `${kind}.${key}`, message: "unknown key" });
    }
    if (kind === "s3") {
      source.bucket = block.bucket_name;
      if (block.prefix !== undefined) source.prefix = block.prefix;
      if (block.single_load !== undefined) {
        notes.push("s3.single_load: ignored; use `ingest --once` for a one-shot run");
      }
    } else source.queueUrl = block.queue_url;
    if (block.region !== undefined) source.region = block.region;
    const creds = credentials(block.access_key, block.secret_key);
    if (creds) source.credentials = creds;
    const hostname = typeof options.hostname === "string" && options.hostname
      ? options.hostname
      : kind;
    addSource(hostname, kind, source);
  };
  if ("s3" in raw) limaCharlie("s3");
  if ("sqs" in raw) limaCharlie("sqs");

  if (mapped) out.sources = sources;
  return { raw: out, notes, problems };
}

function checkEntries(
  raw: unknown,
  path: string,
  problems: ConfigProblem[],
): [string, RawOptions][] {
  if (raw === undefined) return [];
  if (!isObject(raw)) {
    problems.push({
      path,
      message: `expected an object keyed by instance name, got ${describe(raw)}`,
    });
    return [];
  }
  const out: [string, RawOptions][] = [];
  for (const [name, value] of Object.entries(raw)) {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
      problems.push({
        path: `${path}.${name}`,
        message: "instance names use letters, digits, _ . - only",
      });
    } else if (!isObject(value)) {
      problems.push({
        path: `${path}.${name}`,
        message: `expected an object, got ${describe(value)}`,
      });
    } else out.push([name, value]);
  }
  return out;
}

function without(raw: RawOptions, keys: string[]): RawOptions {
  const out: RawOptions = {};
  for (const [k, v] of Object.entries(raw)) if (!keys.includes(k)) out[k] = v;
  return out;
}

/**
 * Validates a raw config and resolves it. Throws a {@link ConfigError} listing every problem,
 * each with its key path. `baseDir` is the folder relative paths are resolved against.
 */
export function resolveConfig(input: unknown, baseDir: string): Config {
  if (!isObject(input)) {
    throw new ConfigError([{
      path: "(root)",
      message: `expected an object, got ${describe(input)}`,
    }]);
  }
  registerConfigSecrets(input);
  const mapped = mapForeignBlocks(input);
  const raw = mapped.raw;
  const problems: ConfigProblem[] = [...mapped.problems];
  const top = new OptionsChecker(raw, "");

  // state
  const state: StateConfig = {
    path: resolve(baseDir, ".trailwatch/state.kv"),
    dedupeTtlMs: dedupeDefaults.ttlMs,
    leaseTtlMs: 60_000,
    leaseWaitMs: 0,
  };
  top.object("state", (c) => {
    const path = c.string("path");
    if (path !== undefined) {
      state.path = path === ":memory:" || path === "" ? path : resolve(baseDir, path);
    }
    state.dedupeTtlMs = c.duration("dedupeTtl") ?? state.dedupeTtlMs;
    state.leaseTtlMs = c.duration("leaseTtl") ?? state.leaseTtlMs;
    state.leaseWaitMs = c.duration("leaseWait") ?? state.leaseWaitMs;
  });

  const geo: GeoOptions = { ...geoDefaults };
  top.object("geo", (c) => {
    geo.provider =
      (c.string("provider", { oneOf: ["geoip-lite", "none"] }) as GeoOptions["provider"]) ??
        geo.provider;
    geo.cacheSize = c.integer("cacheSize", { min: 1 }) ?? geo.cacheSize;
  });

  const decode: DecodeOptions = { ...decodeDefaults };
  top.object("decode", (c) => {
    decode.maxObjectBytes = c.integer("maxObjectBytes", { min: 1024 }) ?? decode.maxObjectBytes;
    decode.maxRecordBytes = c.integer("maxRecordBytes", { min: 1024 }) ?? decode.maxRecordBytes;
    decode.maxDepth = c.integer("maxDepth", { min: 8 }) ?? decode.maxDepth;
  });

  const delivery: DeliveryOptions = { ...deliveryDefaults };
  top.object("delivery", (c) => {
    delivery.maxAttempts = c.integer("maxAttempts", { min: 1, max: 100 }) ?? delivery.maxAttempts;
    delivery.baseDelayMs = c.duration("baseDelay") ?? delivery.baseDelayMs;
    delivery.maxDelayMs = c.duration("maxDelay") ?? delivery.maxDelayMs;
    delivery.retentionMs = c.duration("retention") ?? delivery.retentionMs;
    delivery.maxInlineWaitMs = c.duration("maxInlineWait") ?? delivery.maxInlineWaitMs;
    delivery.maxGroupSize = c.integer("maxGroupSize", { min: 1, max: 100 }) ??
      delivery.maxGroupSize;
    delivery.schedule = c.string("schedule", { pattern: /./ }) ?? delivery.schedule;
    const cron = checkCron(delivery.schedule);
    if (cron) c.problem("schedule", cron);
  });

  const pipeline: PipelineConfig = { workers: 0 };
  top.object("pipeline", (c) => {
    pipeline.workers = c.integer("workers", { min: 0, max: 32 }) ?? pipeline.workers;
  });

  // sources
  top.any("sources");
  const sources: SourceConfig[] = [];
  const sourceEntries = checkEntries(raw.sources, "sources", problems);
  if (raw.sources === undefined || sourceEntries.length === 0 && isObject(raw.sources)) {
    problems.push({ path: "sources", message: "at least one source is required" });
  }
  for (const [name, entry] of sourceEntries) {
    const c = new OptionsChecker(entry, `sources.${name}`);
    const type = c.string("type", { required: true });
    const enabled = c.boolean("enabled") ?? true;
    const schedule = c.string("schedule") ?? DEFAULT_SCHEDULE;
    const cron = checkCron(schedule);
    if (entry.schedule !== undefined && cron) c.problem("schedule", cron);
    const backoff = c.any("backoffSchedule");
    let backoffSchedule = [1_000, 5_000, 10_000];
    if (backoff !== undefined) {
      if (
        !Array.isArray(backoff) || !backoff.every((n) => Number.isInteger(n) && n >= 0) ||
        backoff.length > 5
      ) {
        c.problem(
          "backoffSchedule",
          "expected up to 5 delays in milliseconds, e.g. [1000, 5000, 10000]",
        );
      } else backoffSchedule = backoff;
    }
    const sourceDecode = {
      ...decode,
      maxObjectBytes: c.integer("maxObjectBytes", { min: 1024 }) ?? decode.maxObjectBytes,
      maxRecordBytes: c.integer("maxRecordBytes", { min: 1024 }) ?? decode.maxRecordBytes,
    };
    const mappingKey = entry.customMapping !== undefined ? "customMapping" : "custom_mapping";
    const fieldsKey = entry.customFields !== undefined ? "customFields" : "__custom_fields__";
    const customMapping = c.stringMap(mappingKey, {
      eachKey: (k) => checkMappingEntry(k, "x"),
      eachValue: (v) => checkMappingEntry("x", v),
    });
    c.any(mappingKey === "customMapping" ? "custom_mapping" : "customMapping");
    const customFields = c.strings(fieldsKey);
    c.any(fieldsKey === "customFields" ? "__custom_fields__" : "customFields");
    let mapping: MappingFunction | undefined;
    if (customMapping) {
      try {
        mapping = compileCustomMapping(customMapping, customFields ?? []);
      } catch (error) {
        c.problem(mappingKey, (error as Error).message);
      }
    } else if (customFields?.length) {
      c.problem(fieldsKey, "needs custom_mapping entries for its fields");
    }
    if (type !== undefined) {
      const plugin = sourceRegistry[type];
      if (!plugin) {
        c.problem(
          "type",
          `unknown source type "${type}" (known: ${Object.keys(sourceRegistry).join(", ")})`,
        );
        for (const key of Object.keys(entry)) c.any(key);
      } else plugin.check(c);
    }
    c.done();
    problems.push(...c.problems);
    if (enabled && type !== undefined) {
      sources.push({
        name,
        type,
        schedule,
        backoffSchedule,
        decode: sourceDecode,
        mapping,
        customMapping: mapping ? customMapping : undefined,
        customFields: mapping ? customFields : undefined,
        options: without(entry, SOURCE_COMMON),
      });
    }
  }

  // detectors
  top.any("detectors");
  const detectors: DetectorConfig[] = [];
  const detectorEntries: [string, RawOptions][] = raw.detectors === undefined
    ? Object.entries(detectorRegistry).filter(([, p]) => p.builtin !== false).map((
      [name],
    ) => [name, {}])
    : checkEntries(raw.detectors, "detectors", problems);
  for (const [name, entry] of detectorEntries) {
    const c = new OptionsChecker(entry, `detectors.${name}`);
    const type = c.string("type") ?? name;
    const enabled = c.boolean("enabled") ?? true;
    const plugin = detectorRegistry[type];
    if (!plugin) {
      c.problem(
        entry.type === undefined ? "" : "type",
        `unknown detector type "${type}" (known: ${Object.keys(detectorRegistry).join(", ")}); ` +
          `set "type" for a custom instance name`,
      );
      for (const key of Object.keys(entry)) c.any(key);
    } else plugin.check(c);
    c.done();
    problems.push(...c.problems.map((p) => ({ ...p, path: p.path.replace(/\.$/, "") })));
    if (enabled && plugin) detectors.push({ name, type, options: without(entry, DETECTOR_COMMON) });
  }

  // sinks
  top.any("sinks");
  const sinks: SinkConfig[] = [];
  const sinkEntries: [string, RawOptions][] = raw.sinks === undefined
    ? [["stdout", { type: "stdout" }]]
    : checkEntries(raw.sinks, "sinks", problems);
  const detectorNames = new Set(detectorEntries.map(([name]) => name));
  for (const [name, entry] of sinkEntries) {
    const c = new OptionsChecker(entry, `sinks.${name}`);
    const type = c.string("type", { required: true });
    const enabled = c.boolean("enabled") ?? true;
    const minSeverity = (c.string("minSeverity", { oneOf: SEVERITIES }) as Severity | undefined) ??
      "info";
    const onlyDetectors = c.strings("detectors");
    const excludeDetectors = c.strings("excludeDetectors") ?? [];
    const group = c.boolean("group") ?? false;
    for (
      const [key, list] of [["detectors", onlyDetectors], [
        "excludeDetectors",
        excludeDetectors,
      ]] as const
    ) {
      list?.forEach((d, i) => {
        if (!detectorNames.has(d)) {
          problems.push({
            path: `sinks.${name}.${key}[${i}]`,
            message: `no detector named "${d}"`,
          });
        }
      });
    }
    if (type !== undefined) {
      const plugin = sinkRegistry[type];
      if (!plugin) {
        c.problem(
          "type",
          `unknown sink type "${type}" (known: ${Object.keys(sinkRegistry).join(", ")})`,
        );
        for (const key of Object.keys(entry)) c.any(key);
      } else plugin.check(c);
    }
    c.done();
    problems.push(...c.problems);
    if (enabled && type !== undefined) {
      sinks.push({
        name,
        type,
        minSeverity,
        detectors: onlyDetectors,
        excludeDetectors,
        group,
        options: without(entry, SINK_COMMON),
      });
    }
  }

  top.done();
  problems.push(...top.problems);
  if (problems.length) throw new ConfigError(problems);
  return {
    sources,
    detectors,
    sinks,
    state,
    geo,
    decode,
    delivery,
    pipeline,
    baseDir,
    notes: mapped.notes,
  };
}

/** Parses config text: YAML for `.yaml`/`.yml`, JSON otherwise; deno.json → its "trailwatch" block. */
export function parseConfigText(text: string, fileName: string): unknown {
  const name = fileName.toLowerCase();
  let value: unknown;
  try {
    value = name.endsWith(".yaml") || name.endsWith(".yml") ? YAML.parse(text) : JSON.parse(text);
  } catch (error) {
    throw new ConfigError([{
      path: "(file)",
      message: `${fileName}: ${(error as Error).message}`,
    }]);
  }
  if (/(^|\/)deno\.jsonc?$/.test(name)) {
    if (!isObject(value) || !isObject(value.trailwatch)) {
      throw new ConfigError([{
        path: "trailwatch",
        message: `${fileName} has no "trailwatch" block`,
      }]);
    }
    return value.trailwatch;
  }
  return value;
}

/** Loads and validates a config file (JSON, YAML, or deno.json's "trailwatch" block). */
export async function loadConfig(path: string): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError([{
      path: "(file)",
      message: `cannot read ${path}: ${(error as Error).message}`,
    }]);
  }
  return resolveConfig(parseConfigText(text, path), dirname(resolve(path)));
}
