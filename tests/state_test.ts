import assert from "node:assert/strict";
import { Dedupe, hash64, Hash64Set } from "../core/dedupe.ts";
import {
  approximateSize,
  Commit,
  KV_LIMITS,
  Lease,
  StateCache,
  StateStore,
} from "../core/state.ts";
import { tempDir } from "./helpers/records.ts";

Deno.test("StateCache reads through once, writes back only at flush, and namespaces detectors", async () => {
  const store = await StateStore.open(":memory:");
  try {
    await store.kv.set(["det", "a", "user", "alice"], { n: 1 });
    const cache = new StateCache(store);
    const a = cache.forDetector("a");
    const b = cache.forDetector("b");
    assert.deepEqual(await a.get(["user", "alice"]), { n: 1 });
    assert.equal(await b.get(["user", "alice"]), undefined);
    a.set(["user", "alice"], { n: 2 });
    b.set(["user", "bob"], { n: 9 }, { expireIn: 60_000 });
    assert.deepEqual(await a.get(["user", "alice"]), { n: 2 });
    assert.deepEqual((await store.kv.get(["det", "a", "user", "alice"])).value, { n: 1 });
    assert.equal(cache.dirtyCount, 2);
    assert.ok(cache.dirtyBytes > 0);
    const commit = new Commit();
    cache.flush(commit);
    assert.equal(commit.size, 2);
    await store.commit(commit);
    assert.deepEqual((await store.kv.get(["det", "a", "user", "alice"])).value, { n: 2 });
    assert.deepEqual((await store.kv.get(["det", "b", "user", "bob"])).value, { n: 9 });
    a.delete(["user", "alice"]);
    const del = new Commit();
    cache.flush(del);
    await store.commit(del);
    assert.equal((await store.kv.get(["det", "a", "user", "alice"])).value, null);
  } finally {
    store.close();
  }
});

Deno.test('StateCache keeps 1 and "1" apart, compares byte parts by content, and evicts only clean entries', async () => {
  const store = await StateStore.open(":memory:");
  try {
    const cache = new StateCache(store, 4);
    cache.set(["det", "a", 1], "number");
    cache.set(["det", "a", "1"], "string");
    cache.set(["det", "a", new Uint8Array([1, 2])], "bytes");
    assert.equal(cache.peek(["det", "a", 1])?.value, "number");
    assert.equal(cache.peek(["det", "a", "1"])?.value, "string");
    assert.equal(cache.peek(["det", "a", new Uint8Array([1, 2])])?.value, "bytes");
    assert.equal(cache.peek(["det", "a", 2]), undefined);
    assert.equal(cache.peek(["det", "a"]), undefined, "a prefix is not an entry");
    const commit = new Commit();
    cache.flush(commit);
    await store.commit(commit);
    assert.equal((await store.kv.get(["det", "a", new Uint8Array([1, 2])])).value, "bytes");
    cache.set(["det", "b", "dirty"], "kept");
    for (let i = 0; i < 8; i++) await cache.get(["det", "c", i]);
    assert.equal(cache.peek(["det", "a", 1]), undefined, "the oldest clean entries are evicted");
    assert.equal(cache.peek(["det", "b", "dirty"])?.value, "kept", "a dirty entry never is");
    assert.equal(await cache.get(["det", "a", 1]), "number", "an evicted entry is read again");
  } finally {
    store.close();
  }
});

Deno.test("StateCache.assumeEmpty() answers reads of an empty namespace without KV, until a written entry leaves the cache", async () => {
  const store = await StateStore.open(":memory:");
  try {
    const cache = new StateCache(store, 4);
    cache.assumeEmpty("a");
    // Written behind the cache's back: an empty namespace is never read, so this stays unseen.
    await store.kv.set(["det", "a", "k", 1], "hidden");
    await store.kv.set(["det", "b", "k", 1], "seen");
    const a = cache.forDetector("a");
    assert.equal(await a.get(["k", 1]), undefined);
    assert.equal(await cache.prefetch([["det", "a", "k", 2], ["det", "b", "k", 1]]), 1);
    const absent = cache.peek(["det", "a", "k", 2]);
    assert.ok(absent, "cached as absent");
    assert.equal(absent.value, undefined);
    assert.equal(cache.peek(["det", "b", "k", 1])?.value, "seen");
    // A value written to the namespace is committed; once it is evicted the cache can no longer
    // vouch for the namespace, and reads go to KV again.
    a.set(["k", 3], "written");
    const commit = new Commit();
    cache.flush(commit);
    await store.commit(commit);
    for (let i = 10; i < 20; i++) await cache.forDetector("c").get(["k", i]);
    assert.equal(cache.peek(["det", "a", "k", 3]), undefined);
    assert.equal(await cache.forDetector("a").get(["k", 4]), undefined);
    await store.kv.set(["det", "a", "k", 5], "now read");
    assert.equal(await a.get(["k", 5]), "now read");
  } finally {
    store.close();
  }
});

Deno.test("Commit.fits() keeps a commit inside Deno KV's limits", () => {
  const commit = new Commit();
  for (let i = 0; i < 980; i++) commit.set(["k", i], 1);
  assert.equal(commit.fits(5), true);
  assert.equal(commit.fits(20), false);
  const big = new Commit().set(["big"], "x".repeat(400_000));
  assert.equal(big.fits(1, 10), false);
});

Deno.test("Commit.seal() fixes what is written; mutations staged after it join at commit", async () => {
  const store = await StateStore.open(":memory:");
  try {
    const live = { logins: [1] };
    const commit = new Commit().set(["det", "a"], live);
    store.seal(commit);
    live.logins.push(2); // the pass goes on with the staged object
    commit.set(["det", "b"], "later").delete(["det", "gone"]);
    await store.commit(commit);
    assert.deepEqual((await store.kv.get(["det", "a"])).value, { logins: [1] });
    assert.equal((await store.kv.get(["det", "b"])).value, "later");
  } finally {
    store.close();
  }
});

Deno.test("Commit.reserve() holds room that fits() counts until release()", () => {
  const commit = new Commit();
  for (let i = 0; i < 900; i++) commit.set(["k", i], 1);
  assert.equal(commit.fits(50), true);
  commit.reserve(60, 0);
  assert.equal(commit.fits(50), false, "60 reserved + 900 staged + 50 is too many");
  assert.equal(commit.size, 900, "nothing is staged by reserving");
  commit.release();
  assert.equal(commit.fits(50), true);
  commit.reserve(0, 500_000);
  assert.equal(commit.fits(1, 200_000), false, "reserved bytes count too");
});

Deno.test("approximateSize() follows the JSON size of state and alert values", () => {
  const login = (
    i: number,
  ) => [1763000000000 + i, `event-${i}`, "203.0.113.7", "GB", 51.5142, -0.0931];
  const samples: unknown[] = [
    Array.from({ length: 40 }, (_, i) => login(i)),
    { first: [1763000000000, "e-1"], d: [[20404, 3]], k: { "user|alice|GB|US|2026-11-18": "" } },
    { id: "ab12", title: "Impossible travel for alice: GB → US", details: { n: [1, 2, 3] } },
    { nested: { deeper: { deepest: ["x".repeat(500)] } }, flag: true, nothing: null },
  ];
  for (const value of samples) {
    const json = JSON.stringify(value).length;
    const size = approximateSize(value);
    assert.ok(size >= json * 0.9 && size <= json * 1.5 + 32, `${size} vs JSON ${json}`);
  }
  assert.equal(approximateSize(new Uint8Array(1000)) >= 1000, true);
  assert.equal(approximateSize("x".repeat(100)), 200);
  // Staged sizes add up, so a commit of growing values is closed before KV's byte limit.
  const commit = new Commit();
  for (let i = 0; commit.fits(1, 20_000); i++) commit.set(["day", i], samples[0]);
  assert.ok(commit.bytes <= KV_LIMITS.bytes * 0.75 && commit.bytes > KV_LIMITS.bytes * 0.7);
});

Deno.test("Lease: a second holder waits or gives up, and a lapsed lease is taken over", async () => {
  const dir = await tempDir();
  const path = `${dir.path}/state.kv`;
  const one = await StateStore.open(path);
  const two = await StateStore.open(path);
  try {
    const first = await Lease.acquire(one, { ttlMs: 300, waitMs: 0 });
    assert.ok(first);
    let waited = false;
    assert.equal(await Lease.acquire(two, { ttlMs: 300, waitMs: 0 }), undefined);
    const holder = await Lease.holder(two);
    assert.equal(holder?.pid, Deno.pid);
    // Released → the waiting one gets it.
    const pending = Lease.acquire(two, {
      ttlMs: 300,
      waitMs: 2_000,
      onWait: () => (waited = true),
    });
    await new Promise((r) => setTimeout(r, 100));
    await first.release();
    const second = await pending;
    assert.ok(second);
    assert.equal(waited, true);
    // The holder "dies": stop renewing by simulating a crash (no release, renewal timer stopped).
    await one.kv.set(["lease"], {
      owner: "dead",
      pid: 999999,
      host: "gone",
      since: "then",
      expires: Date.now() + 200,
    });
    const third = await Lease.acquire(one, { ttlMs: 300, waitMs: 2_000 });
    assert.ok(third, "a lapsed lease is taken over");
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(second.lost.aborted, true, "the overwritten holder learns it lost the lease");
    await third.release();
    await second.release();
  } finally {
    one.close();
    two.close();
    await dir.cleanup();
  }
});

Deno.test("Lease: renewals slower than their interval do not take the lease for lost", async () => {
  const store = await StateStore.open(":memory:");
  try {
    const lease = await Lease.acquire(store, { ttlMs: 150, waitMs: 0 });
    assert.ok(lease);
    // Every read answers 120 ms late (a loaded machine) while renewals start every 50 ms.
    const get = store.kv.get.bind(store.kv);
    store.kv.get = (async (key: Deno.KvKey) => {
      const entry = await get(key);
      await new Promise((resolve) => setTimeout(resolve, 120));
      return entry;
    }) as typeof store.kv.get;
    await new Promise((resolve) => setTimeout(resolve, 600));
    assert.equal(lease.lost.aborted, false, "no other process ever took it");
    store.kv.get = get;
    await lease.release();
    assert.equal(await Lease.holder(store), undefined);
  } finally {
    store.close();
  }
});

Deno.test("hash64 spreads ids and Hash64Set stores pairs without false positives", () => {
  const set = new Hash64Set(4);
  const seen = new Set<string>();
  for (let i = 0; i < 50_000; i++) {
    const [h1, h2] = hash64(`event-${i}:111122223333`);
    seen.add(`${h1}:${h2}`);
    assert.equal(set.add(h1, h2), true);
  }
  assert.equal(seen.size, 50_000);
  assert.equal(set.size, 50_000);
  for (let i = 0; i < 50_000; i += 997) {
    assert.equal(set.has(...hash64(`event-${i}:111122223333`)), true);
  }
  for (let i = 0; i < 1000; i++) assert.equal(set.has(...hash64(`other-${i}`)), false);
  assert.equal(set.add(...hash64("event-5:111122223333")), false);
});

Deno.test("hash64(text, suffix) equals the hash of text:suffix, and Dedupe.check's account joins the id so", async () => {
  assert.deepEqual(hash64("e-1", "123"), hash64("e-1:123"));
  assert.deepEqual(hash64("e-1", ""), hash64("e-1:"));
  assert.notDeepEqual(hash64("e-1", "123"), hash64("e-1:124"));
  const store = await StateStore.open(":memory:");
  try {
    const t = Date.parse("2026-11-18T08:15:00Z");
    const dedupe = new Dedupe(store);
    assert.equal(await dedupe.check("e-1:123", t), false);
    assert.equal(await dedupe.check("e-1", t, "123"), true, "ids written before this change match");
    assert.equal(await dedupe.check("e-1", t, "456"), false, "another account's event");
  } finally {
    store.close();
  }
});

Deno.test("Dedupe remembers committed ids across instances, by event hour", async () => {
  const store = await StateStore.open(":memory:");
  try {
    const t = Date.parse("2026-11-18T08:15:00Z");
    const first = new Dedupe(store);
    assert.equal(await first.check("e1:1", t), false);
    assert.equal(await first.check("e1:1", t), true);
    assert.equal(await first.check("e2:1", t + 3_600_000), false);
    assert.equal(first.pending, 2);
    const commit = new Commit();
    first.flush(commit);
    assert.equal(commit.size, 2); // one value per hour touched
    await store.commit(commit);
    const second = new Dedupe(store);
    assert.equal(await second.check("e1:1", t), true);
    assert.equal(await second.check("e2:1", t + 3_600_000), true);
    assert.equal(await second.check("e3:1", t), false);
    // Not committed → forgotten.
    second.discardPending();
    const third = new Dedupe(store);
    assert.equal(await third.check("e3:1", t), false);
  } finally {
    store.close();
  }
});

Deno.test("Dedupe keeps at most maxHashes in memory and reads an evicted hour again from KV", async () => {
  const store = await StateStore.open(":memory:");
  try {
    const hour = 3_600_000;
    const t = Date.parse("2026-11-18T08:15:00Z");
    const dedupe = new Dedupe(store, { maxHashes: 100 });
    for (let h = 0; h < 3; h++) {
      for (let i = 0; i < 80; i++) {
        assert.equal(await dedupe.check(`e${h}-${i}:1`, t + h * hour), false);
      }
      const commit = new Commit();
      dedupe.flush(commit);
      await store.commit(commit);
    }
    // Only the hour in use is still held: the others must be loaded (a promise) to be answered.
    const held = dedupe.check("e2-5:1", t + 2 * hour);
    assert.equal(held, true);
    const evicted = dedupe.check("e0-5:1", t);
    assert.ok(evicted instanceof Promise);
    assert.equal(await evicted, true);
    assert.equal(await dedupe.check("e0-new:1", t), false);
  } finally {
    store.close();
  }
});
