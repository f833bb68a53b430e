/**
 * Logging with secret redaction. Every log line, error message and summary reason passes through
 * {@link redact}, which replaces every registered secret (AWS keys, session tokens, webhook URLs
 * and their tokens, HMAC secrets, header values) with `***`.
 *
 * @module
 */

const secrets = new Set<string>();
let sortedSecrets: string[] = [];

/** Minimum length of a registered secret; shorter strings would mask ordinary words. */
const MIN_SECRET_LENGTH = 4;

/** Registers a value that must never appear in logs, errors or summaries. */
export function registerSecret(value: unknown): void {
  if (typeof value !== "string" || value.length < MIN_SECRET_LENGTH || secrets.has(value)) return;
  secrets.add(value);
  // Longest first, so a URL is masked whole before its parts are.
  sortedSecrets = [...secrets].sort((a, b) => b.length - a.length);
}

/**
 * Registers a URL that carries credentials: the whole URL, its path and query, and every path
 * segment or query value long enough to be a token.
 */
export function registerSecretUrl(value: unknown): void {
  if (typeof value !== "string") return;
  registerSecret(value);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return;
  }
  registerSecret(url.pathname + url.search);
  for (const segment of url.pathname.split("/")) {
    if (looksLikeToken(segment)) registerSecret(segment);
  }
  for (const [key, v] of url.searchParams) {
    if (looksLikeToken(v) || /sig|token|key|secret|code|auth|pass/i.test(key)) registerSecret(v);
  }
  if (url.password) registerSecret(url.password);
}

/** A URL part that carries an id or token, not a word like "services" or "webhooks". */
function looksLikeToken(part: string): boolean {
  return part.length >= 16 || (part.length >= 8 && /\d/.test(part) && /[A-Za-z]/.test(part));
}

/** Replaces every registered secret in `text` with `***`. */
export function redact(text: string): string {
  if (sortedSecrets.length === 0) return text;
  let out = text;
  for (const secret of sortedSecrets) {
    if (out.includes(secret)) out = out.split(secret).join("***");
  }
  return out;
}

/** A URL safe to show: scheme, host and port only, e.g. `https://hooks.slack.com/***`. */
export function maskUrl(value: string): string {
  try {
    const url = new URL(value);
    return `${url.protocol}//${url.host}${url.pathname === "/" && !url.search ? "/" : "/***"}`;
  } catch {
    return "***";
  }
}

/** Log levels, quietest last. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const LEVELS: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };

function envLevel(): LogLevel {
  try {
    const value = Deno.env.get("TRAILWATCH_LOG")?.toLowerCase();
    if (value && value in LEVELS) return value as LogLevel;
  } catch {
    // No env permission: keep the default.
  }
  return "info";
}

let level: LogLevel = envLevel();
let sink: (line: string) => void = (line) => console.error(line);

/** Sets the minimum level that is written (default `info`, or `TRAILWATCH_LOG`). */
export function setLogLevel(value: LogLevel): void {
  level = value;
}

/**
 * Redirects log lines (tests capture them) at level `at` (default: everything); returns a
 * function restoring the previous sink and level.
 */
export function captureLog(fn: (line: string) => void, at: LogLevel = "debug"): () => void {
  const previous = { sink, level };
  sink = fn;
  level = at;
  return () => {
    sink = previous.sink;
    level = previous.level;
  };
}

function write(at: LogLevel, message: string): void {
  if (LEVELS[at] < LEVELS[level]) return;
  sink(`${new Date().toISOString()} ${at.toUpperCase().padEnd(5)} ${redact(message)}`);
}

/** The process logger: one line per call on stderr, secrets redacted. */
export const log = {
  /** Detail for troubleshooting. */
  debug: (message: string): void => write("debug", message),
  /** Normal progress. */
  info: (message: string): void => write("info", message),
  /** Something went wrong but the run goes on. */
  warn: (message: string): void => write("warn", message),
  /** Something failed. */
  error: (message: string): void => write("error", message),
  /** A pass summary: written at every level but `silent`. */
  summary: (message: string): void => {
    if (level !== "silent") sink(`${new Date().toISOString()} INFO  ${redact(message)}`);
  },
};
