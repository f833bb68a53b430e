/**
 * Test helper: a loopback HTTP/1.1 fault proxy. It forwards requests to a target (fauxqs, a
 * webhook receiver, …) and, for a configurable share of requests (a seeded PRNG), injects a
 * fault instead: a 500, a 503 with S3's `SlowDown` XML body, a 429 throttle, a slow response, a
 * connection closed before any response byte (the client sees a reset / "socket hang up"), or a
 * response body cut off halfway. Every request is recorded with what was done to it.
 *
 * It is a raw `Deno.listen` TCP server (a `fetch`-based proxy could neither drop a connection
 * before the response nor cut a body short). Requests are forwarded byte for byte (signatures
 * stay valid) over a fresh upstream connection; each response closes the client connection.
 *
 * @example Half of the requests to fauxqs fail with SlowDown
 * ```ts
 * import { startFaultProxy } from "./fault_proxy.ts";
 * const proxy = await startFaultProxy({ target: "http://127.0.0.1:4566", rates: { slowDown: 0.5 } });
 * // point the client at proxy.url …
 * console.log(proxy.counts()); // { none: 10, slowDown: 9 }
 * await proxy.close();
 * ```
 *
 * @module
 */

import { seeded } from "../../bench/dataset.ts";

/** The faults the proxy injects. */
export const FAULTS = [
  "internalError",
  "slowDown",
  "throttle",
  "slow",
  "reset",
  "truncate",
] as const;

/** One fault kind. */
export type FaultKind = typeof FAULTS[number];

/** A request as the fault decision sees it. */
export interface RequestInfo {
  /** HTTP method. */
  method: string;
  /** Path and query. */
  path: string;
  /** Request headers (lower-case names). */
  headers: Record<string, string>;
}

/** Options of {@link startFaultProxy}. */
export interface FaultProxyOptions {
  /** Where requests go, e.g. `http://127.0.0.1:4566`. */
  target: string;
  /** Share (0–1) of eligible requests that get each fault; their sum must be ≤ 1. */
  rates?: Partial<Record<FaultKind, number>>;
  /** PRNG seed (same seed + same request order ⇒ same faults). */
  seed?: number;
  /** Delay of a `slow` response (ms). */
  slowMs?: number;
  /** Which requests may get a fault (default: all). */
  eligible?: (request: RequestInfo) => boolean;
}

/** What the proxy did with one request. */
export interface ProxiedRequest extends RequestInfo {
  /** Arrival order, from 1. */
  n: number;
  /** The fault injected, or `none`. */
  fault: FaultKind | "none";
  /** The status sent to the client (0: none, the connection was dropped). */
  status: number;
}

/** A running fault proxy. */
export interface FaultProxy {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** The port. */
  readonly port: number;
  /** Every request handled, in arrival order. */
  readonly log: readonly ProxiedRequest[];
  /** Requests per fault kind (and `none`). */
  counts(): Record<string, number>;
  /** Changes the fault rates (e.g. to 0 to let everything through). */
  setRates(rates: Partial<Record<FaultKind, number>>): void;
  /** Stops listening and drops open connections. */
  close(): Promise<void>;
  /** Closes it at the end of a `using` block. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** A small seeded PRNG (mulberry32). */
export const seededRandom: (seed: number) => () => number = seeded;

const CRLF = new Uint8Array([13, 10]);
const HEAD_END = new Uint8Array([13, 10, 13, 10]);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function indexOf(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i <= haystack.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Buffered reads from a connection. */
class ConnReader {
  #buf: Uint8Array<ArrayBuffer> = new Uint8Array(0);
  readonly #conn: Deno.Conn;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await this.#conn.read(chunk);
    } catch {
      return false;
    }
    if (n === null) return false;
    this.#buf = concat([this.#buf, chunk.subarray(0, n)]);
    return true;
  }

  async until(sequence: Uint8Array): Promise<Uint8Array | null> {
    let from = 0;
    while (true) {
      const at = indexOf(this.#buf, sequence, from);
      if (at >= 0) {
        const out = this.#buf.slice(0, at + sequence.length);
        this.#buf = this.#buf.slice(at + sequence.length);
        return out;
      }
      from = Math.max(0, this.#buf.length - sequence.length + 1);
      if (!await this.#fill()) return null;
    }
  }

  async exactly(n: number): Promise<Uint8Array | null> {
    while (this.#buf.length < n) if (!await this.#fill()) return null;
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    return out;
  }

  async rest(): Promise<Uint8Array> {
    const parts = [this.#buf];
    this.#buf = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    while (true) {
      let n: number | null;
      try {
        n = await this.#conn.read(chunk);
      } catch {
        break;
      }
      if (n === null) break;
      parts.push(chunk.slice(0, n));
    }
    return concat(parts);
  }
}

interface Head {
  line: string;
  headers: [string, string][];
}

function parseHead(bytes: Uint8Array): Head {
  const lines = decoder.decode(bytes).split("\r\n").filter((l) => l !== "");
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return { line: lines[0] ?? "", headers };
}

function header(head: Head, name: string): string | undefined {
  return head.headers.find(([k]) => k.toLowerCase() === name)?.[1];
}

function serializeHead(head: Head, replace: Record<string, string | undefined>): Uint8Array {
  const lower = Object.keys(replace);
  const lines = [head.line];
  for (const [k, v] of head.headers) if (!lower.includes(k.toLowerCase())) lines.push(`${k}: ${v}`);
  for (const [k, v] of Object.entries(replace)) if (v !== undefined) lines.push(`${k}: ${v}`);
  return encoder.encode(lines.join("\r\n") + "\r\n\r\n");
}

/** Reads a message body as sent (Content-Length or chunked), raw. */
async function readBody(reader: ConnReader, head: Head): Promise<Uint8Array | null> {
  if (header(head, "transfer-encoding")?.toLowerCase().includes("chunked")) {
    const parts: Uint8Array[] = [];
    while (true) {
      const sizeLine = await reader.until(CRLF);
      if (!sizeLine) return null;
      parts.push(sizeLine);
      const size = parseInt(decoder.decode(sizeLine).split(";")[0].trim(), 16);
      if (!Number.isFinite(size)) return null;
      if (size === 0) {
        while (true) {
          const trailer = await reader.until(CRLF);
          if (!trailer) return null;
          parts.push(trailer);
          if (trailer.length === 2) return concat(parts);
        }
      }
      const data = await reader.exactly(size + 2);
      if (!data) return null;
      parts.push(data);
    }
  }
  const length = Number(header(head, "content-length") ?? 0);
  return length > 0 ? await reader.exactly(length) : new Uint8Array(0);
}

const S3_ERRORS: Record<string, { status: string; code: string; message: string }> = {
  internalError: {
    status: "500 Internal Server Error",
    code: "InternalError",
    message: "We encountered an internal error. Please try again.",
  },
  slowDown: {
    status: "503 Slow Down",
    code: "SlowDown",
    message: "Please reduce your request rate.",
  },
  throttle: {
    status: "429 Too Many Requests",
    code: "Throttling",
    message: "Rate exceeded",
  },
};

function errorResponse(kind: "internalError" | "slowDown" | "throttle"): Uint8Array {
  const e = S3_ERRORS[kind];
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${e.code}</Code>` +
    `<Message>${e.message}</Message><RequestId>FAULTPROXY</RequestId></Error>`;
  const bytes = encoder.encode(body);
  const retryAfter = kind === "throttle" ? "Retry-After: 0\r\n" : "";
  return concat([
    encoder.encode(
      `HTTP/1.1 ${e.status}\r\nContent-Type: application/xml\r\nContent-Length: ${bytes.length}\r\n` +
        `${retryAfter}Connection: close\r\n\r\n`,
    ),
    bytes,
  ]);
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** Starts a fault proxy on 127.0.0.1 (a free port) in front of `options.target`. */
export function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(options.target);
  const targetPort = Number(target.port || 80);
  const random = seededRandom(options.seed ?? 1);
  let rates: Partial<Record<FaultKind, number>> = { ...options.rates };
  const slowMs = options.slowMs ?? 300;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const log: ProxiedRequest[] = [];
  const open = new Set<Deno.Conn>();
  const handlers = new Set<Promise<void>>();
  let closed = false;

  const pick = (request: RequestInfo): FaultKind | "none" => {
    const r = random();
    if (options.eligible && !options.eligible(request)) return "none";
    let sum = 0;
    for (const kind of FAULTS) {
      sum += rates[kind] ?? 0;
      if (r < sum) return kind;
    }
    return "none";
  };

  const forward = async (
    head: Head,
    body: Uint8Array,
  ): Promise<{ head: Head; raw: Uint8Array; bodyStart: number } | null> => {
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: target.hostname, port: targetPort });
    } catch {
      return null;
    }
    open.add(upstream);
    try {
      await writeAll(upstream, serializeHead(head, { Connection: "close", Expect: undefined }));
      if (body.length) await writeAll(upstream, body);
      const raw = await new ConnReader(upstream).rest();
      const end = indexOf(raw, HEAD_END);
      if (end < 0) return null;
      return { head: parseHead(raw.subarray(0, end)), raw, bodyStart: end + 4 };
    } catch {
      return null;
    } finally {
      open.delete(upstream);
      try {
        upstream.close();
      } catch {
        // already closed
      }
    }
  };

  const handle = async (conn: Deno.Conn) => {
    const reader = new ConnReader(conn);
    try {
      const headBytes = await reader.until(HEAD_END);
      if (!headBytes) return;
      const head = parseHead(headBytes);
      const [method = "", path = ""] = head.line.split(" ");
      const headers: Record<string, string> = {};
      for (const [k, v] of head.headers) headers[k.toLowerCase()] = v;
      if (headers.expect?.toLowerCase() === "100-continue") {
        await writeAll(conn, encoder.encode("HTTP/1.1 100 Continue\r\n\r\n"));
      }
      const body = await readBody(reader, head);
      if (body === null) return;
      const info: RequestInfo = { method, path, headers };
      const fault = pick(info);
      const entry: ProxiedRequest = { ...info, n: log.length + 1, fault, status: 0 };
      log.push(entry);
      if (fault === "reset") return; // closed below, before any response byte
      if (fault === "internalError" || fault === "slowDown" || fault === "throttle") {
        entry.status = Number(S3_ERRORS[fault].status.slice(0, 3));
        await writeAll(conn, errorResponse(fault));
        return;
      }
      if (fault === "slow") await new Promise((resolve) => setTimeout(resolve, slowMs));
      const response = await forward(head, body);
      if (!response) {
        entry.status = 502;
        await writeAll(
          conn,
          encoder.encode(
            "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
          ),
        );
        return;
      }
      entry.status = Number(response.head.line.split(" ")[1]) || 0;
      const outHead = serializeHead(response.head, { Connection: "close" });
      let outBody = response.raw.subarray(response.bodyStart);
      if (fault === "truncate") outBody = outBody.subarray(0, Math.floor(outBody.length / 2));
      await writeAll(conn, concat([outHead, outBody]));
    } catch {
      // the client went away
    } finally {
      open.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  };

  const accepting = (async () => {
    while (!closed) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        break;
      }
      open.add(conn);
      const handler = handle(conn);
      handlers.add(handler);
      handler.finally(() => handlers.delete(handler));
    }
  })();

  const close = async () => {
    if (closed) return;
    closed = true;
    try {
      listener.close();
    } catch {
      // already closed
    }
    for (const conn of open) {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
    await accepting;
    await Promise.allSettled([...handlers]);
  };

  return Promise.resolve({
    url: `http://127.0.0.1:${port}`,
    port,
    log,
    counts() {
      const out: Record<string, number> = { none: 0 };
      for (const entry of log) out[entry.fault] = (out[entry.fault] ?? 0) + 1;
      return out;
    },
    setRates(next) {
      rates = { ...next };
    },
    close,
    [Symbol.asyncDispose]: close,
  });
}
