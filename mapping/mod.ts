/**
 * Mapping: raw CloudTrail record → normalized event (BuffaLogs field names, ECS projection),
 * custom dotted-path mappings, GeoIP enrichment and IP helpers.
 *
 * @module
 */

export { contentId, type EcsEvent, normalize, type NormalizeOptions, toEcs } from "./normalize.ts";
export {
  checkMappingEntry,
  compileCustomMapping,
  type CustomMapping,
  getPath,
  type MappingFunction,
} from "./custom_mapping.ts";
export {
  GeoCache,
  type GeoInfo,
  geoipLiteProvider,
  type GeoProvider,
  noGeoProvider,
  staticGeoProvider,
} from "./geo.ts";
export { IpSet, isIp, isPublicIp, type ParsedIp, parseIp } from "./ip.ts";
