import assert from "node:assert/strict";
import { GetObjectCommand } from "@aws-sdk/client-s3";
import { trailFile } from "./helpers/cloudtrail.ts";
import { s3ClientFor, startS3 } from "./helpers/fauxqs.ts";
import { type FaultKind, FAULTS, startFaultProxy } from "./helpers/fault_proxy.ts";

/** A loopback echo server: answers with the method, path, a header and the body it got. */
function startEcho() {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    const body = new Uint8Array(await request.arrayBuffer());
    return new Response(request.method === "HEAD" ? null : body, {
      headers: {
        "x-method": request.method,
        "x-path": new URL(request.url).pathname + new URL(request.url).search,
        "x-token": request.headers.get("x-token") ?? "",
        "x-length": String(body.length),
      },
    });
  });
}

Deno.test("fault proxy forwards requests and bodies unchanged when no fault is set", async () => {
  const echo = startEcho();
  await using proxy = await startFaultProxy({ target: `http://127.0.0.1:${echo.addr.port}` });
  try {
    const payload = new Uint8Array(200_000).map((_, i) => i % 251);
    const post = await fetch(`${proxy.url}/upload?part=1`, {
      method: "POST",
      headers: { "x-token": "abc" },
      body: payload,
    });
    assert.equal(post.status, 200);
    assert.equal(post.headers.get("x-method"), "POST");
    assert.equal(post.headers.get("x-path"), "/upload?part=1");
    assert.equal(post.headers.get("x-token"), "abc");
    assert.deepEqual(new Uint8Array(await post.arrayBuffer()), payload);

    // A chunked request body (a stream of unknown length).
    const chunked = await fetch(`${proxy.url}/stream`, {
      method: "PUT",
      body: ReadableStream.from([new Uint8Array([1, 2, 3]), new Uint8Array([4, 5])]),
    });
    assert.equal(chunked.headers.get("x-length"), "5");
    assert.deepEqual(new Uint8Array(await chunked.arrayBuffer()), new Uint8Array([1, 2, 3, 4, 5]));

    const head = await fetch(`${proxy.url}/h`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("x-method"), "HEAD");

    assert.deepEqual(proxy.counts(), { none: 3 });
    assert.deepEqual(proxy.log.map((r) => [r.method, r.path, r.status]), [
      ["POST", "/upload?part=1", 200],
      ["PUT", "/stream", 200],
      ["HEAD", "/h", 200],
    ]);
  } finally {
    await echo.shutdown();
  }
});

Deno.test("fault proxy injects each fault the way a client sees it", async () => {
  const echo = startEcho();
  await using proxy = await startFaultProxy({
    target: `http://127.0.0.1:${echo.addr.port}`,
    slowMs: 50,
  });
  const only = (kind: FaultKind) => proxy.setRates({ [kind]: 1 });
  try {
    only("internalError");
    let response = await fetch(`${proxy.url}/a`);
    assert.equal(response.status, 500);
    assert.match(await response.text(), /<Code>InternalError<\/Code>/);

    only("slowDown");
    response = await fetch(`${proxy.url}/a`);
    assert.equal(response.status, 503);
    assert.match(await response.text(), /<Code>SlowDown<\/Code>/);

    only("throttle");
    response = await fetch(`${proxy.url}/a`);
    assert.equal(response.status, 429);
    assert.equal(response.headers.get("retry-after"), "0");
    await response.body?.cancel();

    only("reset");
    await assert.rejects(fetch(`${proxy.url}/a`));

    only("truncate");
    response = await fetch(`${proxy.url}/a`, { method: "POST", body: "x".repeat(10_000) });
    assert.equal(response.status, 200);
    await assert.rejects(response.arrayBuffer());

    only("slow");
    response = await fetch(`${proxy.url}/a`, { method: "POST", body: "fine" });
    assert.equal(await response.text(), "fine");

    assert.deepEqual(proxy.log.map((r) => r.fault), [
      "internalError",
      "slowDown",
      "throttle",
      "reset",
      "truncate",
      "slow",
    ]);
    assert.deepEqual(proxy.log.map((r) => r.status), [500, 503, 429, 0, 200, 200]);
  } finally {
    await echo.shutdown();
  }
});

Deno.test("fault proxy picks the same faults for the same seed, at about the configured rates", async () => {
  const echo = startEcho();
  const target = `http://127.0.0.1:${echo.addr.port}`;
  const rates = { internalError: 0.1, slowDown: 0.1, throttle: 0.05 };
  const run = async () => {
    await using proxy = await startFaultProxy({ target, seed: 42, rates });
    for (let i = 0; i < 200; i++) await (await fetch(`${proxy.url}/r${i}`)).body?.cancel();
    return proxy.log.map((r) => r.fault);
  };
  try {
    const first = await run();
    const second = await run();
    assert.deepEqual(first, second);
    const share = first.filter((f) => f !== "none").length / first.length;
    assert.ok(share > 0.15 && share < 0.35, `fault share ${share}`);
    assert.ok(FAULTS.every((f) => f in rates ? first.includes(f) : !first.includes(f)));
  } finally {
    await echo.shutdown();
  }
});

Deno.test("fault proxy only faults the requests it is told to", async () => {
  const echo = startEcho();
  await using proxy = await startFaultProxy({
    target: `http://127.0.0.1:${echo.addr.port}`,
    rates: { internalError: 1 },
    eligible: (r) => r.path.startsWith("/broken"),
  });
  try {
    assert.equal((await fetch(`${proxy.url}/ok`)).status, 200);
    assert.equal((await fetch(`${proxy.url}/broken/1`)).status, 500);
    assert.deepEqual(proxy.counts(), { none: 1, internalError: 1 });
  } finally {
    await echo.shutdown();
  }
});

Deno.test("the S3 client rides out the proxy's faults in front of fauxqs", async () => {
  await using s3 = await startS3();
  s3.createBucket("faulty");
  const file = trailFile({
    time: new Date(),
    account: "111122223333",
    region: "us-east-1",
    records: 50,
    tag: "x",
  });
  await s3.put("faulty", [file]);
  await using proxy = await startFaultProxy({
    target: s3.endpoint,
    seed: 11,
    rates: { slowDown: 0.15, internalError: 0.1, reset: 0.1 },
  });
  const client = s3ClientFor(proxy.url, 10);
  try {
    for (let i = 0; i < 20; i++) {
      const output = await client.send(new GetObjectCommand({ Bucket: "faulty", Key: file.key }));
      const bytes = await output.Body!.transformToByteArray();
      assert.deepEqual(bytes, file.body);
    }
    const counts = proxy.counts();
    assert.equal(counts.none, 20);
    assert.ok(counts.slowDown > 0 && counts.internalError > 0 && counts.reset > 0);
  } finally {
    client.destroy();
  }
});
