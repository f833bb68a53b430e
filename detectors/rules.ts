/**
 * `rules`: Sigma rules over the raw CloudTrail record. Loads the built-in pack
 * (`detectors/rules/*.yml`, unless `builtin: false`) and every `.yml`/`.yaml` file under the
 * listed `paths`, keeps the rules whose logsource is `product: aws` + `service: cloudtrail`, and
 * raises one alert per matching rule. Rules are indexed by the `eventName`/`eventSource` values
 * they require, so an event only evaluates its candidate rules. See `_sigma.ts` for the Sigma
 * subset supported.
 *
 * By default the two pack rules that duplicate the dedicated detectors `root_activity` and
 * `console_login_no_mfa` are excluded ({@link DEFAULT_EXCLUDE}).
 *
 * @module
 */

import { isAbsolute, join, resolve } from "node:path";
import { materialize } from "../core/decode.ts";
import { ConfigError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import type { AlertDraft, CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import {
  LEVEL_SEVERITY,
  parseRuleFile,
  RuleIndex,
  type RuleProblem,
  SIGMA_LEVELS,
  type SigmaLevel,
  type SigmaRule,
} from "./_sigma.ts";
import type { Detector, DetectorContextInit, DetectorPlugin } from "./mod.ts";

export type { RuleProblem, SigmaLevel, SigmaRule } from "./_sigma.ts";

/** Id of the pack's root-account-usage rule (the `root_activity` detector covers it). */
export const ROOT_USAGE_RULE_ID = "5e9b3c1a-7d24-4f0b-9a61-2c8e4b7d1f03";

/** Id of the pack's console-login-without-MFA rule (`console_login_no_mfa` covers it). */
export const CONSOLE_LOGIN_NO_MFA_RULE_ID = "c3a7e5d2-1b84-4e96-8f0a-6d2b9c4e7a15";

/** Rule ids excluded by default: the two that dedicated detectors already raise. */
export const DEFAULT_EXCLUDE: readonly string[] = [
  ROOT_USAGE_RULE_ID,
  CONSOLE_LOGIN_NO_MFA_RULE_ID,
];

/** Options of `rules`. */
export interface Options {
  /** Files or directories of Sigma rules (searched recursively); relative to the config's folder. */
  paths: string[];
  /** Whether the built-in pack is loaded. */
  builtin: boolean;
  /** Rule ids that are not run. */
  exclude: string[];
  /** Rules below this level are not run. */
  minLevel?: SigmaLevel | "info";
}

/** Defaults of `rules`. */
export const defaults = {
  paths: [],
  builtin: true,
  exclude: [...DEFAULT_EXCLUDE],
} satisfies Options;

/** Serialized size above which an alert carries the event id instead of the matched record. */
export const MAX_MATCHED_BYTES = 48 * 1024;

/** Where the built-in pack lives. */
export const BUILTIN_RULES_DIR: URL = new URL("./rules/", import.meta.url);

/** What loading found; logged once and kept on the detector. */
export interface RulesReport {
  /** Rules that run. */
  loaded: number;
  /** Rules whose logsource is not AWS CloudTrail. */
  skipped: number;
  /** Rules not run because they use what is not supported (or are not valid Sigma). */
  unsupported: RuleProblem[];
  /** Files that could not be read or parsed (YAML syntax errors); their rules are not run. */
  errors: RuleProblem[];
  /** Ids of loaded rules left out by `exclude`. */
  excluded: string[];
  /** Rules left out by `minLevel`. */
  belowMinLevel: number;
  /** Files read. */
  files: number;
}

/** A `rules` detector: its loaded rules and the load report. */
export interface RulesDetector extends Detector {
  /** The rules that run, in load order (built-in pack first). */
  readonly rules: readonly SigmaRule[];
  /** What loading found. */
  readonly report: RulesReport;
}

interface RuleFile {
  /** Name shown in reports. */
  label: string;
  /** Path or URL to read. */
  location: string | URL;
}

async function builtinFiles(): Promise<RuleFile[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(BUILTIN_RULES_DIR)) {
    if (entry.isFile && /\.ya?ml$/i.test(entry.name)) names.push(entry.name);
  }
  names.sort();
  return names.map((name) => ({
    label: `builtin:${name}`,
    location: new URL(name, BUILTIN_RULES_DIR),
  }));
}

/** Every rule file under `path` (a file or a directory, walked recursively, dot-folders skipped). */
async function filesUnder(path: string, label: string): Promise<RuleFile[]> {
  const info = await Deno.stat(path);
  if (info.isFile) return [{ label, location: path }];
  const out: RuleFile[] = [];
  const walk = async (dir: string, shown: string): Promise<void> => {
    const entries: Deno.DirEntry[] = [];
    for await (const entry of Deno.readDir(dir)) entries.push(entry);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (entry.name.startsWith(".")) continue;
      const full = join(dir, entry.name);
      const fullShown = join(shown, entry.name);
      let isFile = entry.isFile;
      let isDirectory = entry.isDirectory;
      if (entry.isSymlink) {
        // Symlinked files are followed; symlinked folders are not (no loops).
        isFile = await Deno.stat(full).then((s) => s.isFile, () => false);
        isDirectory = false;
      }
      if (isDirectory) await walk(full, fullShown);
      else if (isFile && /\.ya?ml$/i.test(entry.name)) {
        out.push({ label: fullShown, location: full });
      }
    }
  };
  await walk(path, label);
  return out;
}

/**
 * Loads and compiles rules: the built-in pack (when `builtin`) and every file under `paths`
 * (relative ones resolved against `baseDir`). Throws a {@link ConfigError} when a path does not
 * exist; files that cannot be parsed are reported and skipped.
 */
export async function loadRules(
  options: { paths: readonly string[]; builtin: boolean; baseDir: string; configPath?: string },
): Promise<{ rules: SigmaRule[]; report: RulesReport }> {
  const files: RuleFile[] = options.builtin ? await builtinFiles() : [];
  const missing: { path: string; message: string }[] = [];
  for (const [i, path] of options.paths.entries()) {
    const full = isAbsolute(path) ? path : resolve(options.baseDir, path);
    try {
      files.push(...await filesUnder(full, path));
    } catch (error) {
      const message = error instanceof Deno.errors.NotFound
        ? `no such file or directory: ${full}`
        : `cannot read ${full}: ${(error as Error).message}`;
      missing.push({ path: `${options.configPath ?? "paths"}[${i}]`, message });
    }
  }
  if (missing.length > 0) throw new ConfigError(missing);

  const rules: SigmaRule[] = [];
  const seen = new Map<string, string>();
  const report: RulesReport = {
    loaded: 0,
    skipped: 0,
    unsupported: [],
    errors: [],
    excluded: [],
    belowMinLevel: 0,
    files: files.length,
  };
  for (const file of files) {
    let text: string;
    try {
      text = await Deno.readTextFile(file.location);
    } catch (error) {
      report.errors.push({ file: file.label, reason: `cannot read: ${(error as Error).message}` });
      continue;
    }
    const result = parseRuleFile(text, file.label);
    if (result.error) {
      report.errors.push({ file: file.label, reason: result.error });
      continue;
    }
    report.skipped += result.skipped;
    report.unsupported.push(...result.unsupported);
    for (const rule of result.rules) {
      const first = seen.get(rule.id);
      if (first) {
        report.unsupported.push({
          file: file.label,
          id: rule.id,
          title: rule.title,
          reason: `duplicate id (already loaded from ${first})`,
        });
        continue;
      }
      seen.set(rule.id, file.label);
      rules.push(rule);
    }
  }
  report.loaded = rules.length;
  return { rules, report };
}

function normalizeLevel(level: string | undefined): SigmaLevel | undefined {
  if (level === undefined) return undefined;
  return level === "info" ? "informational" : level as SigmaLevel;
}

/** Creates a `rules` detector (reads and compiles the rules). */
export async function createRules(
  options: Partial<Options>,
  init: DetectorContextInit,
): Promise<RulesDetector> {
  const opts = { ...defaults, ...options };
  const { rules: all, report } = await loadRules({
    paths: opts.paths,
    builtin: opts.builtin,
    baseDir: init.baseDir,
    configPath: `detectors.${init.name}.paths`,
  });
  const exclude = new Set(opts.exclude);
  const minLevel = normalizeLevel(opts.minLevel);
  const minRank = minLevel ? SIGMA_LEVELS.indexOf(minLevel) : 0;
  const rules = all.filter((rule) => {
    if (exclude.has(rule.id)) {
      report.excluded.push(rule.id);
      return false;
    }
    if (SIGMA_LEVELS.indexOf(rule.level) < minRank) {
      report.belowMinLevel++;
      return false;
    }
    return true;
  });
  report.loaded = rules.length;
  const index = new RuleIndex(rules);

  for (const problem of report.errors) {
    log.warn(`rules ${init.name}: ${problem.file}: ${problem.reason}; skipped`);
  }
  for (const problem of report.unsupported) {
    const what = problem.id
      ? ` rule ${problem.id}${problem.title ? ` (${problem.title})` : ""}`
      : "";
    log.warn(`rules ${init.name}: ${problem.file}${what} not run: ${problem.reason}`);
  }
  for (const id of exclude) {
    if (!report.excluded.includes(id) && !DEFAULT_EXCLUDE.includes(id)) {
      log.warn(`rules ${init.name}: exclude lists ${id}, which is not a loaded rule`);
    }
  }
  log.info(
    `rules ${init.name}: loaded ${report.loaded} Sigma rules from ${report.files} files` +
      ` (${index.unindexed} evaluated for every event); skipped ${report.skipped} (other logsource),` +
      ` unsupported ${report.unsupported.length}, unreadable files ${report.errors.length},` +
      ` excluded ${report.excluded.length}, below minLevel ${report.belowMinLevel}`,
  );

  return {
    name: init.name,
    type: "rules",
    rules,
    report,
    match(event: NormalizedEvent): AlertDraft[] | undefined {
      const candidates = index.candidates(event.raw);
      if (candidates.length === 0) return undefined;
      // A rule's test parses the deferred payloads only if it reads them.
      const matched = index.evaluate(event.raw, candidates);
      if (matched.length === 0) return undefined;
      // The alert shows the whole record.
      materialize(event.raw);
      return drafts(matched, matchedRecord(event.raw, event.event_id));
    },
  };
}

/**
 * The alerts of the rules that matched. (Out of `match`: a closure there would make V8 allocate a
 * context on every call, matching or not.)
 */
function drafts(matched: SigmaRule[], record: Record<string, unknown>): AlertDraft[] {
  return matched.map((rule) => ({
    severity: LEVEL_SEVERITY[rule.level],
    title: rule.title,
    key: rule.id,
    details: {
      rule_id: rule.id,
      rule_title: rule.title,
      level: rule.level,
      tags: rule.tags,
      description: rule.description,
      falsepositives: rule.falsepositives,
      ...record,
    },
  }));
}

/** The `matched` detail: the record, or a note and the event id when it is too large. */
function matchedRecord(raw: CloudTrailRecord, eventId: string): Record<string, unknown> {
  const json = JSON.stringify(raw);
  // A UTF-8 byte is at least one UTF-16 unit and at most three: encode only when unsure.
  if (json.length * 3 <= MAX_MATCHED_BYTES) return { matched: raw };
  const size = json.length > MAX_MATCHED_BYTES
    ? json.length
    : new TextEncoder().encode(json).length;
  if (size <= MAX_MATCHED_BYTES) return { matched: raw };
  return {
    matched_omitted:
      `the record is ${size} bytes serialized (limit ${MAX_MATCHED_BYTES}); look it up by event_id`,
    event_id: eventId,
  };
}

/** The `rules` plugin. */
export const rulesDetector: DetectorPlugin = {
  description: "Sigma rules (built-in pack and your own) over the raw CloudTrail record",
  check(check: OptionsChecker) {
    check.strings("paths", {
      each: (item) => item.trim() === "" ? "must not be empty" : undefined,
    });
    check.boolean("builtin");
    check.strings("exclude");
    check.string("minLevel", { oneOf: ["info", ...SIGMA_LEVELS] });
  },
  create: (options: RawOptions, init) => createRules(options as Partial<Options>, init),
};
