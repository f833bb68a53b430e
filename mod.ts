/**
 * trailwatch: AWS CloudTrail logs (S3, SQS, local files) → normalized events → login-anomaly and
 * rule detectors → alerts delivered to webhooks through a durable outbox.
 *
 * This module is the public API: the plugin contracts and registries, the pipeline runtime and
 * {@link runOnce}.
 *
 * @example Running every source once from a config file
 * ```ts
 * import { loadConfig, runOnce } from "./mod.ts";
 * const summary = await runOnce(await loadConfig("trailwatch.json"));
 * console.log(summary.events, summary.alerts);
 * ```
 *
 * @module
 */

import type { Config } from "./core/config.ts";
import { Runtime, type RuntimeOptions, type Summary } from "./core/pipeline.ts";

export {
  type Config,
  type DetectorConfig,
  loadConfig,
  parseConfigText,
  type PipelineConfig,
  resolveConfig,
  type SinkConfig,
  type SourceConfig,
  type StateConfig,
} from "./core/config.ts";
export {
  alertId,
  emptySummary,
  formatSummary,
  LeaseBusyError,
  Runtime,
  type RuntimeOptions,
  type Summary,
} from "./core/pipeline.ts";
export { type DecodedRecord, type DecodeOptions, decodeRecords } from "./core/decode.ts";
export {
  ConfigError,
  type ConfigProblem,
  DeliveryError,
  ObjectDecodeError,
  RecordError,
  SourceReadError,
} from "./core/errors.ts";
export {
  Commit,
  type DetectorState,
  type Mutation,
  type SetOptions,
  StateStore,
} from "./core/state.ts";
export {
  type Alert,
  type AlertDraft,
  type CloudTrailRecord,
  type NormalizedEvent,
  type Outcome,
  SEVERITIES,
  type Severity,
} from "./core/types.ts";
export { type Common as CheckOptions, OptionsChecker, type RawOptions } from "./core/validate.ts";
export {
  type Source,
  type SourceContext,
  type SourceObject,
  type SourcePlugin,
  type SourceProgress,
  type SourceRun,
  sources,
} from "./sources/mod.ts";
export {
  type Detector,
  type DetectorContext,
  type DetectorContextInit,
  type DetectorPlugin,
  detectors,
} from "./detectors/mod.ts";
export { type Sink, type SinkContext, type SinkPlugin, sinks } from "./sinks/mod.ts";
export {
  type DeadEntry,
  type DeliveryReport,
  type Options as DeliveryOptions,
  Outbox,
  type PendingEntry,
  type Route,
} from "./sinks/outbox.ts";
export {
  type CustomMapping,
  type EcsEvent,
  GeoCache,
  type GeoInfo,
  type GeoProvider,
  IpSet,
  isPublicIp,
  type MappingFunction,
  normalize,
  type NormalizeOptions,
  type ParsedIp,
  staticGeoProvider,
  toEcs,
} from "./mapping/mod.ts";
export type { Options as GeoOptions } from "./mapping/geo.ts";

/**
 * Runs every enabled source of `config` until it has nothing new, delivers the outbox, and
 * returns the summary (the same as `trailwatch ingest --once`).
 *
 * @example A one-off run over local files with in-memory state
 * ```ts
 * import { resolveConfig, runOnce } from "./mod.ts";
 * const config = resolveConfig({ sources: { logs: { type: "local", path: "examples/logs" } } }, ".");
 * const summary = await runOnce(config, { statePath: ":memory:" });
 * ```
 */
export async function runOnce(
  config: Config,
  options: RuntimeOptions & { source?: string; signal?: AbortSignal } = {},
): Promise<Summary> {
  const runtime = await Runtime.create(config, options);
  try {
    return await runtime.runOnce({ source: options.source, signal: options.signal });
  } finally {
    await runtime.close();
  }
}
