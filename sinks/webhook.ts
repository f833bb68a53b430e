/**
 * The `webhook` sink: POSTs the alert JSON to any HTTP endpoint.
 *
 * - One alert: the body is the {@link Alert} JSON, `Idempotency-Key: <alert id>`.
 * - A group (the sink's `group: true`): one POST of `{"group": {...}, "alerts": [...]}` with
 *   `Idempotency-Key: group-<sha256 hex of the sorted alert ids joined by ",">`. Every alert in
 *   the body keeps its own `id`, so a receiver that dedupes by alert id stays exact even if a
 *   resend after a crash groups the alerts differently.
 * - With a `secret`: `X-Trailwatch-Timestamp: <unix seconds>` and
 *   `X-Trailwatch-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` (verification
 *   snippet: docs/verify_signature.ts).
 * - The health check is a `HEAD` request (it posts nothing); see {@link headCheck}.
 *
 * @module
 */

import type { Alert } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { Sink, SinkContext, SinkPlugin } from "./mod.ts";
import {
  checkTimeout,
  checkUrl,
  DEFAULT_TIMEOUT,
  headCheck,
  postJson,
  registerSinkSecrets,
  timeoutMs,
} from "./_http.ts";

/** Options of the `webhook` sink. */
export interface Options {
  /** Endpoint (http or https). Never logged: tokens in it are masked. */
  url: string;
  /** Extra request headers (e.g. `Authorization`); their values are never logged. */
  headers: Record<string, string>;
  /** HMAC-SHA256 secret; when set, every request is signed. */
  secret?: string;
  /** Request timeout: a duration such as `"10s"`, or seconds. */
  timeout: string | number;
}

/** Defaults of the `webhook` sink (`url` has none: it is required). */
export const defaults = {
  headers: {},
  timeout: DEFAULT_TIMEOUT,
} satisfies Omit<Options, "url">;

/** Headers set by the sink itself; a configured header may not replace them. */
export const PROTOCOL_HEADERS = [
  "content-type",
  "idempotency-key",
  "x-trailwatch-timestamp",
  "x-trailwatch-signature",
];

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The `Idempotency-Key` of a message: the alert id for one alert; for a group,
 * `group-<sha256 hex of the sorted ids joined by ",">`.
 *
 * @example Keys of one alert and of a group
 * ```ts
 * await idempotencyKey(["3f2a"]); // "3f2a"
 * await idempotencyKey(["b", "a"]); // "group-" + sha256("a,b") in hex
 * ```
 */
export async function idempotencyKey(ids: string[]): Promise<string> {
  if (ids.length === 1) return ids[0];
  const data = new TextEncoder().encode([...ids].sort().join(","));
  return `group-${toHex(await crypto.subtle.digest("SHA-256", data))}`;
}

function toHex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The body of a message: the alert, or `{group, alerts}` for several. */
export function webhookBody(alerts: Alert[]): unknown {
  if (alerts.length === 1) return alerts[0];
  return {
    group: { detector: alerts[0].detector, user: alerts[0].user ?? null, count: alerts.length },
    alerts,
  };
}

/**
 * Creates a `webhook` sink.
 *
 * @example A signed webhook
 * ```ts
 * const sink = createWebhookSink(
 *   { url: "https://alerts.example.com/trailwatch", secret: "s3cr3t-value" },
 *   { name: "siem", baseDir: "." },
 * );
 * await sink.healthcheck();
 * ```
 */
export function createWebhookSink(
  options: Partial<Options> & Pick<Options, "url">,
  context: SinkContext,
): Sink {
  const opts = { ...defaults, ...options };
  const url = opts.url;
  const timeout = timeoutMs(opts.timeout);
  registerSinkSecrets(url, opts.secret, opts.headers);
  let key: Promise<CryptoKey> | undefined;
  const hmacKey = (secret: string) =>
    key ??= crypto.subtle.importKey(
      "raw",
      new TextEncoder().encode(secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
  return {
    name: context.name,
    type: "webhook",
    async send(alerts) {
      if (alerts.length === 0) return;
      const body = JSON.stringify(webhookBody(alerts));
      const timestamp = String(Math.floor(Date.now() / 1000));
      const headers: Record<string, string> = {
        ...opts.headers,
        "Idempotency-Key": await idempotencyKey(alerts.map((a) => a.id)),
        "X-Trailwatch-Timestamp": timestamp,
      };
      if (opts.secret) {
        const mac = await crypto.subtle.sign(
          "HMAC",
          await hmacKey(opts.secret),
          new TextEncoder().encode(`${timestamp}.${body}`),
        );
        headers["X-Trailwatch-Signature"] = `sha256=${toHex(mac)}`;
      }
      await postJson(url, body, { headers, timeoutMs: timeout });
    },
    healthcheck: () => headCheck(url, timeout, opts.headers),
  };
}

/** The `webhook` plugin. */
export const webhookSink: SinkPlugin = {
  description: "Alerts POSTed as JSON to an HTTP endpoint (idempotency key, optional HMAC)",
  check(check: OptionsChecker) {
    checkUrl(check);
    check.stringMap("headers", {
      eachKey: (name) =>
        !HEADER_NAME.test(name)
          ? "not a valid header name"
          : PROTOCOL_HEADERS.includes(name.toLowerCase())
          ? "is set by trailwatch and cannot be configured"
          : undefined,
    });
    const secret = check.any("secret");
    if (secret !== undefined && (typeof secret !== "string" || secret.length < 8)) {
      check.problem("secret", "expected a string of at least 8 characters");
    }
    checkTimeout(check);
  },
  create: (options: RawOptions, context) =>
    createWebhookSink(options as Partial<Options> & Pick<Options, "url">, context),
};
