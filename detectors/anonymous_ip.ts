/**
 * `anonymous_ip`: a successful login from an IP inside one of the user-supplied lists (Tor exit
 * nodes, VPN and proxy ranges). BuffaLogs relies on the log source to tag logins
 * (`intelligence_category: anonymizer`); here the lists are files of IPv4/IPv6 addresses and
 * CIDRs, one per line (`#` starts a comment; the first word of a line is used, so Tor's bulk exit
 * list works as is), reloaded when a file changes (checked at most every `reloadInterval`).
 * One alert per login.
 *
 * State: `["user", account, user]` → the user's first login (for the learning period) and failed-login
 * count, expiring after `idleExpiry` without logins.
 *
 * @module
 */

import { resolve } from "node:path";
import { log } from "../core/log.ts";
import type { NormalizedEvent, Severity } from "../core/types.ts";
import { SEVERITIES } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import { IpSet } from "../mapping/ip.ts";
import {
  before,
  checkLoginOptions,
  durationOption,
  loginDefaults,
  type LoginOptions,
  LoginPolicy,
  type ProfileBase,
  subjectOf,
} from "./_login.ts";
import type { Detector, DetectorContext, DetectorContextInit, DetectorPlugin } from "./mod.ts";

/** Options of `anonymous_ip` (plus the shared login options). */
export interface Options extends LoginOptions {
  /** Files of IPs and CIDRs (relative paths: from the config file's folder). */
  lists: string[];
  /** How often the files are checked for changes (`"30s"`, or seconds; 0: at every login). */
  reloadInterval: string | number;
  /** Severity (VIP users: one level higher). */
  severity: Severity;
}

/** Defaults of `anonymous_ip`. */
export const defaults = {
  ...loginDefaults,
  lists: [],
  reloadInterval: "30s",
  severity: "medium",
} satisfies Options;

interface ListFile {
  path: string;
  mtime: number;
  size: number;
  set: IpSet;
}

/** Parses a list file: the first word of each line that is not blank or a comment. */
export function parseIpList(text: string, path: string): { set: IpSet; bad: number } {
  const set = new IpSet();
  let bad = 0;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (!line) continue;
    try {
      set.add(line.split(/[\s,;]+/)[0]);
    } catch {
      bad++;
    }
  }
  if (bad) log.warn(`${path}: ${bad} line(s) are not IP addresses or CIDRs and were skipped`);
  return { set, bad };
}

async function loadList(path: string): Promise<ListFile> {
  const info = await Deno.stat(path);
  const text = await Deno.readTextFile(path);
  const { set } = parseIpList(text, path);
  return { path, mtime: info.mtime?.getTime() ?? 0, size: info.size, set };
}

/**
 * Creates an `anonymous_ip` detector; reads the lists (a missing file is an error).
 *
 * @example Tor exit nodes
 * ```ts
 * import { createAnonymousIp } from "./anonymous_ip.ts";
 * const detector = await createAnonymousIp(
 *   { lists: ["lists/tor-exits.txt"] },
 *   { name: "anonymous_ip", baseDir: "." },
 * );
 * ```
 */
export async function createAnonymousIp(
  options: Partial<Options>,
  init: DetectorContextInit,
): Promise<Detector> {
  const opts = { ...defaults, ...options };
  const policy = new LoginPolicy(opts, init.name);
  const intervalMs = opts.reloadInterval === 0 || opts.reloadInterval === "0"
    ? 0
    : durationOption(init.name, "reloadInterval", opts.reloadInterval);
  const files: ListFile[] = [];
  for (const path of opts.lists.map((p) => resolve(init.baseDir, p))) {
    try {
      files.push(await loadList(path));
    } catch (error) {
      throw new Error(
        `${init.name}: cannot read the IP list ${path}: ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }
  let checked = Date.now();

  /** Reloads the files that changed since they were read (a vanished file keeps its list). */
  async function refresh(): Promise<void> {
    checked = Date.now();
    for (let i = 0; i < files.length; i++) {
      const file = files[i];
      try {
        const info = await Deno.stat(file.path);
        if ((info.mtime?.getTime() ?? 0) === file.mtime && info.size === file.size) continue;
        files[i] = await loadList(file.path);
        log.info(`${init.name}: reloaded ${file.path}`);
      } catch (error) {
        log.warn(`${init.name}: cannot reload ${file.path}: ${(error as Error).message}`);
      }
    }
  }

  function listed(ip: string): string | undefined {
    for (const file of files) if (file.set.has(ip)) return file.path;
    return undefined;
  }

  /** A successful (`login`) or failed login. */
  async function handle(
    event: NormalizedEvent,
    context: DetectorContext,
    login: boolean,
  ): Promise<void> {
    const { account, user } = subjectOf(event);
    const key = ["user", account, user];
    const profile = await context.state.get<ProfileBase>(key) ?? {};
    if (!login) {
      policy.noteFailure(profile, event);
      context.state.set(key, profile, { expireIn: policy.expireIn });
      return;
    }
    if (!profile.first || before(event.time, event.event_id, ...profile.first)) {
      profile.first = [event.time, event.event_id];
      context.state.set(key, profile, { expireIn: policy.expireIn });
    }
    if (!event.ip) return;
    if (Date.now() - checked >= intervalMs) await refresh();
    const list = listed(event.ip);
    if (!list) return;
    const draft = {
      severity: policy.severity(opts.severity, user),
      title: `Login from an anonymous IP by ${user}: ${event.ip}`,
      user,
      details: {
        list,
        country: event.country,
        user_agent: event.agent,
        failed_logins: profile.failed,
      },
    };
    policy.decide(context, event, draft, {
      user,
      login: policy.loginFilter(event.ip, event.agent),
      country: event.country,
      time: event.time,
      first: profile.first[0],
    });
  }

  return policy.detector("anonymous_ip", handle);
}

/** The `anonymous_ip` plugin (off unless configured: it needs `lists`). */
export const anonymousIpDetector: DetectorPlugin = {
  description: "Login from an IP in user-supplied lists (Tor exit nodes, VPN ranges)",
  builtin: false,
  check(check: OptionsChecker) {
    checkLoginOptions(check);
    check.strings("lists", { required: true, nonEmpty: true });
    check.duration("reloadInterval");
    check.string("severity", { oneOf: SEVERITIES });
  },
  create: (options: RawOptions, init) => createAnonymousIp(options as Partial<Options>, init),
};
