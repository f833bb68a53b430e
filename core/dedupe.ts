/**
 * Event deduplication by `eventID` + recipient account, across runs, with an expiry.
 *
 * One KV entry per event would cost more than decoding the event (KV writes ~40k/s here), so
 * 64-bit hashes of the ids are grouped by the event's hour and committed as packed blobs, one KV
 * entry per hour touched per commit: `["dedupe", hour, writeId] → Uint8Array`. An hour's blobs
 * are loaded into an in-memory hash set the first time an event of that hour is seen.
 *
 * @module
 */

import type { Commit, StateStore } from "./state.ts";

const HOUR_MS = 3_600_000;
/** Hashes per KV value (8 bytes each, under KV's 64 KiB value limit). */
const HASHES_PER_VALUE = 7_000;

/**
 * 64-bit hash of a string (with `suffix`: of `${text}:${suffix}`) as two 32-bit halves (two
 * independent 32-bit mixes).
 * Collisions among a billion ids are ~3% likely in total, i.e. never within one hour's events.
 */
export function hash64(text: string, suffix?: string): [number, number] {
  // With a suffix: the hash of `${text}:${suffix}`, without building that string.
  const length = suffix === undefined ? text.length : text.length + 1 + suffix.length;
  let h1 = 0xdeadbeef ^ length;
  let h2 = 0x41c6ce57 ^ length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  if (suffix !== undefined) {
    h1 = Math.imul(h1 ^ 0x3a, 2654435761);
    h2 = Math.imul(h2 ^ 0x3a, 1597334677);
    for (let i = 0; i < suffix.length; i++) {
      const c = suffix.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 2654435761);
      h2 = Math.imul(h2 ^ c, 1597334677);
    }
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  h1 >>>= 0;
  h2 >>>= 0;
  if (h1 === 0 && h2 === 0) h2 = 1; // (0,0) marks an empty slot
  return [h1, h2];
}

/** An open-addressing set of 64-bit hashes stored as pairs in a Uint32Array. */
export class Hash64Set {
  #slots: Uint32Array;
  #mask: number;
  #size = 0;

  /** Creates a set with room for about `capacity` hashes before growing. */
  constructor(capacity = 1024) {
    let slots = 16;
    while (slots < capacity * 2) slots *= 2;
    this.#slots = new Uint32Array(slots * 2);
    this.#mask = slots - 1;
  }

  /** Number of hashes held. */
  get size(): number {
    return this.#size;
  }

  /** Whether the set holds (h1, h2). */
  has(h1: number, h2: number): boolean {
    const slots = this.#slots;
    let i = (h1 ^ Math.imul(h2, 0x9e3779b1)) & this.#mask;
    while (true) {
      const a = slots[i * 2];
      const b = slots[i * 2 + 1];
      if (a === 0 && b === 0) return false;
      if (a === h1 && b === h2) return true;
      i = (i + 1) & this.#mask;
    }
  }

  /** Adds (h1, h2); returns false if it was already there. */
  add(h1: number, h2: number): boolean {
    if ((this.#size + 1) * 2 > this.#mask + 1) this.#grow();
    const slots = this.#slots;
    let i = (h1 ^ Math.imul(h2, 0x9e3779b1)) & this.#mask;
    while (true) {
      const a = slots[i * 2];
      const b = slots[i * 2 + 1];
      if (a === 0 && b === 0) {
        slots[i * 2] = h1;
        slots[i * 2 + 1] = h2;
        this.#size++;
        return true;
      }
      if (a === h1 && b === h2) return false;
      i = (i + 1) & this.#mask;
    }
  }

  #grow(): void {
    const old = this.#slots;
    this.#slots = new Uint32Array(old.length * 2);
    this.#mask = (this.#mask + 1) * 2 - 1;
    this.#size = 0;
    for (let i = 0; i < old.length; i += 2) {
      if (old[i] !== 0 || old[i + 1] !== 0) this.add(old[i], old[i + 1]);
    }
  }
}

interface Bucket {
  seen: Hash64Set;
  pending: number[];
  used: number;
}

/** Options of {@link Dedupe}. */
export interface DedupeOptions {
  /** How long an event id is remembered (ms). */
  ttlMs: number;
  /** Hours kept in memory at once (least recently used evicted when clean). */
  maxHours: number;
  /**
   * Hashes kept in memory at once, over all hours (about 16–32 bytes each): past it, the least
   * recently used clean hours are dropped (and read again if an event of theirs comes back),
   * so memory does not grow with the size of a backfill.
   */
  maxHashes: number;
}

/** Default dedupe options: ids remembered 7 days, 168 hours in memory. */
export const defaults = {
  ttlMs: 7 * 86_400_000,
  maxHours: 168,
  maxHashes: 250_000,
} satisfies DedupeOptions;

/**
 * Remembers which events were processed. `check()` answers for committed events and for those
 * added earlier in the pass; `flush()` stages the new ids into the chunk's commit.
 *
 * @example Skipping an event seen before
 * ```ts
 * import { Dedupe } from "./dedupe.ts";
 * import { StateStore } from "./state.ts";
 * const store = await StateStore.open(":memory:");
 * const dedupe = new Dedupe(store);
 * await dedupe.check("e-1:123", Date.now()); // false: new, and now remembered
 * await dedupe.check("e-1:123", Date.now()); // true: duplicate
 * store.close();
 * ```
 */
export class Dedupe {
  readonly #store: StateStore;
  readonly #options: DedupeOptions;
  #buckets = new Map<number, Bucket>();
  #pendingCount = 0;
  #pendingHours = 0;
  #tick = 0;

  /** Dedupes against `store`. */
  constructor(store: StateStore, options: Partial<DedupeOptions> = {}) {
    this.#store = store;
    this.#options = { ...defaults, ...options };
  }

  /** Number of ids waiting to be committed. */
  get pending(): number {
    return this.#pendingCount;
  }

  /** KV values the next flush will stage (about). */
  get pendingValues(): number {
    return this.#pendingHours + Math.floor(this.#pendingCount / HASHES_PER_VALUE);
  }

  /**
   * Whether the event `id` (seen at `time`, epoch ms; of `account`: the id is then
   * `${id}:${account}`) was processed before. If not, it is remembered now (committed with the
   * next flush). Returns synchronously once the hour is loaded.
   */
  check(id: string, time: number, account?: string): boolean | Promise<boolean> {
    const [h1, h2] = hash64(id, account);
    return this.checkHash(h1, h2, time);
  }

  /** {@link check} for an id whose {@link hash64} is (h1, h2). */
  checkHash(h1: number, h2: number, time: number): boolean | Promise<boolean> {
    const hour = Math.floor(time / HOUR_MS);
    const bucket = this.#buckets.get(hour);
    if (bucket) return this.#checkIn(bucket, h1, h2);
    return this.#checkLoaded(hour, h1, h2);
  }

  // Not a closure in checkHash(): V8 would allocate its context on every call.
  async #checkLoaded(hour: number, h1: number, h2: number): Promise<boolean> {
    return this.#checkIn(await this.#load(hour), h1, h2);
  }

  #checkIn(bucket: Bucket, h1: number, h2: number): boolean {
    bucket.used = ++this.#tick;
    if (!bucket.seen.add(h1, h2)) return true;
    if (bucket.pending.length === 0) this.#pendingHours++;
    bucket.pending.push(h1, h2);
    this.#pendingCount++;
    return false;
  }

  async #load(hour: number): Promise<Bucket> {
    const seen = new Hash64Set();
    for await (const entry of this.#store.list<Uint8Array>(["dedupe", hour])) {
      const bytes = entry.value;
      if (!(bytes instanceof Uint8Array)) continue;
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let i = 0; i + 8 <= bytes.byteLength; i += 8) {
        seen.add(view.getUint32(i, true), view.getUint32(i + 4, true));
      }
    }
    // Another check may have loaded the same hour meanwhile.
    const existing = this.#buckets.get(hour);
    if (existing) return existing;
    const bucket = { seen, pending: [], used: ++this.#tick };
    this.#buckets.set(hour, bucket);
    this.#evict();
    return bucket;
  }

  /** Stages every pending id into `commit` (one KV value per hour touched). */
  flush(commit: Commit): void {
    const writeId = `${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`;
    for (const [hour, bucket] of this.#buckets) {
      const pending = bucket.pending;
      if (pending.length === 0) continue;
      for (let start = 0, part = 0; start < pending.length; start += HASHES_PER_VALUE * 2, part++) {
        const slice = pending.slice(start, start + HASHES_PER_VALUE * 2);
        const bytes = new Uint8Array(slice.length * 4);
        const view = new DataView(bytes.buffer);
        for (let i = 0; i < slice.length; i++) view.setUint32(i * 4, slice[i], true);
        commit.set(["dedupe", hour, `${writeId}-${part}`], bytes, {
          expireIn: this.#options.ttlMs,
        });
      }
      bucket.pending = [];
    }
    this.#pendingCount = 0;
    this.#pendingHours = 0;
    this.#evict();
  }

  /** Drops ids added since the last flush (their chunk was not committed). */
  discardPending(): void {
    // Their hashes are in `seen`; reloading the hours from KV is the simple, correct undo.
    for (const [hour, bucket] of this.#buckets) {
      if (bucket.pending.length) this.#buckets.delete(hour);
    }
    this.#pendingCount = 0;
    this.#pendingHours = 0;
  }

  #evict(): void {
    const { maxHours, maxHashes } = this.#options;
    let hashes = 0;
    for (const bucket of this.#buckets.values()) hashes += bucket.seen.size;
    if (this.#buckets.size <= maxHours && hashes <= maxHashes) return;
    const clean = [...this.#buckets].filter(([, b]) => b.pending.length === 0).sort((a, b) =>
      a[1].used - b[1].used
    );
    for (const [hour, bucket] of clean) {
      if (this.#buckets.size <= maxHours && hashes <= maxHashes) break;
      // The hour in use stays, however big.
      if (bucket.used === this.#tick) break;
      this.#buckets.delete(hour);
      hashes -= bucket.seen.size;
    }
  }
}
