/**
 * A real webhook receiver for tests: `Deno.serve` on 127.0.0.1 (port 0 by default), recording
 * every request (method, path, headers, raw body) and what it answered. It can be scripted to
 * fail (status codes, `Retry-After`, delays, holding a request without answering), stopped
 * ("down") and restarted on the same port, and counts deliveries by `Idempotency-Key`.
 *
 * Also builds real {@link Alert} objects for sink tests ({@link sampleAlert}).
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { Alert } from "../../core/types.ts";

/** One request the receiver got. */
export interface RecordedRequest {
  /** HTTP method. */
  method: string;
  /** Path and query. */
  path: string;
  /** Headers, names lower-cased. */
  headers: Record<string, string>;
  /** Raw body text. */
  body: string;
  /** Status answered; 0 while held or when never answered. */
  status: number;
  /** When it arrived (epoch ms). */
  at: number;
}

/** A scripted answer. */
export interface ScriptedResponse {
  /** Status (default 200). */
  status?: number;
  /** Response headers, e.g. `{"retry-after": "1"}`. */
  headers?: Record<string, string>;
  /** Response body. */
  body?: string;
  /** Wait before answering (ms). */
  delayMs?: number;
  /** Do not answer until {@link Receiver.releaseHeld} or {@link Receiver.stop}. */
  hold?: boolean;
  /** Only for this method (others get the default answer and do not consume this one). */
  method?: string;
}

/** Options of {@link Receiver.start}. */
export interface ReceiverOptions {
  /** Port (default 0: any free port). */
  port?: number;
  /** Path of {@link Receiver.url} (default `/hook/<a token-like segment>`). */
  path?: string;
  /** Answer when the script is empty (default 200 with an empty body). */
  fallback?: ScriptedResponse;
}

/** The receiver; see the module doc. */
export class Receiver {
  /** Every request, in arrival order. */
  readonly requests: RecordedRequest[] = [];
  /** Answer when the script is empty. */
  fallback: ScriptedResponse;
  /** Called with each request as it arrives (before answering). */
  onRequest?: (request: RecordedRequest) => void;
  readonly #path: string;
  #port: number;
  #server: Deno.HttpServer | undefined;
  #script: ScriptedResponse[] = [];
  #held: (() => void)[] = [];
  #waiters: (() => void)[] = [];

  private constructor(port: number, options: ReceiverOptions) {
    this.#port = port;
    this.#path = options.path ?? "/hook/T0KEN-s3cr3t-0123456789abcdef";
    this.fallback = options.fallback ?? { status: 200 };
  }

  /** Starts a receiver on 127.0.0.1. */
  static async start(options: ReceiverOptions = {}): Promise<Receiver> {
    const receiver = new Receiver(options.port ?? 0, options);
    await receiver.#listen();
    return receiver;
  }

  /** The port it listens on (kept across restarts). */
  get port(): number {
    return this.#port;
  }

  /** The webhook URL (with a token-like path segment). */
  get url(): string {
    return `http://127.0.0.1:${this.#port}${this.#path}`;
  }

  /** Whether it is listening. */
  get running(): boolean {
    return this.#server !== undefined;
  }

  /** Queues answers, one per request, in order; then {@link fallback}. */
  script(...responses: ScriptedResponse[]): void {
    this.#script.push(...responses);
  }

  /** Requests that were answered 2xx. */
  get accepted(): RecordedRequest[] {
    return this.requests.filter((r) => r.status >= 200 && r.status < 300);
  }

  /** Count of requests per `Idempotency-Key` (all, or only those answered 2xx). */
  countByKey(onlyAccepted = true): Map<string, number> {
    const counts = new Map<string, number>();
    for (const r of onlyAccepted ? this.accepted : this.requests) {
      const key = r.headers["idempotency-key"] ?? "";
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return counts;
  }

  /** Parsed JSON bodies of the accepted POSTs. */
  acceptedJson<T = unknown>(): T[] {
    return this.accepted.filter((r) => r.method === "POST").map((r) => JSON.parse(r.body) as T);
  }

  /** Resolves once at least `count` requests arrived (rejects after `timeoutMs`). */
  waitForRequests(count: number, timeoutMs = 10_000): Promise<void> {
    if (this.requests.length >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== check);
        reject(new Error(`receiver got ${this.requests.length} of ${count} requests`));
      }, timeoutMs);
      const check = () => {
        if (this.requests.length < count) return;
        clearTimeout(timer);
        this.#waiters = this.#waiters.filter((w) => w !== check);
        resolve();
      };
      this.#waiters.push(check);
    });
  }

  /** Answers every held request (status 503: its client is presumed gone). */
  releaseHeld(): void {
    const held = this.#held;
    this.#held = [];
    for (const release of held) release();
  }

  /** Stops listening ("down"); held requests are released first. */
  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    this.releaseHeld();
    await server.shutdown();
  }

  /** Listens again on the same port ("up"). */
  async restart(): Promise<void> {
    if (this.#server) return;
    await this.#listen();
  }

  /** Stops the receiver. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #listen(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<Deno.NetAddr>();
    this.#server = Deno.serve({
      hostname: "127.0.0.1",
      port: this.#port,
      onListen: resolve,
    }, (request) => this.#handle(request));
    this.#port = (await promise).port;
  }

  #next(method: string): ScriptedResponse {
    const index = this.#script.findIndex((s) => !s.method || s.method === method);
    if (index < 0) return this.fallback;
    return this.#script.splice(index, 1)[0];
  }

  async #handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const recorded: RecordedRequest = {
      method: request.method,
      path: url.pathname + url.search,
      headers: Object.fromEntries(request.headers),
      body: await request.text(),
      status: 0,
      at: Date.now(),
    };
    const answer = this.#next(request.method);
    this.requests.push(recorded);
    this.onRequest?.(recorded);
    for (const waiter of [...this.#waiters]) waiter();
    if (answer.hold) {
      await new Promise<void>((resolve) => this.#held.push(resolve));
      return new Response("released\n", { status: 503 });
    }
    if (answer.delayMs) await new Promise((resolve) => setTimeout(resolve, answer.delayMs));
    const status = answer.status ?? 200;
    recorded.status = status;
    const body = answer.body ?? (status === 204 || request.method === "HEAD" ? null : "");
    return new Response(body, { status, headers: answer.headers });
  }
}

let counter = 0;

/**
 * A deterministic alert id in the pipeline's shape (32 hex characters from a SHA-256 of the
 * detector and the event ids). The sink tests do not import core/pipeline.ts, which would load
 * every source and detector; the sinks only rely on the id being a stable string.
 */
export function sampleAlertId(detector: string, eventIds: readonly string[], key = ""): string {
  return createHash("sha256").update(
    `${detector}\u0000${[...eventIds].sort().join("\u0001")}\u0000${key}`,
  ).digest("hex").slice(0, 32);
}

/**
 * A real alert in the shape the pipeline builds (deterministic id from detector + event ids),
 * with `overrides` applied.
 */
export function sampleAlert(overrides: Partial<Alert> = {}): Alert {
  const n = ++counter;
  const detector = overrides.detector ?? "impossible_travel";
  const eventIds = overrides.event_ids ?? [`evt-${n}-a`, `evt-${n}-b`];
  const alert: Alert = {
    id: sampleAlertId(detector, eventIds),
    detector,
    severity: "high",
    title: `Impossible travel for alice: Paris → Sydney in 2 h (${n})`,
    time: new Date(Date.UTC(2024, 4, 1, 12, 0, n % 60)).toISOString(),
    user: "alice",
    account_id: "123456789012",
    region: "eu-west-3",
    ip: "203.0.113.7",
    event_ids: eventIds,
    details: {
      country: "AU",
      city: "Sydney",
      previous_country: "FR",
      distance_km: 16_960,
      speed_kmh: 8_480,
    },
    ...overrides,
  };
  if (overrides.id === undefined && (overrides.detector || overrides.event_ids)) {
    alert.id = sampleAlertId(alert.detector, alert.event_ids);
  }
  return alert;
}
