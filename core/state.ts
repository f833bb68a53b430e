/**
 * State in Deno KV: the store, atomic commits, a write-back cache for detector state, and the
 * lease that keeps two processes from working on one state at once.
 *
 * Key layout (all under the one KV database):
 * - `["src", source, …]` source checkpoints (owned by each source)
 * - `["progress", source, object]` records already committed of a partly processed object
 * - `["det", detector, …]` detector state
 * - `["dedupe", hour, writeId]` packed eventID hashes (see dedupe.ts)
 * - `["alert", id]`, `["outbox", sink, seq, id]`, `["dead", sink, id]`, `["suppressed", id]` outbox
 * - `["lease"]` the process lease
 *
 * @module
 */

import { hostname } from "node:os";
import { log } from "./log.ts";

/** KV limits per atomic commit (Deno 2.x): mutations, total bytes (values + keys). */
export const KV_LIMITS = { mutations: 1000, bytes: 819_200, keyBytes: 81_920, valueBytes: 65_536 };

/** One staged KV mutation. */
export type Mutation =
  | { type: "set"; key: Deno.KvKey; value: unknown; expireIn?: number }
  | { type: "delete"; key: Deno.KvKey };

/**
 * About the bytes `value` takes once serialized (as JSON text would), counted by walking it:
 * `JSON.stringify` cost ~7× more on detector state, mostly in printing coordinates.
 */
export function approximateSize(value: unknown): number {
  if (typeof value === "string") return value.length * 2;
  return sizeOf(value, 0) + 16;
}

function sizeOf(value: unknown, depth: number): number {
  switch (typeof value) {
    case "string":
      return value.length + 3;
    case "number":
    case "bigint":
      return 9;
    case "object":
      break;
    default:
      return 2;
  }
  if (value === null) return 2;
  // Deeper than any state or alert: cut the walk short (KV refuses what is too big anyway).
  if (depth > 32) return 1024;
  // Numbers and strings are counted in the loops rather than by a call each: state values are
  // mostly arrays of tuples of them, and the calls cost more than the counting.
  if (Array.isArray(value)) {
    let size = 2;
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      size += 1 +
        (typeof item === "number"
          ? 9
          : typeof item === "string"
          ? item.length + 3
          : sizeOf(item, depth + 1));
    }
    return size;
  }
  if (ArrayBuffer.isView(value)) return value.byteLength + 8;
  if (value instanceof ArrayBuffer) return value.byteLength + 8;
  if (value instanceof Date) return 9;
  let size = 2;
  if (value instanceof Map) {
    for (const [k, v] of value) size += sizeOf(k, depth + 1) + sizeOf(v, depth + 1) + 2;
    return size;
  }
  if (value instanceof Set) {
    for (const v of value) size += sizeOf(v, depth + 1) + 1;
    return size;
  }
  for (const key in value) {
    const item = (value as Record<string, unknown>)[key];
    size += key.length + 4 +
      (typeof item === "number"
        ? 9
        : typeof item === "string"
        ? item.length + 3
        : sizeOf(item, depth + 1));
  }
  return size;
}

function keySize(key: Deno.KvKey): number {
  let size = 2;
  for (const part of key) size += typeof part === "string" ? part.length + 2 : 10;
  return size;
}

const LOCKED = /database is locked|database is busy/i;

/**
 * Runs a KV write, retrying while another process holds SQLite's write lock on the same file
 * (Deno KV reports it at once as "database is locked": two processes racing for the lease, or a
 * waiting process taking a lapsed lease while the old holder's last write lands).
 */
export async function whenUnlocked<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await write();
    } catch (error) {
      if (attempt >= 200 || !LOCKED.test(String(error))) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.random() * 20));
    }
  }
}

/**
 * Mutations staged for one atomic KV commit. Sizes are tracked so the pipeline can close a
 * chunk before a commit would exceed KV's limits.
 */
export class Commit {
  /** The staged mutations, in order. */
  readonly mutations: Mutation[] = [];
  /** Approximate bytes of values staged so far. */
  bytes = 0;
  /** Approximate bytes of keys staged so far. */
  keyBytes = 0;
  /** Room held for mutations staged later (see {@link Commit.reserve}). */
  #reserved = { mutations: 0, bytes: 0 };
  /** The mutations serialized so far (see {@link Commit.seal}), and how many. */
  #op: Deno.AtomicOperation | undefined;
  #sealed = 0;

  /** Stages a set; `expireIn` in milliseconds; `size` if the caller measured the value. */
  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number; size?: number }): this {
    this.mutations.push({ type: "set", key, value, expireIn: options?.expireIn });
    this.bytes += options?.size ?? approximateSize(value);
    this.keyBytes += keySize(key);
    return this;
  }

  /** Stages a delete. */
  delete(key: Deno.KvKey): this {
    this.mutations.push({ type: "delete", key });
    this.keyBytes += keySize(key);
    return this;
  }

  /**
   * Serializes the mutations staged so far into an atomic operation on `kv` (the later ones join
   * it at the next call): what they write is fixed now, although the staged objects, live
   * detector state, go on changing. A commit that waits for another must be sealed when staged.
   */
  seal(kv: Deno.Kv): Deno.AtomicOperation {
    const op = this.#op ??= kv.atomic();
    for (; this.#sealed < this.mutations.length; this.#sealed++) {
      const m = this.mutations[this.#sealed];
      if (m.type === "set") {
        op.set(m.key, m.value, m.expireIn ? { expireIn: m.expireIn } : undefined);
      } else op.delete(m.key);
    }
    return op;
  }

  /** Number of staged mutations. */
  get size(): number {
    return this.mutations.length;
  }

  /**
   * Holds room for `mutations` more (of about `bytes` bytes) that will be staged after others
   * fill the commit: {@link Commit.fits} counts them until {@link Commit.release}.
   */
  reserve(mutations: number, bytes: number): this {
    this.#reserved = { mutations, bytes };
    return this;
  }

  /** Gives back the room held by {@link Commit.reserve} (its mutations are being staged). */
  release(): this {
    this.#reserved = { mutations: 0, bytes: 0 };
    return this;
  }

  /** Whether adding `mutations` more (of about `bytes` bytes) would stay within KV's limits. */
  fits(mutations: number, bytes = 0): boolean {
    return this.mutations.length + this.#reserved.mutations + mutations <=
        KV_LIMITS.mutations - 10 &&
      this.bytes + this.#reserved.bytes + bytes <= KV_LIMITS.bytes * 0.75 &&
      this.keyBytes <= KV_LIMITS.keyBytes * 0.75;
  }
}

/** Options of {@link StateStore.open}. */
export interface StateOptions {
  /** Do not write anything (the `--dry-run` flag): commits are dropped after counting. */
  dryRun?: boolean;
}

/** The Deno KV store behind trailwatch. */
export class StateStore {
  /** The KV database. */
  readonly kv: Deno.Kv;
  /** Whether commits are dropped. */
  readonly dryRun: boolean;
  /** Path it was opened from (`:memory:`, a file, or "" for Deno Deploy's default). */
  readonly path: string;

  private constructor(kv: Deno.Kv, path: string, options: StateOptions) {
    this.kv = kv;
    this.path = path;
    this.dryRun = options.dryRun ?? false;
  }

  /**
   * Opens the store: a file path (its folder is created), `:memory:`, or `""` for the default
   * KV (Deno Deploy).
   */
  static async open(path: string, options: StateOptions = {}): Promise<StateStore> {
    if (path && path !== ":memory:") {
      const slash = path.lastIndexOf("/");
      if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
    }
    // Two processes creating the same new KV file at the same instant can see "database is
    // locked" while SQLite sets it up; it clears within milliseconds.
    for (let attempt = 1;; attempt++) {
      try {
        const kv = await Deno.openKv(path || undefined);
        return new StateStore(kv, path, options);
      } catch (error) {
        if (attempt >= 20 || !LOCKED.test(String(error))) throw error;
        await new Promise((resolve) => setTimeout(resolve, 25 * attempt));
      }
    }
  }

  /** Reads one value. */
  async get<T>(key: Deno.KvKey): Promise<T | undefined> {
    const entry = await this.kv.get<T>(key);
    return entry.value ?? undefined;
  }

  /** Lists values under a prefix, in key order. */
  async *list<T>(
    prefix: Deno.KvKey,
    options: Deno.KvListOptions = {},
  ): AsyncGenerator<Deno.KvEntry<T>> {
    yield* this.kv.list<T>({ prefix }, options);
  }

  /** Fixes what `commit` writes so far (see {@link Commit.seal}). No-op in dry-run mode. */
  seal(commit: Commit): void {
    if (!this.dryRun) commit.seal(this.kv);
  }

  /** Commits staged mutations atomically; throws if KV refuses them. No-op in dry-run mode. */
  async commit(commit: Commit): Promise<void> {
    if (commit.size === 0 || this.dryRun) return;
    const op = commit.seal(this.kv);
    const result = await whenUnlocked(() => op.commit());
    if (!result.ok) throw new Error("state commit was rejected by Deno KV");
  }

  /** Closes the database. */
  close(): void {
    try {
      this.kv.close();
    } catch {
      // already closed
    }
  }
}

interface CacheEntry {
  key: Deno.KvKey;
  value: unknown;
  /** clean, dirty (written at the next commit) or lazy (written when an object ends). */
  state: "clean" | "dirty" | "lazy";
  expireIn?: number;
  /** Size when last measured (0: never). */
  size: number;
}

/** Options of {@link DetectorState.set}. */
export interface SetOptions {
  /** Time to live (ms) from the write. */
  expireIn?: number;
  /**
   * A refresh whose loss would not matter much (e.g. stretching the end of a known visit): it is
   * written when the object ends (or with the next commit that has room) instead of forcing a
   * commit. A crash may lose lazy writes made since the object's last commit; never a structural
   * change, alert or checkpoint.
   */
  lazy?: boolean;
}

/** One detector's view of its state: keys are relative to the detector's namespace. */
export interface DetectorState {
  /** Reads a value (cached for the pass). */
  get<T>(key: Deno.KvKey): Promise<T | undefined>;
  /**
   * The value if it is already in the pass cache (`{value}`, value possibly undefined), else
   * undefined: lets a hot path skip the promise of {@link DetectorState.get}.
   */
  peek<T>(key: Deno.KvKey): { readonly value: T | undefined } | undefined;
  /** Writes a value; it is committed atomically with the alerts of the same chunk. */
  set(key: Deno.KvKey, value: unknown, options?: SetOptions): void;
  /** Deletes a value at the next commit. */
  delete(key: Deno.KvKey): void;
}

/** A node of the cache's trie: one per key prefix. */
interface Node {
  entry?: CacheEntry;
  kids?: Map<unknown, Node>;
}

/**
 * A key part as a Map key: strings, numbers, bigints and booleans are told apart by Map itself
 * (as KV tells them apart); bytes are compared by content.
 */
function partId(part: Deno.KvKeyPart): unknown {
  return part instanceof Uint8Array ? `\u0003${part.join(",")}` : part;
}

/**
 * Write-back cache over detector state for one pass. Reads hit KV once per key; writes stay in
 * memory until {@link StateCache.flush} stages them into the chunk's commit. One pass at a time
 * writes a state (the lease), so the cache is authoritative while the pass runs.
 *
 * Entries sit in a trie of key parts, so that a lookup walks the parts the caller already holds
 * instead of building and hashing one string per key (detectors look up a key per event).
 */
export class StateCache {
  readonly #store: StateStore;
  readonly #limit: number;
  #root: Node = {};
  /** Every entry, oldest first (eviction order). */
  #entries = new Set<CacheEntry>();
  #dirty = new Set<CacheEntry>();
  #lazy = new Set<CacheEntry>();
  #dirtyBytes = 0;
  /** Namespaces known to have no key in KV (see {@link StateCache.assumeEmpty}). */
  #empty = new Set<string>();

  /** Caches `store`, keeping at most about `limit` clean entries. */
  constructor(store: StateStore, limit = 200_000) {
    this.#store = store;
    this.#limit = limit;
  }

  /** Number of entries waiting for the next commit (lazy ones not counted). */
  get dirtyCount(): number {
    return this.#dirty.size;
  }

  /** Number of lazy writes waiting. */
  get lazyCount(): number {
    return this.#lazy.size;
  }

  /** The namespaced state of one detector. */
  forDetector(name: string): DetectorState {
    const scope = ["det", name];
    const scoped = (key: Deno.KvKey): Deno.KvKey => [...scope, ...key];
    // The namespace's node, found again after clear() replaced the trie.
    let root: Node | undefined;
    let base: Node = {};
    const at = () => {
      if (root !== this.#root) {
        root = this.#root;
        base = this.#node(root, scope, 0);
      }
      return base;
    };
    return {
      get: (key) => this.#get(at(), key, scoped),
      peek: <T>(key: Deno.KvKey) =>
        find(at(), key, 0) as { readonly value: T | undefined } | undefined,
      set: (key, value, options) =>
        this.#set(at(), key, scoped, value, options?.expireIn, options?.lazy),
      delete: (key) => this.#set(at(), key, scoped, undefined),
    };
  }

  /**
   * Declares that KV holds no key under `["det", namespace]` (checked at the start of a pass):
   * reads of keys in it are answered "absent" without asking KV, until an entry that was
   * written there leaves the cache.
   */
  assumeEmpty(namespace: string): void {
    this.#empty.add(namespace);
  }

  /** The cached value of `key` (`{value}`), or undefined when it is not cached. */
  peek<T>(key: Deno.KvKey): { readonly value: T | undefined } | undefined {
    return find(this.#root, key, 0) as { readonly value: T | undefined } | undefined;
  }

  /** Whether `key` is known to be absent from KV (its namespace was empty). */
  #absent(key: Deno.KvKey): boolean {
    return this.#empty.size > 0 && key[0] === "det" && this.#empty.has(key[1] as string);
  }

  /** The node of `key` under `from` (its parts from `start` on), created as needed. */
  #node(from: Node, key: Deno.KvKey, start: number): Node {
    let node = from;
    for (let i = start; i < key.length; i++) {
      const id = partId(key[i]);
      const kids = node.kids ??= new Map();
      let next = kids.get(id);
      if (!next) kids.set(id, next = {});
      node = next;
    }
    return node;
  }

  #add(node: Node, entry: CacheEntry): void {
    node.entry = entry;
    this.#entries.add(entry);
  }

  /** Reads a value through the cache. */
  get<T>(key: Deno.KvKey): Promise<T | undefined> {
    return this.#get(this.#root, key, (k) => k);
  }

  async #get<T>(
    base: Node,
    relative: Deno.KvKey,
    scope: (key: Deno.KvKey) => Deno.KvKey,
  ): Promise<T | undefined> {
    const hit = find(base, relative, 0);
    if (hit) return hit.value as T | undefined;
    const key = scope(relative);
    if (this.#absent(key)) {
      this.#add(this.#node(base, relative, 0), { key, value: undefined, state: "clean", size: 0 });
      this.#evict();
      return undefined;
    }
    const root = this.#root;
    const value = await this.#store.get<T>(key);
    if (root !== this.#root) return value; // cleared meanwhile: keep nothing
    // A write may have landed while we awaited.
    const node = this.#node(base, relative, 0);
    if (node.entry) return node.entry.value as T | undefined;
    this.#add(node, { key, value, state: "clean", size: 0 });
    this.#evict();
    return value;
  }

  /**
   * Reads the keys not cached yet, ten per KV call, the calls in parallel, so a batch of events
   * waits for one round trip instead of one per new key. Returns how many keys it read.
   */
  async prefetch(keys: Iterable<Deno.KvKey>): Promise<number> {
    const unique: Deno.KvKey[] = [];
    const seen = new Set<Node>();
    for (const key of keys) {
      const node = this.#node(this.#root, key, 0);
      if (node.entry || seen.has(node)) continue;
      if (this.#absent(key)) this.#add(node, { key, value: undefined, state: "clean", size: 0 });
      else {
        seen.add(node);
        unique.push(key);
      }
    }
    if (unique.length === 0) {
      this.#evict();
      return 0;
    }
    const root = this.#root;
    const reads: Promise<void>[] = [];
    for (let i = 0; i < unique.length; i += 10) {
      const part = unique.slice(i, i + 10);
      reads.push(
        this.#store.kv.getMany(part).then((entries) => {
          if (root !== this.#root) return;
          entries.forEach((entry, j) => {
            const node = this.#node(root, part[j], 0);
            // A write may have landed while we awaited.
            if (!node.entry) {
              this.#add(node, {
                key: entry.key,
                value: entry.value ?? undefined,
                state: "clean",
                size: 0,
              });
            }
          });
        }),
      );
    }
    await Promise.all(reads);
    this.#evict();
    return unique.length;
  }

  /** Writes a value (undefined deletes) through the cache; `lazy`: see {@link SetOptions}. */
  set(key: Deno.KvKey, value: unknown, expireIn?: number, lazy = false): void {
    this.#set(this.#root, key, (k) => k, value, expireIn, lazy);
  }

  #set(
    base: Node,
    relative: Deno.KvKey,
    scope: (key: Deno.KvKey) => Deno.KvKey,
    value: unknown,
    expireIn?: number,
    lazy = false,
  ): void {
    const node = this.#node(base, relative, 0);
    const entry = node.entry;
    if (entry) {
      entry.value = value;
      entry.expireIn = expireIn;
      // Measured once per commit: detectors keep their values bounded, and a hot key is set on
      // nearly every event (re-measuring it each time cost more than the detection).
      if (entry.state === "dirty" || (lazy && entry.state === "lazy")) return;
      if (lazy) {
        entry.state = "lazy";
        this.#lazy.add(entry);
        return;
      }
      if (entry.state === "lazy") this.#lazy.delete(entry);
      entry.state = "dirty";
      // A value written before is counted at its last measured size; a new one is measured once.
      if (entry.size === 0) entry.size = approximateSize(value);
      this.#dirtyBytes += entry.size;
      this.#dirty.add(entry);
      return;
    }
    const fresh: CacheEntry = {
      key: scope(relative),
      value,
      state: lazy ? "lazy" : "dirty",
      expireIn,
      size: 0,
    };
    this.#add(node, fresh);
    if (lazy) this.#lazy.add(fresh);
    else {
      fresh.size = approximateSize(value);
      this.#dirtyBytes += fresh.size;
      this.#dirty.add(fresh);
    }
  }

  /** Approximate bytes of the dirty values. */
  get dirtyBytes(): number {
    return this.#dirtyBytes;
  }

  #stage(commit: Commit, entry: CacheEntry): void {
    if (entry.value === undefined) commit.delete(entry.key);
    else {
      entry.size = approximateSize(entry.value);
      commit.set(entry.key, entry.value, { expireIn: entry.expireIn, size: entry.size });
    }
    entry.state = "clean";
  }

  /** Stages every dirty entry into `commit` and marks it clean. */
  flush(commit: Commit): void {
    for (const entry of this.#dirty) this.#stage(commit, entry);
    this.#dirty.clear();
    this.#dirtyBytes = 0;
    this.#evict();
  }

  /**
   * Stages the lazy entries that still fit `commit` (at least one, into an empty commit); the
   * rest wait for the next call.
   */
  flushLazy(commit: Commit): void {
    for (const entry of this.#lazy) {
      if (commit.size > 0 && !commit.fits(1, entry.size || 1024)) break;
      this.#stage(commit, entry);
      this.#lazy.delete(entry);
    }
  }

  /** Forgets everything (after a failed commit, the cache may hold uncommitted values). */
  clear(): void {
    this.#empty.clear();
    this.#root = {};
    this.#entries.clear();
    this.#dirty.clear();
    this.#lazy.clear();
    this.#dirtyBytes = 0;
  }

  /** Drops an entry's node (and the nodes left empty above it). */
  #remove(entry: CacheEntry): void {
    const path: Node[] = [this.#root];
    for (const part of entry.key) {
      const next = path[path.length - 1].kids?.get(partId(part));
      if (!next) return;
      path.push(next);
    }
    path[path.length - 1].entry = undefined;
    for (let i = path.length - 1; i > 0; i--) {
      const node = path[i];
      if (node.entry || node.kids?.size) break;
      path[i - 1].kids!.delete(partId(entry.key[i - 1]));
    }
  }

  #evict(): void {
    if (this.#entries.size <= this.#limit) return;
    let drop = this.#entries.size - Math.floor(this.#limit * 0.75);
    for (const entry of this.#entries) {
      if (drop <= 0) break;
      if (entry.state !== "clean") continue;
      // A value written here is in KV now: its namespace is no longer known to be empty.
      if (entry.value !== undefined && this.#empty.size > 0) {
        this.#empty.delete(entry.key[1] as string);
      }
      this.#entries.delete(entry);
      this.#remove(entry);
      drop--;
    }
  }
}

/** The entry at `key` (its parts from `start` on) under `node`, if cached. */
function find(node: Node, key: Deno.KvKey, start: number): CacheEntry | undefined {
  let at: Node | undefined = node;
  for (let i = start; i < key.length && at; i++) at = at.kids?.get(partId(key[i]));
  return at?.entry;
}

/** Who holds the lease. */
export interface LeaseHolder {
  /** Random id of the holding process. */
  owner: string;
  /** Process id. */
  pid: number;
  /** Host name. */
  host: string;
  /** When it was taken (ISO). */
  since: string;
  /** When it lapses unless renewed (epoch ms). */
  expires: number;
}

/** Options of {@link Lease.acquire}. */
export interface LeaseOptions {
  /** How long the lease lasts without renewal (ms); it is renewed every third of that. */
  ttlMs: number;
  /** How long to wait for a held lease before giving up (ms); 0 gives up at once. */
  waitMs: number;
  /** Called with the holder while waiting (once). */
  onWait?: (holder: LeaseHolder) => void;
  /** Aborts the wait. */
  signal?: AbortSignal;
}

const LEASE_KEY = ["lease"];

/**
 * A lease in KV: one process at a time works on a state. A holder that dies stops renewing and
 * its lease lapses after `ttlMs`.
 */
export class Lease {
  readonly #store: StateStore;
  readonly #holder: LeaseHolder;
  readonly #ttlMs: number;
  #versionstamp: string;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lost = new AbortController();
  #renewing = false;

  private constructor(store: StateStore, holder: LeaseHolder, versionstamp: string, ttlMs: number) {
    this.#store = store;
    this.#holder = holder;
    this.#versionstamp = versionstamp;
    this.#ttlMs = ttlMs;
    const timer = setInterval(() => void this.#renew(), Math.max(50, Math.floor(ttlMs / 3)));
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Aborted if the lease was lost (another process took it after it lapsed). */
  get lost(): AbortSignal {
    return this.#lost.signal;
  }

  /** The current holder of the lease on `store`, if any and not lapsed. */
  static async holder(store: StateStore): Promise<LeaseHolder | undefined> {
    const entry = await store.kv.get<LeaseHolder>(LEASE_KEY);
    return entry.value && entry.value.expires > Date.now() ? entry.value : undefined;
  }

  /** Takes the lease, waiting up to `waitMs`; undefined if another live process keeps it. */
  static async acquire(store: StateStore, options: LeaseOptions): Promise<Lease | undefined> {
    const deadline = Date.now() + options.waitMs;
    let told = false;
    while (true) {
      const entry = await store.kv.get<LeaseHolder>(LEASE_KEY);
      const now = Date.now();
      if (!entry.value || entry.value.expires <= now) {
        const holder: LeaseHolder = {
          owner: crypto.randomUUID(),
          pid: Deno.pid,
          host: safeHostname(),
          since: new Date(now).toISOString(),
          expires: now + options.ttlMs,
        };
        const result = await whenUnlocked(() =>
          store.kv.atomic().check(entry).set(LEASE_KEY, holder).commit()
        );
        if (result.ok) {
          if (entry.value) {
            log.warn(
              `took over a lapsed lease from pid ${entry.value.pid} on ${entry.value.host} (held since ${entry.value.since})`,
            );
          }
          return new Lease(store, holder, result.versionstamp, options.ttlMs);
        }
        continue;
      }
      if (now >= deadline || options.signal?.aborted) return undefined;
      if (!told) {
        options.onWait?.(entry.value);
        told = true;
      }
      const pause = Math.min(250, deadline - now, Math.max(10, entry.value.expires - now));
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }

  async #renew(): Promise<void> {
    // One renewal at a time: a renewal that read the lease before another one renewed it would
    // see a versionstamp it does not know and take the lease for lost (a loaded machine, whose
    // reads answer later than the next renewal starts).
    if (this.#renewing) return;
    this.#renewing = true;
    try {
      const entry = await this.#store.kv.get<LeaseHolder>(LEASE_KEY);
      if (entry.versionstamp !== this.#versionstamp) {
        this.#stop();
        this.#lost.abort(new Error("the state lease was taken by another process"));
        return;
      }
      const holder = { ...this.#holder, expires: Date.now() + this.#ttlMs };
      const result = await this.#store.kv.atomic().check(entry).set(LEASE_KEY, holder).commit();
      if (result.ok) this.#versionstamp = result.versionstamp;
    } catch (error) {
      log.debug(`lease renewal failed: ${error}`);
    } finally {
      this.#renewing = false;
    }
  }

  #stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Gives the lease back. */
  async release(): Promise<void> {
    this.#stop();
    try {
      const entry = await this.#store.kv.get(LEASE_KEY);
      if (entry.versionstamp === this.#versionstamp) {
        await this.#store.kv.atomic().check(entry).delete(LEASE_KEY).commit();
      }
    } catch {
      // store closed: the lease lapses on its own
    }
  }
}

function safeHostname(): string {
  try {
    return hostname();
  } catch {
    return "unknown";
  }
}
