/**
 * The `teams` sink: posts alerts to Microsoft Teams through a Workflows ("Post to a channel when
 * a webhook request is received") or legacy incoming-webhook URL, as a message with one Adaptive
 * Card attachment (`contentType: application/vnd.microsoft.card.adaptive`, card version 1.4).
 *
 * One alert: a severity line, the title, a FactSet with the common fields (severity, detector,
 * user, IP/country, time, account, region), a FactSet with the detector-specific details, and
 * the alert and event ids. A group: a headline, a summary FactSet, and one container per alert.
 *
 * Teams refuses messages above about 28 KB, so the whole JSON payload is kept under
 * {@link TEAMS_MAX_BYTES}: fact values, titles and detail lists are truncated (with an ellipsis)
 * step by step until it fits, and in a large group the last alerts become an "and N more" line.
 *
 * The health check is a `HEAD` request (it posts nothing): any answer below 500 proves the host
 * is reachable; Workflows URLs cannot be checked further without posting a card.
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
  type Fact,
  groupHeadline,
  groupTimeSpan,
  headCheck,
  ipText,
  jsonBytes,
  timeText,
  topSeverity,
  truncate,
} from "./_http.ts";

/** Options of the `teams` sink: the Workflows (or incoming webhook) `url` and a `timeout`. */
export type Options = ChatOptions;

/** Defaults of the `teams` sink (`url` has none: it is required). */
export const defaults = { timeout: DEFAULT_TIMEOUT } satisfies Omit<Options, "url">;

/** Largest payload posted (bytes of JSON); Teams refuses messages above about 28 KB. */
export const TEAMS_MAX_BYTES = 26_000;

/** The Adaptive Card attachment content type. */
export const ADAPTIVE_CARD_TYPE = "application/vnd.microsoft.card.adaptive";

/** Adaptive Card text colour per severity. */
export const SEVERITY_COLOR: Record<Severity, string> = {
  critical: "Attention",
  high: "Attention",
  medium: "Warning",
  low: "Accent",
  info: "Default",
};

/** An Adaptive Card element (the kinds this sink uses). */
export type CardElement =
  | {
    type: "TextBlock";
    text: string;
    wrap?: boolean;
    size?: string;
    weight?: string;
    color?: string;
    isSubtle?: boolean;
    spacing?: string;
  }
  | { type: "FactSet"; facts: { title: string; value: string }[]; spacing?: string }
  | { type: "Container"; items: CardElement[]; separator?: boolean; spacing?: string };

/** The message posted to Teams. */
export interface TeamsPayload {
  /** Always `message`. */
  type: "message";
  /** One Adaptive Card. */
  attachments: {
    contentType: typeof ADAPTIVE_CARD_TYPE;
    contentUrl: null;
    content: {
      $schema: string;
      type: "AdaptiveCard";
      version: string;
      msteams: { width: "Full" };
      body: CardElement[];
    };
  }[];
}

interface Caps {
  /** Characters of a title. */
  title: number;
  /** Characters of a fact value. */
  value: number;
  /** Detail facts per alert. */
  details: number;
}

/** Shrinking steps, tried in order until the payload fits. */
const STEPS: Caps[] = [
  { title: 500, value: 2000, details: 30 },
  { title: 300, value: 1000, details: 30 },
  { title: 200, value: 500, details: 20 },
  { title: 150, value: 250, details: 15 },
  { title: 120, value: 120, details: 10 },
  { title: 100, value: 60, details: 5 },
  { title: 80, value: 40, details: 0 },
];

function factSet(facts: Fact[], caps: Caps): CardElement {
  return {
    type: "FactSet",
    facts: facts.map((f) => ({
      title: truncate(f.label, Math.min(caps.title, 100)),
      value: truncate(f.value || "—", caps.value),
    })),
  };
}

function idsLine(alerts: Alert[], caps: Caps): CardElement {
  const events = [...new Set(alerts.flatMap((a) => a.event_ids))].join(", ");
  return {
    type: "TextBlock",
    text: truncate(
      `trailwatch · alert ${alerts.map((a) => a.id).join(", ")}${
        events ? ` · events ${events}` : ""
      }`,
      caps.value * 2,
    ),
    wrap: true,
    size: "Small",
    isSubtle: true,
  };
}

function details(alert: Alert, caps: Caps): Fact[] {
  const all = detailFacts(alert);
  if (all.length <= caps.details) return all;
  const shown = all.slice(0, caps.details);
  const rest = all.length - shown.length;
  return caps.details > 0
    ? [...shown, { label: "…", value: `${rest} more detail${rest === 1 ? "" : "s"}` }]
    : [];
}

function singleBody(alert: Alert, caps: Caps): CardElement[] {
  const body: CardElement[] = [
    {
      type: "TextBlock",
      text: `${alert.severity.toUpperCase()} · trailwatch`,
      size: "Small",
      weight: "Bolder",
      color: SEVERITY_COLOR[alert.severity],
    },
    {
      type: "TextBlock",
      text: truncate(alert.title, caps.title),
      size: "Large",
      weight: "Bolder",
      wrap: true,
      spacing: "None",
    },
    factSet(alertFacts(alert), caps),
  ];
  const extra = details(alert, caps);
  if (extra.length) {
    body.push({ type: "TextBlock", text: "Details", weight: "Bolder", spacing: "Medium" });
    body.push(factSet(extra, caps));
  }
  body.push(idsLine([alert], caps));
  return body;
}

function groupBody(alerts: Alert[], caps: Caps, shown: number): CardElement[] {
  const top = topSeverity(alerts);
  const ips = [...new Set(alerts.map(ipText).filter((v): v is string => v !== undefined))];
  const summary: Fact[] = [
    { label: "Highest severity", value: top },
    { label: "Detector", value: alerts[0].detector },
  ];
  if (alerts[0].user) summary.push({ label: "User", value: alerts[0].user });
  summary.push({ label: "Time", value: groupTimeSpan(alerts) });
  if (ips.length) summary.push({ label: ips.length === 1 ? "IP" : "IPs", value: ips.join(", ") });
  const body: CardElement[] = [
    {
      type: "TextBlock",
      text: `${top.toUpperCase()} · trailwatch`,
      size: "Small",
      weight: "Bolder",
      color: SEVERITY_COLOR[top],
    },
    {
      type: "TextBlock",
      text: truncate(groupHeadline(alerts), caps.title),
      size: "Large",
      weight: "Bolder",
      wrap: true,
      spacing: "None",
    },
    factSet(summary, caps),
  ];
  for (const alert of alerts.slice(0, shown)) {
    const facts: Fact[] = [{ label: "Time", value: timeText(alert.time) }];
    const ip = ipText(alert);
    if (ip) facts.push({ label: alert.ip ? "IP" : "Country", value: ip });
    facts.push(...details(alert, caps));
    body.push({
      type: "Container",
      separator: true,
      spacing: "Medium",
      items: [
        {
          type: "TextBlock",
          text: truncate(`${alert.severity.toUpperCase()} · ${alert.title}`, caps.title),
          weight: "Bolder",
          color: SEVERITY_COLOR[alert.severity],
          wrap: true,
        },
        factSet(facts, caps),
      ],
    });
  }
  if (shown < alerts.length) {
    body.push({
      type: "TextBlock",
      text: truncate(
        `…and ${alerts.length - shown} more: ${alerts.slice(shown).map((a) => a.title).join("; ")}`,
        caps.value,
      ),
      wrap: true,
      isSubtle: true,
    });
  }
  body.push(idsLine(alerts, caps));
  return body;
}

function wrap(body: CardElement[]): TeamsPayload {
  return {
    type: "message",
    attachments: [{
      contentType: ADAPTIVE_CARD_TYPE,
      contentUrl: null,
      content: {
        $schema: "http://adaptivecards.io/schemas/adaptive-card.json",
        type: "AdaptiveCard",
        version: "1.4",
        msteams: { width: "Full" },
        body,
      },
    }],
  };
}

/**
 * The Teams message for one alert or a group, under {@link TEAMS_MAX_BYTES} bytes of JSON.
 *
 * @example Building a message
 * ```ts
 * const payload = teamsPayload([alert]);
 * payload.attachments[0].content.type; // "AdaptiveCard"
 * ```
 */
export function teamsPayload(alerts: Alert[], maxBytes: number = TEAMS_MAX_BYTES): TeamsPayload {
  const build = (caps: Caps, shown: number) =>
    wrap(alerts.length === 1 ? singleBody(alerts[0], caps) : groupBody(alerts, caps, shown));
  for (const caps of STEPS) {
    const payload = build(caps, alerts.length);
    if (jsonBytes(payload) <= maxBytes) return payload;
  }
  const last = STEPS[STEPS.length - 1];
  for (let shown = alerts.length - 1; shown >= 1 && alerts.length > 1; shown--) {
    const payload = build(last, shown);
    if (jsonBytes(payload) <= maxBytes) return payload;
  }
  // Only a pathological input (e.g. thousands of event ids) gets here: keep the essentials.
  const tiny: Caps = { title: 80, value: 40, details: 0 };
  return wrap([
    {
      type: "TextBlock",
      text: truncate(
        alerts.length === 1 ? alerts[0].title : groupHeadline(alerts),
        tiny.title,
      ),
      weight: "Bolder",
      wrap: true,
    },
    factSet(alertFacts(alerts[0]), tiny),
  ]);
}

/**
 * Creates a `teams` sink.
 *
 * @example A Teams Workflows webhook
 * ```ts
 * const sink = createTeamsSink(
 *   { url: "https://prod-00.westeurope.logic.azure.com/workflows/…/invoke?sig=…" },
 *   { name: "teams", baseDir: "." },
 * );
 * ```
 */
export function createTeamsSink(
  options: Partial<Options> & Pick<Options, "url">,
  context: SinkContext,
): Sink {
  return chatSink("teams", context, { ...defaults, ...options }, teamsPayload, headCheck);
}

/** The `teams` plugin. */
export const teamsSink: SinkPlugin = {
  description: "Alerts posted to Microsoft Teams (Workflows webhook, Adaptive Card)",
  check(check: OptionsChecker) {
    checkUrl(check);
    checkTimeout(check);
  },
  create: (options: RawOptions, context) =>
    createTeamsSink(options as Partial<Options> & Pick<Options, "url">, context),
};
