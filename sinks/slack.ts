/**
 * The `slack` sink: posts alerts to a Slack incoming webhook as Block Kit messages.
 *
 * One alert: a `header` (severity emoji + title), a `section` with the common fields (severity,
 * detector, user, IP/country, time, account, region), `section`s with the detector-specific
 * details (≤ 10 fields each), a `context` with the alert and event ids, and a `text` fallback
 * for notifications. A group: a header, a summary section, one section per alert, and a context.
 *
 * Slack's limits are applied by truncating with an ellipsis, never by rejecting: header text
 * 150 characters, section text 3000, ≤ 10 fields of ≤ 2000 characters, ≤ 50 blocks, ≤ 10 context
 * elements, and the `text` fallback kept to 3000 characters.
 *
 * The health check POSTs an empty JSON object `{}`: Slack answers `400 no_text` for a live
 * webhook and posts nothing, while a revoked or wrong webhook answers 403/404/410.
 *
 * @module
 */

import type { Alert, Severity } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { Sink, SinkContext, SinkPlugin } from "./mod.ts";
import {
  alertFacts,
  type ChatOptions,
  chatSink,
  checkTimeout,
  checkUrl,
  DEFAULT_TIMEOUT,
  detailFacts,
  ELLIPSIS,
  type Fact,
  groupHeadline,
  groupTimeSpan,
  httpRequest,
  ipText,
  statusError,
  timeText,
  topSeverity,
  truncate,
} from "./_http.ts";
import { maskUrl } from "../core/log.ts";

/** Options of the `slack` sink: the incoming webhook `url` (`https://hooks.slack.com/services/…`) and a `timeout`. */
export type Options = ChatOptions;

/** Defaults of the `slack` sink (`url` has none: it is required). */
export const defaults = { timeout: DEFAULT_TIMEOUT } satisfies Omit<Options, "url">;

/** Slack's Block Kit limits applied to every message. */
export const SLACK_LIMITS = {
  /** Characters of a header block's text. */
  headerText: 150,
  /** Characters of a section block's text. */
  sectionText: 3000,
  /** Fields of a section block. */
  fields: 10,
  /** Characters of one field. */
  fieldText: 2000,
  /** Blocks of a message. */
  blocks: 50,
  /** Elements of a context block. */
  contextElements: 10,
  /** Characters of a context element (a text object). */
  contextText: 3000,
  /** Characters of the top-level `text` fallback (Slack cuts at 40,000; keep it short). */
  text: 3000,
} as const;

/** Severity emoji shown in the header. */
export const SEVERITY_EMOJI: Record<Severity, string> = {
  critical: "🚨",
  high: "🔴",
  medium: "🟠",
  low: "🟡",
  info: "🔵",
};

/** Most detail sections of a one-alert message (10 fields each). */
const MAX_DETAIL_SECTIONS = 4;

/** A Slack text object. */
export interface SlackText {
  /** `plain_text` or `mrkdwn`. */
  type: "plain_text" | "mrkdwn";
  /** The text. */
  text: string;
  /** Emoji shortcodes (plain_text only). */
  emoji?: boolean;
}

/** A Block Kit block (the kinds this sink uses). */
export type SlackBlock =
  | { type: "header"; text: SlackText }
  | { type: "section"; text?: SlackText; fields?: SlackText[] }
  | { type: "context"; elements: SlackText[] }
  | { type: "divider" };

/** The JSON posted to the webhook. */
export interface SlackPayload {
  /** Fallback text (notifications, clients without blocks). */
  text: string;
  /** The Block Kit blocks. */
  blocks: SlackBlock[];
}

/** Escapes `&`, `<`, `>` as Slack's mrkdwn requires. */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Escapes `text` for mrkdwn and truncates it to `max`, never cutting inside an entity. */
export function mrkdwn(text: string, max: number): string {
  const escaped = escapeMrkdwn(text);
  if (escaped.length <= max) return escaped;
  const cut = truncate(escaped, max);
  const body = cut.slice(0, -ELLIPSIS.length);
  const amp = body.lastIndexOf("&");
  return amp >= 0 && !body.slice(amp).includes(";") ? body.slice(0, amp) + ELLIPSIS : cut;
}

function plain(text: string, max: number): SlackText {
  return { type: "plain_text", text: truncate(text, max), emoji: true };
}

function md(text: string): SlackText {
  return { type: "mrkdwn", text };
}

/** `*Label*\nvalue`, escaped, within `max` characters. */
function field(fact: Fact, max: number = SLACK_LIMITS.fieldText): SlackText {
  const label = `*${mrkdwn(fact.label, 100)}*\n`;
  return md(label + mrkdwn(fact.value || "—", max - label.length));
}

function idsContext(alerts: Alert[]): SlackBlock {
  const ids = alerts.map((a) => a.id).join(", ");
  const events = [...new Set(alerts.flatMap((a) => a.event_ids))].join(", ");
  const elements = [md(mrkdwn(`trailwatch · alert ${ids}`, SLACK_LIMITS.contextText))];
  if (events) elements.push(md(mrkdwn(`events: ${events}`, SLACK_LIMITS.contextText)));
  return { type: "context", elements };
}

function fallbackText(alert: Alert): string {
  const who = [alert.user && `user ${alert.user}`, ipText(alert) && `IP ${ipText(alert)}`]
    .filter(Boolean).join(", ");
  return `[${alert.severity.toUpperCase()}] ${alert.title}${who ? ` (${who})` : ""}`;
}

function singleMessage(alert: Alert): SlackPayload {
  const blocks: SlackBlock[] = [
    {
      type: "header",
      text: plain(`${SEVERITY_EMOJI[alert.severity]} ${alert.title}`, SLACK_LIMITS.headerText),
    },
    { type: "section", fields: alertFacts(alert).map((f) => field(f)) },
  ];
  const details = detailFacts(alert);
  const shown = SLACK_LIMITS.fields * MAX_DETAIL_SECTIONS;
  for (let i = 0; i < Math.min(details.length, shown); i += SLACK_LIMITS.fields) {
    blocks.push({
      type: "section",
      fields: details.slice(i, i + SLACK_LIMITS.fields).map((f) => field(f)),
    });
  }
  if (details.length > shown) {
    const rest = details.slice(shown).map((f) => f.label).join(", ");
    blocks.push({
      type: "context",
      elements: [
        md(mrkdwn(`${details.length - shown} more details: ${rest}`, SLACK_LIMITS.contextText)),
      ],
    });
  }
  blocks.push(idsContext([alert]));
  return { text: mrkdwn(fallbackText(alert), SLACK_LIMITS.text), blocks };
}

function alertLine(alert: Alert): string {
  const facts = [timeText(alert.time), ipText(alert)].filter(Boolean).join(" · ");
  const details = detailFacts(alert).map((f) => `${f.label}: ${f.value}`).join("; ");
  return `*${mrkdwn(`[${alert.severity.toUpperCase()}] ${alert.title}`, 500)}*\n` +
    mrkdwn(`${facts}${details ? `\n${details}` : ""}`, SLACK_LIMITS.sectionText - 520);
}

function groupMessage(alerts: Alert[]): SlackPayload {
  const top = topSeverity(alerts);
  const first = alerts[0];
  const ips = [...new Set(alerts.map(ipText).filter((v): v is string => v !== undefined))];
  const summary: Fact[] = [
    { label: "Highest severity", value: top },
    { label: "Detector", value: first.detector },
  ];
  if (first.user) summary.push({ label: "User", value: first.user });
  summary.push({ label: "Time", value: groupTimeSpan(alerts) });
  if (ips.length) summary.push({ label: ips.length === 1 ? "IP" : "IPs", value: ips.join(", ") });
  const blocks: SlackBlock[] = [
    {
      type: "header",
      text: plain(`${SEVERITY_EMOJI[top]} ${groupHeadline(alerts)}`, SLACK_LIMITS.headerText),
    },
    { type: "section", fields: summary.map((f) => field(f)) },
  ];
  // Header + summary + (more) + ids context.
  const room = SLACK_LIMITS.blocks - blocks.length - 2;
  const shown = alerts.length <= room + 1 ? alerts.length : room;
  for (const alert of alerts.slice(0, shown)) {
    blocks.push({ type: "section", text: md(alertLine(alert)) });
  }
  if (shown < alerts.length) {
    const rest = alerts.slice(shown).map((a) => a.title).join("; ");
    blocks.push({
      type: "context",
      elements: [
        md(mrkdwn(`…and ${alerts.length - shown} more: ${rest}`, SLACK_LIMITS.contextText)),
      ],
    });
  }
  blocks.push(idsContext(alerts));
  const text = `${groupHeadline(alerts)} (highest ${top}): ${
    alerts.map((a) => a.title).join("; ")
  }`;
  return { text: mrkdwn(text, SLACK_LIMITS.text), blocks: blocks.slice(0, SLACK_LIMITS.blocks) };
}

/**
 * The Block Kit message for one alert or a group, within Slack's limits.
 *
 * @example Building a message
 * ```ts
 * const payload = slackPayload([alert]);
 * payload.blocks[0]; // { type: "header", text: { type: "plain_text", text: "🔴 …" } }
 * ```
 */
export function slackPayload(alerts: Alert[]): SlackPayload {
  return alerts.length === 1 ? singleMessage(alerts[0]) : groupMessage(alerts);
}

/**
 * Creates a `slack` sink.
 *
 * @example A Slack incoming webhook
 * ```ts
 * const sink = createSlackSink(
 *   { url: "https://hooks.slack.com/services/T000/B000/XXXX" },
 *   { name: "slack", baseDir: "." },
 * );
 * ```
 */
export function createSlackSink(
  options: Partial<Options> & Pick<Options, "url">,
  context: SinkContext,
): Sink {
  return chatSink(
    "slack",
    context,
    { ...defaults, ...options },
    slackPayload,
    async (url, timeout) => {
      const result = await httpRequest(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
        timeoutMs: timeout,
      });
      if (result.status === 400 || (result.status >= 200 && result.status < 300)) {
        return `${maskUrl(url)} accepts the webhook token (empty test payload → ${result.status})`;
      }
      throw statusError("POST", url, result)!;
    },
  );
}

/** The `slack` plugin. */
export const slackSink: SinkPlugin = {
  description: "Alerts posted to a Slack incoming webhook (Block Kit)",
  check(check: OptionsChecker) {
    checkUrl(check);
    checkTimeout(check);
  },
  create: (options: RawOptions, context) =>
    createSlackSink(options as Partial<Options> & Pick<Options, "url">, context),
};
