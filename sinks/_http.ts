/**
 * Private helpers of the webhook-type sinks (webhook, slack, teams, discord): the POST with a
 * timeout, the mapping of HTTP statuses onto {@link DeliveryError}, URL masking in every message,
 * option checks, and the text truncation and alert facts the chat payloads are built from.
 *
 * Status mapping: 2xx is delivered; 408, 425, 429, 5xx, timeouts and network errors are
 * retryable; 3xx (redirects are not followed) and every other 4xx are not. `Retry-After` (seconds
 * or an HTTP-date; Discord's JSON `retry_after` as a fallback) becomes `retryAfterMs`.
 *
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };
import { DeliveryError, errorMessage } from "../core/errors.ts";
import { maskUrl, redact, registerSecret, registerSecretUrl } from "../core/log.ts";
import { type Alert, type Severity, severityRank } from "../core/types.ts";
import { type OptionsChecker, parseDuration } from "../core/validate.ts";

/** The `User-Agent` of every request. */
export const USER_AGENT = `trailwatch/${denoJson.version}`;

/** Default request timeout of the webhook-type sinks. */
export const DEFAULT_TIMEOUT = "10s";

/** Longest response body kept for an error message. */
const ERROR_BODY_CHARS = 300;

/** The ellipsis appended to truncated text. */
export const ELLIPSIS = "…";

/**
 * Truncates `text` to at most `max` UTF-16 code units (never more characters than that), ending
 * with an ellipsis when something was cut. A surrogate pair is never split.
 *
 * @example Truncating a long title
 * ```ts
 * truncate("abcdef", 4); // "abc…"
 * ```
 */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  if (max <= 0) return "";
  if (max === 1) return ELLIPSIS;
  let cut = max - ELLIPSIS.length;
  const code = text.charCodeAt(cut - 1);
  if (code >= 0xd800 && code <= 0xdbff) cut--;
  return text.slice(0, cut) + ELLIPSIS;
}

/** Size of a JSON payload in UTF-8 bytes. */
export function jsonBytes(value: unknown): number {
  return new TextEncoder().encode(JSON.stringify(value)).length;
}

/** Parses `Retry-After` (seconds or an HTTP-date) into milliseconds from `now`. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Math.ceil(Number(text) * 1000);
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** Whether an HTTP status is worth retrying later (408, 425, 429, 5xx). */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

/** Replaces `url` (and every registered secret) in `text` with a masked form. */
export function scrub(text: string, url: string): string {
  let out = text;
  const masked = maskUrl(url);
  const forms = new Set([url]);
  try {
    const parsed = new URL(url);
    forms.add(parsed.href);
    if (parsed.pathname.length > 1 || parsed.search) forms.add(parsed.pathname + parsed.search);
  } catch {
    // not a URL: the raw form only
  }
  for (const form of [...forms].sort((a, b) => b.length - a.length)) {
    if (form && out.includes(form)) out = out.split(form).join(form === url ? masked : "/***");
  }
  return redact(out);
}

/** Registers a sink's URL, secret and header values so they never reach a log or an error. */
export function registerSinkSecrets(
  url: string,
  secret?: string,
  headers?: Record<string, string>,
): void {
  registerSecretUrl(url);
  registerSecret(secret);
  for (const value of Object.values(headers ?? {})) registerSecret(value);
}

/** What {@link httpRequest} returns: status, headers and at most `bodyChars` of the body. */
export interface HttpResult {
  /** HTTP status. */
  status: number;
  /** Status text. */
  statusText: string;
  /** Response headers. */
  headers: Headers;
  /** The start of the body (for error messages and small JSON answers). */
  body: string;
}

/** Options of {@link httpRequest}. */
export interface HttpRequestInit {
  /** HTTP method. */
  method: string;
  /** Request headers. */
  headers?: Record<string, string>;
  /** Request body. */
  body?: string;
  /** Timeout of the whole exchange (ms). */
  timeoutMs: number;
  /** How much of the body to read (characters); the rest is discarded. */
  bodyChars?: number;
}

async function readStart(response: Response, max: number): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (text.length < max) {
      const { done, value } = await reader.read();
      if (done) return text + decoder.decode();
      text += decoder.decode(value, { stream: true });
    }
    await reader.cancel();
  } finally {
    reader.releaseLock();
  }
  return text;
}

/**
 * One HTTP exchange with a timeout. Network errors and timeouts throw a retryable
 * {@link DeliveryError} whose message names the URL masked; any response resolves.
 */
export async function httpRequest(url: string, init: HttpRequestInit): Promise<HttpResult> {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException("timed out", "TimeoutError")),
    init.timeoutMs,
  );
  try {
    const response = await fetch(url, {
      method: init.method,
      headers: { "user-agent": USER_AGENT, ...init.headers },
      body: init.body,
      redirect: "manual",
      signal: controller.signal,
    });
    const body = await readStart(response, init.bodyChars ?? ERROR_BODY_CHARS);
    return {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
      body,
    };
  } catch (error) {
    const reason = controller.signal.aborted
      ? `timed out after ${init.timeoutMs} ms`
      : scrub(errorMessage(error), url);
    // The original error names the URL in full: keep only a scrubbed copy as the cause.
    const cause = new Error(reason);
    cause.name = error instanceof Error ? error.name : "Error";
    throw new DeliveryError(`${init.method} ${maskUrl(url)} failed: ${reason}`, {
      retryable: true,
    }, { cause });
  } finally {
    clearTimeout(timer);
  }
}

function retryAfterOf(result: HttpResult): number | undefined {
  const header = parseRetryAfter(result.headers.get("retry-after"));
  if (header !== undefined) return header;
  if (result.status !== 429) return undefined;
  try {
    // Discord answers 429 with {"retry_after": seconds} (the header is usually there too).
    const value = JSON.parse(result.body)?.retry_after;
    return typeof value === "number" && value >= 0 ? Math.ceil(value * 1000) : undefined;
  } catch {
    return undefined;
  }
}

/** The {@link DeliveryError} for a non-2xx answer (undefined for 2xx). */
export function statusError(
  method: string,
  url: string,
  result: HttpResult,
): DeliveryError | undefined {
  const { status } = result;
  if (status >= 200 && status < 300) return undefined;
  const retryable = isRetryableStatus(status);
  const retryAfterMs = retryable ? retryAfterOf(result) : undefined;
  const parts = [
    `${method} ${maskUrl(url)} → ${status}${result.statusText ? ` ${result.statusText}` : ""}`,
  ];
  if (status >= 300 && status < 400) parts.push("(redirects are not followed; fix the URL)");
  if (retryAfterMs !== undefined) parts.push(`(retry after ${Math.ceil(retryAfterMs / 1000)} s)`);
  // Masked before it is cut: a cut through a secret would leave a piece that no longer matches.
  const body = scrub(result.body, url).replace(/\s+/g, " ").trim();
  const message = parts.join(" ") + (body ? `: ${truncate(body, 200)}` : "");
  return new DeliveryError(scrub(message, url), { retryable, retryAfterMs, status });
}

/** POSTs a JSON body; resolves on 2xx, throws a {@link DeliveryError} otherwise. */
export async function postJson(
  url: string,
  body: string,
  options: { headers?: Record<string, string>; timeoutMs: number },
): Promise<HttpResult> {
  const result = await httpRequest(url, {
    method: "POST",
    headers: { ...options.headers, "content-type": "application/json" },
    body,
    timeoutMs: options.timeoutMs,
  });
  const error = statusError("POST", url, result);
  if (error) throw error;
  return result;
}

/** Milliseconds of a `timeout` option (a duration such as `"10s"`, or seconds). */
export function timeoutMs(value: string | number | undefined): number {
  const ms = parseDuration(value ?? DEFAULT_TIMEOUT);
  return ms && ms > 0 ? ms : parseDuration(DEFAULT_TIMEOUT)!;
}

/** Checks `url` (required, http or https) without echoing it in the message. */
export function checkUrl(check: OptionsChecker): void {
  const value = check.any("url", { required: true });
  if (value === undefined) return;
  let ok = false;
  if (typeof value === "string") {
    try {
      const url = new URL(value);
      ok = (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
    } catch {
      ok = false;
    }
  }
  if (!ok) check.problem("url", "expected an http:// or https:// URL");
}

/** Checks `timeout`: a positive duration. */
export function checkTimeout(check: OptionsChecker): void {
  const ms = check.duration("timeout");
  if (ms !== undefined && ms <= 0) check.problem("timeout", "must be longer than 0");
}

/**
 * Connection check that posts nothing: a `HEAD` request. Any answer below 500 proves DNS, TLS
 * and the server are fine (receivers often answer 404/405 to `HEAD` on a POST-only route);
 * network errors, timeouts and 5xx fail.
 */
export async function headCheck(
  url: string,
  timeout: number,
  headers?: Record<string, string>,
): Promise<string> {
  const result = await httpRequest(url, { method: "HEAD", headers, timeoutMs: timeout });
  if (result.status >= 500) throw statusError("HEAD", url, result)!;
  return `${maskUrl(url)} reachable (HEAD → ${result.status})`;
}

/** A labelled value shown in a chat message. */
export interface Fact {
  /** Label, e.g. `User`. */
  label: string;
  /** Value as text. */
  value: string;
}

/** Text of a detail value: strings as they are, lists joined, objects as JSON. */
export function detailText(value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value) && value.every((v) => typeof v !== "object" || v === null)) {
    return value.map(String).join(", ");
  }
  return JSON.stringify(value);
}

/** `1.2.3.4 (FR, Paris)`: the IP with the country and city found in the details. */
export function ipText(alert: Alert): string | undefined {
  const where = [alert.details.country, alert.details.city].filter((v) =>
    typeof v === "string" && v !== ""
  );
  if (!alert.ip) return where.length ? where.join(", ") : undefined;
  return where.length ? `${alert.ip} (${where.join(", ")})` : alert.ip;
}

/** `2024-05-01 12:34:56 UTC` for an ISO time; the input when it is not a date. */
export function timeText(iso: string): string {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return iso;
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

/** The common facts of an alert: severity, detector, user, IP/country, time, account, region. */
export function alertFacts(alert: Alert): Fact[] {
  const facts: Fact[] = [
    { label: "Severity", value: alert.severity },
    { label: "Detector", value: alert.detector },
  ];
  if (alert.user) facts.push({ label: "User", value: alert.user });
  const ip = ipText(alert);
  if (ip) facts.push({ label: alert.ip ? "IP" : "Country", value: ip });
  facts.push({ label: "Time", value: timeText(alert.time) });
  if (alert.account_id) facts.push({ label: "Account", value: alert.account_id });
  if (alert.region) facts.push({ label: "Region", value: alert.region });
  return facts;
}

/** The detector-specific facts of an alert (its details; country and city are shown with the IP). */
export function detailFacts(alert: Alert): Fact[] {
  return Object.entries(alert.details)
    .filter(([key, value]) => !((key === "country" || key === "city") && typeof value === "string"))
    .map(([key, value]) => ({ label: key, value: detailText(value) }));
}

/** Highest severity of a group of alerts. */
export function topSeverity(alerts: Alert[]): Severity {
  return alerts.reduce<Severity>(
    (top, a) => severityRank(a.severity) > severityRank(top) ? a.severity : top,
    "info",
  );
}

/** `5 alerts from impossible_travel for alice`: the headline of a grouped message. */
export function groupHeadline(alerts: Alert[]): string {
  const first = alerts[0];
  return `${alerts.length} alerts from ${first.detector}${first.user ? ` for ${first.user}` : ""}`;
}

/** Time span of a group: `first – last`, or one time when they are equal. */
export function groupTimeSpan(alerts: Alert[]): string {
  const times = alerts.map((a) => a.time).sort();
  const first = timeText(times[0]);
  const last = timeText(times[times.length - 1]);
  return first === last ? first : `${first} – ${last}`;
}

/** The options every chat sink (slack, teams, discord) has. */
export interface ChatOptions {
  /** The webhook URL. Never logged: its tokens are masked. */
  url: string;
  /** Request timeout: a duration such as `"10s"`, or seconds. */
  timeout: string | number;
}

/**
 * A chat sink: each `send` POSTs `payload(alerts)` as JSON to the webhook URL (registered as a
 * secret); `healthcheck` gets the URL and the timeout in milliseconds.
 */
export function chatSink(
  type: string,
  context: { name: string },
  options: ChatOptions,
  payload: (alerts: Alert[]) => unknown,
  healthcheck: (url: string, timeoutMs: number) => Promise<string>,
): {
  name: string;
  type: string;
  send(alerts: Alert[]): Promise<void>;
  healthcheck(): Promise<string>;
} {
  const url = options.url;
  const timeout = timeoutMs(options.timeout);
  registerSinkSecrets(url);
  return {
    name: context.name,
    type,
    async send(alerts) {
      if (alerts.length === 0) return;
      await postJson(url, JSON.stringify(payload(alerts)), { timeoutMs: timeout });
    },
    healthcheck: () => healthcheck(url, timeout),
  };
}
