/**
 * GeoIP enrichment behind a small provider interface. The default provider is `geoip-lite`
 * (MaxMind GeoLite data shipped in the npm package), loaded on first use and cached per IP.
 * Private and reserved addresses get no location.
 *
 * @module
 */

import { isPublicIp } from "./ip.ts";

/** Location of an IP address. */
export interface GeoInfo {
  /** ISO 3166-1 alpha-2 country code, e.g. `DE`. */
  country?: string;
  /** City name, when known. */
  city?: string;
  /** Latitude. */
  lat?: number;
  /** Longitude. */
  lon?: number;
}

/** Looks up IP locations. `load()` is awaited once before the first `lookup()`. */
export interface GeoProvider {
  /** Prepares the provider (loads a database); called once, lazily. */
  load(): Promise<void>;
  /** Location of a public IP, or undefined when unknown. */
  lookup(ip: string): GeoInfo | undefined;
}

/** Options of the `geo` config block. */
export interface Options {
  /** `geoip-lite` (default) or `none`. */
  provider: "geoip-lite" | "none";
  /** IPs cached (most recently used kept). */
  cacheSize: number;
}

/** Default geo options. */
export const defaults = { provider: "geoip-lite", cacheSize: 100_000 } satisfies Options;

interface GeoipLiteModule {
  lookup(ip: string): { country?: string; city?: string; ll?: [number, number] } | null;
}

/** The `geoip-lite` provider; its ~110 MB database is read on `load()`, not at import. */
export function geoipLiteProvider(): GeoProvider {
  let lib: GeoipLiteModule | undefined;
  return {
    async load() {
      // geoip-lite reads its whole database while its module is evaluated, so it is imported on
      // first use rather than at start-up (validate, outbox and decode workers never load it).
      lib ??= ((await import("geoip-lite")) as { default: GeoipLiteModule }).default;
    },
    lookup(ip) {
      if (!lib) throw new Error("geoip-lite lookup before load()");
      const hit = lib.lookup(ip);
      if (!hit) return undefined;
      const info: GeoInfo = {};
      if (hit.country) info.country = hit.country;
      if (hit.city) info.city = hit.city;
      if (hit.ll && (hit.ll[0] !== 0 || hit.ll[1] !== 0)) {
        info.lat = hit.ll[0];
        info.lon = hit.ll[1];
      }
      return info.country || info.lat !== undefined ? info : undefined;
    },
  };
}

/** A provider that knows nothing (geo disabled). */
export function noGeoProvider(): GeoProvider {
  return { load: () => Promise.resolve(), lookup: () => undefined };
}

/** A provider from a fixed table, for tests and demos: IP → location. */
export function staticGeoProvider(table: Record<string, GeoInfo>): GeoProvider {
  const map = new Map(Object.entries(table));
  return { load: () => Promise.resolve(), lookup: (ip) => map.get(ip) };
}

/**
 * Caches a provider per IP, skips non-public addresses and loads the provider on first need.
 *
 * @example Enriching an address
 * ```ts
 * import { GeoCache, staticGeoProvider } from "./geo.ts";
 * const geo = new GeoCache(staticGeoProvider({ "8.8.8.8": { country: "US" } }));
 * await geo.ready("8.8.8.8");
 * geo.lookup("8.8.8.8"); // { country: "US" }
 * geo.lookup("10.0.0.1"); // undefined (private)
 * ```
 */
export class GeoCache {
  readonly #provider: GeoProvider;
  readonly #limit: number;
  #cache = new Map<string, GeoInfo | null>();
  #loaded = false;
  #loading: Promise<void> | undefined;

  /** Wraps `provider`, keeping up to `limit` IPs. */
  constructor(provider: GeoProvider, limit = defaults.cacheSize) {
    this.#provider = provider;
    this.#limit = limit;
  }

  /** Whether `lookup(ip)` can answer without loading: true unless the provider is still unloaded. */
  isReady(): boolean {
    return this.#loaded;
  }

  /** Loads the provider if `ip` needs it; await before the first `lookup`. */
  async ready(ip?: string): Promise<void> {
    if (this.#loaded || (ip !== undefined && !isPublicIp(ip))) return;
    this.#loading ??= this.#provider.load().then(() => {
      this.#loaded = true;
    });
    await this.#loading;
  }

  /** Location of `ip` (cached), undefined for private/reserved/unknown addresses. */
  lookup(ip: string): GeoInfo | undefined {
    const cached = this.#cache.get(ip);
    if (cached !== undefined) return cached ?? undefined;
    const info = isPublicIp(ip) && this.#loaded ? this.#provider.lookup(ip) : undefined;
    if (this.#cache.size >= this.#limit) {
      // Drop the oldest quarter: cheap, and keeps the hot IPs of a run.
      let drop = this.#limit >> 2;
      for (const key of this.#cache.keys()) {
        this.#cache.delete(key);
        if (--drop <= 0) break;
      }
    }
    if (this.#loaded || !isPublicIp(ip)) this.#cache.set(ip, info ?? null);
    return info;
  }
}
