/**
 * IP address parsing, public/private classification and CIDR sets (IPv4 and IPv6).
 *
 * @module
 */

/** A parsed address: IPv4 as a 32-bit number, IPv6 as a 128-bit bigint. */
export type ParsedIp = { v: 4; n: number } | { v: 6; n: bigint };

const V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function parseV4(text: string): number | undefined {
  if (!V4.test(text)) return undefined;
  let n = 0;
  for (const part of text.split(".")) n = n * 256 + Number(part);
  return n;
}

function parseV6(text: string): bigint | undefined {
  let s = text;
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  if (s.length < 2 || s.length > 45 || !/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  const tail: number[] = [];
  const lastColon = s.lastIndexOf(":");
  const lastPart = s.slice(lastColon + 1);
  if (lastPart.includes(".")) {
    // Embedded IPv4 in the last 32 bits, e.g. ::ffff:192.0.2.1
    const v4 = parseV4(lastPart);
    if (v4 === undefined) return undefined;
    tail.push(v4 >>> 16, v4 & 0xffff);
    s = s.slice(0, lastColon + 1);
    if (!s.endsWith("::")) s = s.slice(0, -1);
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const needed = 8 - tail.length;
  const present = head.length + rest.length;
  if (halves.length === 1 ? present !== needed : present > needed - 1) return undefined;
  const zeros = halves.length === 2 ? new Array<string>(needed - present).fill("0") : [];
  let n = 0n;
  for (const group of [...head, ...zeros, ...rest]) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return undefined;
    n = (n << 16n) | BigInt(parseInt(group, 16));
  }
  for (const word of tail) n = (n << 16n) | BigInt(word);
  return n;
}

/** Parses an IPv4 or IPv6 address; `undefined` for anything else ("AWS Internal", host names). */
export function parseIp(text: string): ParsedIp | undefined {
  if (typeof text !== "string" || text.length < 2 || text.length > 64) return undefined;
  const v4 = parseV4(text);
  if (v4 !== undefined) return { v: 4, n: v4 };
  if (text.indexOf(":") < 0) return undefined;
  const v6 = parseV6(text);
  return v6 === undefined ? undefined : { v: 6, n: v6 };
}

/** Whether `text` is an IPv4 or IPv6 address. */
export function isIp(text: string): boolean {
  return parseIp(text) !== undefined;
}

interface Range4 {
  start: number;
  end: number;
}
interface Range6 {
  start: bigint;
  end: bigint;
}

/**
 * A set of IPv4/IPv6 addresses and CIDR ranges with fast membership tests.
 *
 * @example Matching addresses against CIDRs
 * ```ts
 * import { IpSet } from "./ip.ts";
 * const set = IpSet.from(["10.0.0.0/8", "2001:db8::/32", "203.0.113.7"]);
 * set.has("10.1.2.3"); // true
 * set.has("2001:db8::1"); // true
 * set.has("8.8.8.8"); // false
 * ```
 */
export class IpSet {
  #v4: Range4[] = [];
  #v6: Range6[] = [];
  #sorted = true;

  /** Builds a set from addresses and CIDRs; throws a TypeError naming the first bad entry. */
  static from(entries: Iterable<string>): IpSet {
    const set = new IpSet();
    for (const entry of entries) set.add(entry);
    return set;
  }

  /** Number of entries added. */
  get size(): number {
    return this.#v4.length + this.#v6.length;
  }

  /** Adds an address or CIDR (`1.2.3.0/24`, `2001:db8::/32`); throws a TypeError if invalid. */
  add(entry: string): void {
    const text = entry.trim();
    const slash = text.indexOf("/");
    const ip = parseIp(slash >= 0 ? text.slice(0, slash) : text);
    if (!ip) throw new TypeError(`not an IP address or CIDR: ${JSON.stringify(entry)}`);
    const bits = ip.v === 4 ? 32 : 128;
    const prefix = slash >= 0 ? Number(text.slice(slash + 1)) : bits;
    if (
      !Number.isInteger(prefix) || prefix < 0 || prefix > bits ||
      (slash >= 0 && text.slice(slash + 1) === "")
    ) {
      throw new TypeError(`bad prefix length in CIDR: ${JSON.stringify(entry)}`);
    }
    if (ip.v === 4) {
      const size = 2 ** (32 - prefix);
      const start = Math.floor(ip.n / size) * size;
      this.#v4.push({ start, end: start + size - 1 });
    } else {
      const size = 1n << BigInt(128 - prefix);
      const start = (ip.n / size) * size;
      this.#v6.push({ start, end: start + size - 1n });
    }
    this.#sorted = false;
  }

  #sort(): void {
    const merge = <T extends number | bigint>(ranges: { start: T; end: T }[]) => {
      ranges.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
      const out: { start: T; end: T }[] = [];
      for (const r of ranges) {
        const last = out[out.length - 1];
        if (last && r.start <= last.end) {
          if (r.end > last.end) last.end = r.end;
        } else out.push({ ...r });
      }
      return out;
    };
    this.#v4 = merge(this.#v4);
    this.#v6 = merge(this.#v6);
    this.#sorted = true;
  }

  /** Whether `ip` (text or parsed) is inside any entry. */
  has(ip: string | ParsedIp): boolean {
    const parsed = typeof ip === "string" ? parseIp(ip) : ip;
    if (!parsed) return false;
    if (!this.#sorted) this.#sort();
    if (parsed.v === 6) {
      // IPv4-mapped IPv6 (::ffff:a.b.c.d) also matches IPv4 entries.
      if (parsed.n >> 32n === 0xffffn) {
        if (search(this.#v4, Number(parsed.n & 0xffffffffn))) return true;
      }
      return search(this.#v6, parsed.n);
    }
    return search(this.#v4, parsed.n);
  }
}

function search<T extends number | bigint>(ranges: { start: T; end: T }[], n: T): boolean {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid];
    if (n < r.start) hi = mid - 1;
    else if (n > r.end) lo = mid + 1;
    else return true;
  }
  return false;
}

/** Private, loopback, link-local, CGNAT, documentation, multicast and other non-routable ranges. */
const NON_PUBLIC = IpSet.from([
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
  "::/128",
  "::1/128",
  "64:ff9b:1::/48",
  "100::/64",
  "2001:db8::/32",
  "2001::/23",
  "fc00::/7",
  "fe80::/10",
  "ff00::/8",
]);

/** Whether `ip` is a publicly routable address (not private, reserved, loopback, …). */
export function isPublicIp(ip: string | ParsedIp): boolean {
  const parsed = typeof ip === "string" ? parseIp(ip) : ip;
  if (!parsed) return false;
  return !NON_PUBLIC.has(parsed);
}
