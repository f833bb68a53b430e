/**
 * The `discord` sink: posts alerts to a Discord channel webhook as embeds coloured by severity.
 *
 * One alert: one embed (title, the common fields inline, the detector-specific details as
 * fields, the event time as the embed timestamp, the alert id in the footer). A group: a
 * `content` headline and one embed per alert (at most 10; past nine alerts, the tenth embed lists
 * the rest). Mentions are disabled (`allowed_mentions: {parse: []}`): an alert text containing
 * `@everyone` pings nobody.
 *
 * Discord's limits are applied by truncating with an ellipsis, never by rejecting: title 256
 * characters, description 4096, ≤ 25 fields, field name 256, value 1024, footer 2048, ≤ 10 embeds,
 * content 2000, username 80, and 6000 characters over all embeds of a message (caps are lowered
 * step by step until the message fits).
 *
 * The health check is `GET` on the webhook URL (Discord's "Get Webhook with Token"): it posts
 * nothing and proves the token is valid; only the webhook's name and channel are reported.
 *
 * @module
 */

import { maskUrl } from "../core/log.ts";
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
  httpRequest,
  statusError,
  topSeverity,
  truncate,
} from "./_http.ts";

/** Options of the `discord` sink: the channel webhook `url` (`https://discord.com/api/webhooks/<id>/<token>`), a `timeout`, and: */
export interface Options extends ChatOptions {
  /** Display name of the messages (≤ 80 characters); the webhook's own name when unset. */
  username?: string;
}

/** Defaults of the `discord` sink (`url` has none: it is required). */
export const defaults = { timeout: DEFAULT_TIMEOUT } satisfies Omit<Options, "url">;

/** Discord's message and embed limits. */
export const DISCORD_LIMITS = {
  /** Characters of an embed title. */
  title: 256,
  /** Characters of an embed description. */
  description: 4096,
  /** Fields of an embed. */
  fields: 25,
  /** Characters of a field name. */
  fieldName: 256,
  /** Characters of a field value. */
  fieldValue: 1024,
  /** Characters of an embed footer. */
  footer: 2048,
  /** Characters over all embeds of a message (title, description, fields, footer, author). */
  total: 6000,
  /** Embeds of a message. */
  embeds: 10,
  /** Characters of the message content. */
  content: 2000,
  /** Characters of the username override. */
  username: 80,
} as const;

/** Embed colour per severity (RGB as an integer). */
export const SEVERITY_COLOUR: Record<Severity, number> = {
  critical: 0x992d22,
  high: 0xe74c3c,
  medium: 0xe67e22,
  low: 0xf1c40f,
  info: 0x3498db,
};

/** An embed field. */
export interface DiscordField {
  /** Name (≤ 256). */
  name: string;
  /** Value (≤ 1024, never empty). */
  value: string;
  /** Shown side by side with its neighbours. */
  inline?: boolean;
}

/** An embed. */
export interface DiscordEmbed {
  /** Title (≤ 256). */
  title: string;
  /** Description (≤ 4096). */
  description?: string;
  /** Colour by severity. */
  color: number;
  /** ISO time shown by Discord. */
  timestamp?: string;
  /** Fields (≤ 25). */
  fields?: DiscordField[];
  /** Footer (≤ 2048). */
  footer?: { text: string };
}

/** The JSON posted to the webhook. */
export interface DiscordPayload {
  /** Display name override. */
  username?: string;
  /** Headline of a group (≤ 2000). */
  content?: string;
  /** Embeds (≤ 10). */
  embeds: DiscordEmbed[];
  /** Mentions disabled. */
  allowed_mentions: { parse: string[] };
}

interface Caps {
  title: number;
  description: number;
  value: number;
  fields: number;
}

/** Shrinking steps, tried in order until the embeds total ≤ 6000 characters. */
const STEPS: Caps[] = [
  { title: 256, description: 4096, value: 1024, fields: 25 },
  { title: 256, description: 2048, value: 512, fields: 25 },
  { title: 200, description: 1024, value: 256, fields: 20 },
  { title: 150, description: 512, value: 128, fields: 15 },
  { title: 120, description: 256, value: 64, fields: 12 },
  { title: 100, description: 128, value: 40, fields: 10 },
  { title: 80, description: 64, value: 24, fields: 8 },
  { title: 64, description: 0, value: 16, fields: 6 },
];

/** Characters an embed counts towards Discord's 6000-character total. */
export function embedChars(embed: DiscordEmbed): number {
  return embed.title.length + (embed.description?.length ?? 0) + (embed.footer?.text.length ?? 0) +
    (embed.fields ?? []).reduce((n, f) => n + f.name.length + f.value.length, 0);
}

function toField(fact: Fact, caps: Caps, inline: boolean): DiscordField {
  return {
    name: truncate(fact.label, Math.min(DISCORD_LIMITS.fieldName, Math.max(16, caps.value))),
    value: truncate(fact.value || "—", Math.min(DISCORD_LIMITS.fieldValue, caps.value)),
    inline,
  };
}

function alertEmbed(alert: Alert, caps: Caps): DiscordEmbed {
  const title = `[${alert.severity.toUpperCase()}] ${alert.title}`;
  const room = Math.min(DISCORD_LIMITS.fields, caps.fields);
  const common = alertFacts(alert);
  const details = detailFacts(alert);
  const fields = common.slice(0, room).map((f) => toField(f, caps, true));
  const detailRoom = Math.max(0, room - fields.length);
  for (const fact of details.slice(0, detailRoom)) {
    fields.push(toField(fact, caps, fact.value.length <= 40));
  }
  // What did not fit: the whole title, then the details left over, in the description.
  const lines: string[] = [];
  if (title.length > caps.title) lines.push(alert.title);
  for (const fact of details.slice(detailRoom)) lines.push(`**${fact.label}**: ${fact.value}`);
  const embed: DiscordEmbed = {
    title: truncate(title, Math.min(DISCORD_LIMITS.title, caps.title)),
    color: SEVERITY_COLOUR[alert.severity],
    fields,
    footer: {
      text: truncate(`trailwatch · alert ${alert.id}`, Math.min(DISCORD_LIMITS.footer, caps.title)),
    },
  };
  const description = truncate(
    lines.join("\n"),
    Math.min(DISCORD_LIMITS.description, caps.description),
  );
  if (description) embed.description = description;
  if (!Number.isNaN(Date.parse(alert.time))) embed.timestamp = new Date(alert.time).toISOString();
  return embed;
}

/** The tenth embed of a large group: the alerts left over, one line each, within `room`. */
function moreEmbed(rest: Alert[], room: number): DiscordEmbed {
  const title = `…and ${rest.length} more`;
  return {
    title,
    description: truncate(
      rest.map((a) => `[${a.severity.toUpperCase()}] ${a.title} (${a.id})`).join("\n"),
      Math.min(DISCORD_LIMITS.description, Math.max(100, room - title.length)),
    ),
    color: SEVERITY_COLOUR[topSeverity(rest)],
  };
}

function build(alerts: Alert[], caps: Caps, username?: string): DiscordPayload {
  const max = DISCORD_LIMITS.embeds;
  const shown = alerts.length <= max ? alerts : alerts.slice(0, max - 1);
  const embeds = shown.map((a) => alertEmbed(a, caps));
  if (shown.length < alerts.length) {
    // The list of the others gets whatever the shown embeds leave of the total.
    const used = embeds.reduce((n, e) => n + embedChars(e), 0);
    embeds.push(moreEmbed(alerts.slice(shown.length), DISCORD_LIMITS.total - used));
  }
  const payload: DiscordPayload = { embeds, allowed_mentions: { parse: [] } };
  if (username) payload.username = truncate(username, DISCORD_LIMITS.username);
  if (alerts.length > 1) {
    payload.content = truncate(
      `**${groupHeadline(alerts)}** (highest: ${topSeverity(alerts)})`,
      DISCORD_LIMITS.content,
    );
  }
  return payload;
}

/**
 * The Discord message for one alert or a group, within Discord's limits.
 *
 * @example Building a message
 * ```ts
 * const payload = discordPayload([alert]);
 * payload.embeds[0].color; // 0xe74c3c for a high alert
 * ```
 */
export function discordPayload(alerts: Alert[], username?: string): DiscordPayload {
  for (const caps of STEPS) {
    const payload = build(alerts, caps, username);
    if (payload.embeds.reduce((n, e) => n + embedChars(e), 0) <= DISCORD_LIMITS.total) {
      return payload;
    }
  }
  // The last step always fits (10 embeds of ≤ 350 characters); kept for type safety.
  return build(alerts, STEPS[STEPS.length - 1], username);
}

/**
 * Creates a `discord` sink.
 *
 * @example A Discord channel webhook
 * ```ts
 * const sink = createDiscordSink(
 *   { url: "https://discord.com/api/webhooks/123/abc" },
 *   { name: "discord", baseDir: "." },
 * );
 * ```
 */
export function createDiscordSink(
  options: Partial<Options> & Pick<Options, "url">,
  context: SinkContext,
): Sink {
  const opts = { ...defaults, ...options };
  const payload = (alerts: Alert[]) => discordPayload(alerts, opts.username);
  return chatSink("discord", context, opts, payload, async (url, timeout) => {
    const result = await httpRequest(url, { method: "GET", timeoutMs: timeout, bodyChars: 4096 });
    const error = statusError("GET", url, result);
    if (error) throw error;
    let name = "?";
    let channel = "?";
    try {
      const webhook = JSON.parse(result.body);
      if (typeof webhook?.name === "string") name = webhook.name;
      if (typeof webhook?.channel_id === "string") channel = webhook.channel_id;
    } catch {
      // not Discord's JSON: the 2xx is enough
    }
    return `${maskUrl(url)}: webhook "${truncate(name, 80)}" (channel ${channel})`;
  });
}

/** The `discord` plugin. */
export const discordSink: SinkPlugin = {
  description: "Alerts posted to a Discord channel webhook (embeds coloured by severity)",
  check(check: OptionsChecker) {
    checkUrl(check);
    checkTimeout(check);
    check.string("username", {
      pattern: /^.{1,80}$/s,
      hint: "a name of 1 to 80 characters",
    });
  },
  create: (options: RawOptions, context) =>
    createDiscordSink(options as Partial<Options> & Pick<Options, "url">, context),
};
