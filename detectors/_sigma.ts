/**
 * The Sigma engine behind the `rules` detector (private): parses Sigma YAML, compiles each rule's
 * detection into closures once (regexes and CIDR sets included), and indexes the rules by the
 * `eventName` / `eventSource` values they require so an event only evaluates candidate rules.
 *
 * Supported: selections as maps (AND) and lists (OR), keyword lists, case-insensitive matching,
 * wildcards `*` `?` with `\` escapes, the modifiers `contains` `startswith` `endswith` `all` `re`
 * (`re|i|m|s`) `cidr` `exists` `base64` `base64offset` `fieldref` `cased` `lt` `lte` `gt` `gte`,
 * `null` values, dotted paths through nested objects and arrays, and conditions with `and`, `or`,
 * `not`, parentheses, `1 of x*`, `all of x*`, `N of …`, `1 of them`, `all of them`.
 * Not supported (the rule is reported, not run): aggregations (`| count() …`), `near`,
 * `timeframe`, correlation and filter rules, rule collections (`action:`), and the modifiers
 * `windash`, `wide`/`utf16*` and `expand`.
 *
 * @module
 */

import YAML from "yaml";
import { DEFERRED_PAYLOADS, materialize } from "../core/decode.ts";
import type { CloudTrailRecord, Severity } from "../core/types.ts";
import { IpSet } from "../mapping/ip.ts";
import { FORBIDDEN_SEGMENTS } from "../mapping/custom_mapping.ts";

/** Sigma rule levels, lowest first. */
export const SIGMA_LEVELS = ["informational", "low", "medium", "high", "critical"] as const;

/** A Sigma rule level. */
export type SigmaLevel = typeof SIGMA_LEVELS[number];

/** The alert severity of each Sigma level. */
export const LEVEL_SEVERITY: Readonly<Record<SigmaLevel, Severity>> = {
  informational: "info",
  low: "low",
  medium: "medium",
  high: "high",
  critical: "critical",
};

/** A compiled Sigma rule. */
export interface SigmaRule {
  /** The rule's `id`. */
  readonly id: string;
  /** The rule's `title`. */
  readonly title: string;
  /** `description`, when given. */
  readonly description?: string;
  /** `status`, when given. */
  readonly status?: string;
  /** `level` (medium when the rule has none). */
  readonly level: SigmaLevel;
  /** `tags` (ATT&CK tags such as `attack.t1562.008`, `attack.defense-evasion`). */
  readonly tags: readonly string[];
  /** `falsepositives`. */
  readonly falsepositives: readonly string[];
  /** The file the rule came from. */
  readonly file: string;
  /**
   * The `eventName` values (lowercase) one of which the rule requires, or `null` when the rule
   * can match any event name. Used by {@link RuleIndex}.
   */
  readonly eventNames: ReadonlySet<string> | null;
  /** The `eventSource` values (lowercase) one of which the rule requires, or `null`. */
  readonly eventSources: ReadonlySet<string> | null;
  /** Whether the raw CloudTrail record matches the rule's detection. */
  matches(record: CloudTrailRecord): boolean;
}

/** A rule (or file) that is not run, and why. */
export interface RuleProblem {
  /** The file. */
  file: string;
  /** The rule id, when the rule has one. */
  id?: string;
  /** The rule title, when the rule has one. */
  title?: string;
  /** Why it is not run. */
  reason: string;
}

/** What one file yielded. */
export interface FileRules {
  /** Rules compiled. */
  rules: SigmaRule[];
  /** Rules whose logsource is not AWS CloudTrail. */
  skipped: number;
  /** Rules that use what the engine does not support, or are not valid Sigma. */
  unsupported: RuleProblem[];
  /** Why the whole file was not used (YAML syntax error), if it was not. */
  error?: string;
}

/** Thrown while compiling a rule; the message is the reason reported. */
class Unsupported extends Error {}

function unsupported(reason: string): never {
  throw new Unsupported(reason);
}

/**
 * Parses a YAML text holding one or more Sigma rules (`---`-separated) and compiles each.
 * A YAML syntax error makes the whole file an `error`; rules of other logsources are counted as
 * skipped; unsupported rules are listed with their reason.
 *
 * @example Compiling a rule
 * ```ts
 * import { parseRuleFile } from "./_sigma.ts";
 * const { rules } = parseRuleFile(`
 * title: Trail stopped
 * id: 1b1d7f4e-0000-4000-8000-000000000001
 * logsource: {product: aws, service: cloudtrail}
 * detection:
 *   selection: {eventName: StopLogging}
 *   condition: selection
 * `, "stop.yml");
 * rules[0].matches({ eventName: "StopLogging" }); // true
 * ```
 */
export function parseRuleFile(text: string, file: string): FileRules {
  const result: FileRules = { rules: [], skipped: 0, unsupported: [] };
  let docs: ReturnType<typeof YAML.parseAllDocuments>;
  try {
    docs = YAML.parseAllDocuments(text, { prettyErrors: true });
  } catch (error) {
    result.error = `cannot parse YAML: ${(error as Error).message}`;
    return result;
  }
  const list = Array.isArray(docs) ? docs : [];
  for (const doc of list) {
    if (doc.errors.length > 0) {
      result.error = `cannot parse YAML: ${doc.errors[0].message.split("\n")[0]}`;
      return { rules: [], skipped: 0, unsupported: [], error: result.error };
    }
  }
  for (const doc of list) {
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (error) {
      return {
        rules: [],
        skipped: 0,
        unsupported: [],
        error: `cannot parse YAML: ${(error as Error).message}`,
      };
    }
    if (value === null || value === undefined) continue;
    const outcome = compileRule(value, file);
    if (outcome.kind === "rule") result.rules.push(outcome.rule);
    else if (outcome.kind === "skipped") result.skipped++;
    else result.unsupported.push(outcome.problem);
  }
  return result;
}

/** What {@link compileRule} made of one YAML document. */
export type CompileOutcome =
  | { kind: "rule"; rule: SigmaRule }
  | { kind: "skipped" }
  | { kind: "unsupported"; problem: RuleProblem };

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function optionalText(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() !== "" ? value : undefined;
}

function textList(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (!Array.isArray(value)) return [];
  return value.filter((item): item is string => typeof item === "string");
}

/** Whether a rule's `logsource` is AWS CloudTrail (`product: aws`, `service: cloudtrail`). */
export function isCloudTrailLogsource(logsource: unknown): boolean {
  if (!isMap(logsource)) return false;
  const product = logsource.product;
  const service = logsource.service;
  return typeof product === "string" && product.toLowerCase() === "aws" &&
    typeof service === "string" && service.toLowerCase() === "cloudtrail";
}

/** Compiles one parsed YAML document into a rule, or says why it is skipped or unsupported. */
export function compileRule(doc: unknown, file: string): CompileOutcome {
  if (!isMap(doc)) {
    return {
      kind: "unsupported",
      problem: { file, reason: "not a Sigma rule (expected a mapping)" },
    };
  }
  const id = typeof doc.id === "string" && doc.id.trim() !== "" ? doc.id.trim() : undefined;
  const title = optionalText(doc.title);
  const problem = (reason: string): CompileOutcome => ({
    kind: "unsupported",
    problem: { file, ...(id ? { id } : {}), ...(title ? { title } : {}), reason },
  });
  if (doc.correlation !== undefined || doc.type === "correlation") {
    return problem("correlation rules are not supported");
  }
  if (doc.filter !== undefined && doc.detection === undefined) {
    return problem("Sigma filter rules are not supported");
  }
  if (doc.action !== undefined) {
    return problem("rule collections (action: global/reset/repeat) are not supported");
  }
  if (!isCloudTrailLogsource(doc.logsource)) return { kind: "skipped" };
  if (!id) return problem("the rule has no id");
  if (!title) return problem("the rule has no title");
  let level: SigmaLevel = "medium";
  if (doc.level !== undefined) {
    const raw = typeof doc.level === "string" ? doc.level.toLowerCase() : "";
    if (!(SIGMA_LEVELS as readonly string[]).includes(raw)) {
      return problem(`unknown level ${JSON.stringify(doc.level)}`);
    }
    level = raw as SigmaLevel;
  }
  if (!isMap(doc.detection)) return problem("the rule has no detection");
  let compiled: CompiledDetection;
  try {
    compiled = compileDetection(doc.detection);
  } catch (error) {
    if (error instanceof Unsupported) return problem(error.message);
    return problem(`cannot compile: ${(error as Error).message}`);
  }
  const rule: SigmaRule = {
    id,
    title,
    description: optionalText(doc.description)?.trim(),
    status: optionalText(doc.status),
    level,
    tags: textList(doc.tags),
    falsepositives: textList(doc.falsepositives),
    file,
    eventNames: compiled.eventNames,
    eventSources: compiled.eventSources,
    matches: compiled.matches,
  };
  return { kind: "rule", rule };
}

// ---------------------------------------------------------------------------------------------
// Field access

type Predicate = (record: CloudTrailRecord) => boolean;
type LeafTest = (value: unknown) => boolean;

/**
 * Calls `test` on every value at `segments` below `node`, fanning out through arrays (at any
 * step and at the end); true as soon as one call is. Own properties only.
 */
function someAt(
  node: unknown,
  segments: readonly string[],
  index: number,
  test: LeafTest,
): boolean {
  let current = node;
  for (let i = index; i < segments.length; i++) {
    if (current === null || typeof current !== "object") return false;
    if (Array.isArray(current)) {
      for (const item of current) if (someAt(item, segments, i, test)) return true;
      return false;
    }
    const segment = segments[i];
    if (!Object.hasOwn(current, segment)) return false;
    current = (current as Record<string, unknown>)[segment];
  }
  if (Array.isArray(current)) {
    for (const item of current) if (someAt(item, segments, segments.length, test)) return true;
    return false;
  }
  return test(current);
}

/** Splits a field name into segments; `null` when a segment could reach a prototype. */
function fieldSegments(field: string): string[] | null {
  const segments = field.split(".");
  for (const segment of segments) if (FORBIDDEN_SEGMENTS.has(segment)) return null;
  return segments;
}

/** Every scalar value (as text) at `segments`. */
function collectText(record: CloudTrailRecord, segments: readonly string[] | null): string[] {
  const out: string[] = [];
  if (!segments) return out;
  someAt(record, segments, 0, (value) => {
    const text = scalarText(value);
    if (text !== undefined) out.push(text);
    return false;
  });
  return out;
}

function scalarText(value: unknown): string | undefined {
  switch (typeof value) {
    case "string":
      return value;
    case "number":
    case "boolean":
      return String(value);
    default:
      return undefined;
  }
}

/**
 * A value as text for string matching: scalars as they are, an object as its compact JSON (so
 * `requestParameters|contains: '"s3:GetObject"'` works as it does where the field is a string).
 */
function leafText(value: unknown): string | undefined {
  if (value !== null && typeof value === "object") return JSON.stringify(value);
  return scalarText(value);
}

const lowerCache = new Map<string, string>();

/** `text.toLowerCase()`, cached for short texts (the same names recur in every record). */
function lowerOf(text: string): string {
  if (text.length > 128) return text.toLowerCase();
  let lower = lowerCache.get(text);
  if (lower === undefined) {
    if (lowerCache.size >= 50_000) lowerCache.clear();
    lower = text.toLowerCase();
    lowerCache.set(text, lower);
  }
  return lower;
}

const isPresent: LeafTest = (value) => value !== null && value !== undefined;

/** Whether the field is absent or null everywhere it is reached. */
function isNullAt(record: CloudTrailRecord, segments: readonly string[] | null): boolean {
  return !segments || !someAt(record, segments, 0, isPresent);
}

// ---------------------------------------------------------------------------------------------
// Values: wildcards, modifiers

/** A test of one scalar value, given as text and lowercased text. */
type TextTest = (text: string, lower: string) => boolean;

type Position = "exact" | "contains" | "startswith" | "endswith";

interface SigmaPattern {
  /** Literal text with the escapes resolved (when there is no wildcard). */
  literal: string;
  /** Regex source with wildcards translated, escapes resolved. */
  source: string;
  /** Whether the value has an unescaped `*` or `?`. */
  wildcard: boolean;
}

/**
 * Reads a Sigma string: `*` any run, `?` one character, `\*` `\?` `\\` literal; any other
 * backslash is literal.
 */
function sigmaPattern(value: string): SigmaPattern {
  let literal = "";
  let source = "";
  let wildcard = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === "\\") {
      const next = value[i + 1];
      if (next === "*" || next === "?" || next === "\\") {
        literal += next;
        source += escapeRegex(next);
        i++;
        continue;
      }
      literal += ch;
      source += "\\\\";
      continue;
    }
    if (ch === "*") {
      wildcard = true;
      source += ".*";
    } else if (ch === "?") {
      wildcard = true;
      source += ".";
    } else {
      literal += ch;
      source += escapeRegex(ch);
    }
  }
  return { literal, source, wildcard };
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

function textTest(value: string, position: Position, cased: boolean): TextTest {
  const pattern = sigmaPattern(value);
  if (pattern.wildcard) {
    const source = position === "exact"
      ? `^${pattern.source}$`
      : position === "startswith"
      ? `^${pattern.source}`
      : position === "endswith"
      ? `${pattern.source}$`
      : pattern.source;
    const regex = new RegExp(source, cased ? "s" : "is");
    return (text) => regex.test(text);
  }
  const needle = cased ? pattern.literal : pattern.literal.toLowerCase();
  if (cased) {
    switch (position) {
      case "exact":
        return (text) => text === needle;
      case "contains":
        return (text) => text.includes(needle);
      case "startswith":
        return (text) => text.startsWith(needle);
      case "endswith":
        return (text) => text.endsWith(needle);
    }
  }
  switch (position) {
    case "exact":
      return (_text, lower) => lower === needle;
    case "contains":
      return (_text, lower) => lower.includes(needle);
    case "startswith":
      return (_text, lower) => lower.startsWith(needle);
    case "endswith":
      return (_text, lower) => lower.endsWith(needle);
  }
}

const MATCH_MODIFIERS = new Set([
  "contains",
  "startswith",
  "endswith",
  "re",
  "cidr",
  "exists",
  "lt",
  "lte",
  "gt",
  "gte",
]);
const REGEX_FLAGS = new Set(["i", "m", "s"]);
const NOT_SUPPORTED_MODIFIERS: Record<string, string> = {
  windash: "the windash modifier is not supported",
  wide: "the wide/utf16 modifiers are not supported",
  utf16: "the wide/utf16 modifiers are not supported",
  utf16le: "the wide/utf16 modifiers are not supported",
  utf16be: "the wide/utf16 modifiers are not supported",
  expand: "the expand modifier (placeholders) is not supported",
};

interface Modifiers {
  match?: string;
  all: boolean;
  cased: boolean;
  fieldref: boolean;
  base64?: "base64" | "base64offset";
  regexFlags: string;
}

function parseModifiers(names: string[], field: string): Modifiers {
  const mods: Modifiers = { all: false, cased: false, fieldref: false, regexFlags: "" };
  for (const name of names) {
    const lower = name.toLowerCase();
    if (NOT_SUPPORTED_MODIFIERS[lower]) unsupported(`${field}: ${NOT_SUPPORTED_MODIFIERS[lower]}`);
    if (MATCH_MODIFIERS.has(lower)) {
      if (mods.match) {
        unsupported(`${field}: modifiers ${mods.match} and ${lower} cannot be combined`);
      }
      mods.match = lower;
    } else if (REGEX_FLAGS.has(lower) && mods.match === "re") {
      if (!mods.regexFlags.includes(lower)) mods.regexFlags += lower;
    } else if (lower === "all") mods.all = true;
    else if (lower === "cased") mods.cased = true;
    else if (lower === "fieldref") mods.fieldref = true;
    else if (lower === "base64" || lower === "base64offset") {
      if (mods.base64) unsupported(`${field}: base64 and base64offset cannot be combined`);
      mods.base64 = lower;
    } else unsupported(`${field}: unknown modifier "${name}"`);
  }
  if (mods.base64 === "base64offset" && mods.match !== "contains") {
    unsupported(`${field}: base64offset needs the contains modifier`);
  }
  if (mods.base64 && mods.match && !["contains", "startswith", "endswith"].includes(mods.match)) {
    unsupported(`${field}: ${mods.base64} cannot be combined with ${mods.match}`);
  }
  if (mods.fieldref && mods.match && !["contains", "startswith", "endswith"].includes(mods.match)) {
    unsupported(`${field}: fieldref cannot be combined with ${mods.match}`);
  }
  if (mods.fieldref && mods.base64) {
    unsupported(`${field}: fieldref cannot be combined with ${mods.base64}`);
  }
  return mods;
}

const encoder = new TextEncoder();

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary);
}

/** The base64 forms of `value`; three shifted forms for `base64offset` (as Sigma defines them). */
function base64Forms(value: string, offset: boolean): string[] {
  const bytes = encoder.encode(value);
  if (!offset) return [toBase64(bytes)];
  const startOffsets = [0, 2, 3];
  const endOffsets = [0, 3, 2];
  const forms: string[] = [];
  for (let i = 0; i < 3; i++) {
    const shifted = new Uint8Array(i + bytes.length);
    shifted.fill(0x20, 0, i);
    shifted.set(bytes, i);
    const encoded = toBase64(shifted);
    const end = endOffsets[(bytes.length + i) % 3];
    forms.push(encoded.slice(startOffsets[i], encoded.length - end));
  }
  return forms;
}

/** Escapes wildcards so a literal (e.g. a base64 form) is matched as is. */
function escapeWildcards(text: string): string {
  return text.replace(/[\\*?]/g, "\\$&");
}

function compileRegex(value: string, flags: string, field: string): RegExp {
  let source = value;
  let allFlags = flags;
  // A leading inline flag group such as (?i) is common in Sigma rules; JS only knows flags.
  const inline = /^\(\?([imsx]+)\)/.exec(source);
  if (inline) {
    if (inline[1].includes("x")) unsupported(`${field}: the regex flag x is not supported`);
    for (const flag of inline[1]) if (!allFlags.includes(flag)) allFlags += flag;
    source = source.slice(inline[0].length);
  }
  try {
    return new RegExp(source, allFlags);
  } catch (error) {
    unsupported(`${field}: invalid regular expression: ${(error as Error).message}`);
  }
}

/** One `field|modifiers: values` entry compiled into a predicate over the record. */
function compileField(
  key: string,
  value: unknown,
): { test: Predicate; field: string; plain: string[] | null } {
  const [field, ...modifierNames] = key.split("|");
  if (field === "") unsupported(`"${key}": keyword searches with modifiers are not supported`);
  const mods = parseModifiers(modifierNames, field);
  const segments = fieldSegments(field);
  const values = Array.isArray(value) ? value : [value];
  if (values.length === 0) unsupported(`${field}: empty value list`);
  for (const item of values) {
    if (item !== null && typeof item === "object") {
      unsupported(`${field}: nested lists or maps as values are not supported`);
    }
  }

  if (mods.match === "exists") {
    if (values.length !== 1 || typeof values[0] !== "boolean") {
      unsupported(`${field}: exists expects true or false`);
    }
    const wanted = values[0] as boolean;
    return {
      field,
      plain: null,
      test: (record) => !isNullAt(record, segments) === wanted,
    };
  }

  if (mods.fieldref) {
    const position = (mods.match ?? "exact") as Position;
    const others = values.map((item) => {
      if (typeof item !== "string") unsupported(`${field}: fieldref expects field names`);
      return fieldSegments(item);
    });
    const cased = mods.cased;
    const one = (record: CloudTrailRecord, other: readonly string[] | null): boolean => {
      const wanted = collectText(record, other).map((text) => cased ? text : lowerOf(text));
      if (wanted.length === 0 || !segments) return false;
      return someAt(record, segments, 0, (leaf) => {
        const text = scalarText(leaf);
        if (text === undefined) return false;
        const have = cased ? text : lowerOf(text);
        return wanted.some((w) =>
          position === "exact"
            ? have === w
            : position === "contains"
            ? have.includes(w)
            : position === "startswith"
            ? have.startsWith(w)
            : have.endsWith(w)
        );
      });
    };
    return {
      field,
      plain: null,
      test: mods.all
        ? (record) => others.every((other) => one(record, other))
        : (record) => others.some((other) => one(record, other)),
    };
  }

  const hasNull = values.includes(null);
  // Plain case-insensitive values (the common case) are looked up in a set; the rest are tests.
  const exact = new Set<string>();
  const tests: TextTest[] = [];
  const plainValues = !mods.all && !mods.match && !mods.base64 && !mods.cased;
  for (const item of values) {
    if (item === null) continue;
    if (plainValues) {
      const pattern = sigmaPattern(String(item));
      if (!pattern.wildcard) {
        exact.add(pattern.literal.toLowerCase());
        continue;
      }
    }
    tests.push(...valueTests(item, mods, field));
  }
  const wantsLower = !mods.cased;
  const leafWith = (list: readonly TextTest[], set: ReadonlySet<string>): LeafTest => (leaf) => {
    const text = leafText(leaf);
    if (text === undefined) return false;
    const lower = wantsLower ? lowerOf(text) : text;
    if (set.size > 0 && set.has(lower)) return true;
    for (const test of list) if (test(text, lower)) return true;
    return false;
  };
  // Values that need an exact, unmodified, wildcard-free match (for the index).
  const plain = !mods.match && !mods.base64 && !mods.all && !hasNull &&
      values.every((item) => typeof item === "string" && !sigmaPattern(item).wildcard)
    ? (values as string[]).map((item) => sigmaPattern(item).literal.toLowerCase())
    : null;
  const nonNull = exact.size + tests.length;

  if (!segments) {
    // A field that could reach a prototype never resolves: only null matches.
    const result = mods.all ? hasNull && nonNull === 0 : hasNull;
    return { field, plain, test: () => result };
  }
  if (mods.all) {
    // base64offset yields three forms per value; any of them satisfies that value.
    const groups = mods.base64 === "base64offset" ? chunk(tests, 3) : tests.map((test) => [test]);
    const none = new Set<string>();
    const leafTests = groups.map((group) => leafWith(group, none));
    return {
      field,
      plain,
      test: (record) =>
        (!hasNull || isNullAt(record, segments)) &&
        leafTests.every((leaf) => someAt(record, segments, 0, leaf)),
    };
  }
  const leaf = leafWith(tests, exact);
  if (!hasNull) return { field, plain, test: (record) => someAt(record, segments, 0, leaf) };
  if (nonNull === 0) return { field, plain, test: (record) => isNullAt(record, segments) };
  return {
    field,
    plain,
    test: (record) => isNullAt(record, segments) || someAt(record, segments, 0, leaf),
  };
}

function chunk<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The text tests of one (non-null) value under the field's modifiers. */
function valueTests(item: unknown, mods: Modifiers, field: string): TextTest[] {
  const text = String(item);
  switch (mods.match) {
    case "re": {
      const regex = compileRegex(text, mods.regexFlags, field);
      return [(value) => regex.test(value)];
    }
    case "cidr": {
      let set: IpSet;
      try {
        set = IpSet.from([text]);
      } catch (error) {
        unsupported(`${field}: ${(error as Error).message}`);
      }
      return [(value) => set.has(value)];
    }
    case "lt":
    case "lte":
    case "gt":
    case "gte": {
      const bound = typeof item === "number" ? item : Number(text);
      if (!Number.isFinite(bound)) unsupported(`${field}: ${mods.match} expects a number`);
      const op = mods.match;
      return [(value) => {
        if (value.trim() === "") return false;
        const n = Number(value);
        if (Number.isNaN(n)) return false;
        return op === "lt"
          ? n < bound
          : op === "lte"
          ? n <= bound
          : op === "gt"
          ? n > bound
          : n >= bound;
      }];
    }
  }
  const position = (mods.match ?? "exact") as Position;
  if (mods.base64) {
    // Base64 text is case-sensitive: its forms are matched as they are.
    return base64Forms(text, mods.base64 === "base64offset").map((form) =>
      textTest(escapeWildcards(form), position, true)
    );
  }
  return [textTest(text, position, mods.cased)];
}

// ---------------------------------------------------------------------------------------------
// Selections

interface CompiledSelection {
  test: Predicate;
  /** eventName values required (lowercase), or null. */
  eventNames: Set<string> | null;
  /** eventSource values required (lowercase), or null. */
  eventSources: Set<string> | null;
}

function compileSelection(name: string, value: unknown): CompiledSelection {
  if (isMap(value)) return compileMapSelection(name, value);
  if (Array.isArray(value)) {
    if (value.length === 0) unsupported(`selection "${name}" is empty`);
    if (value.every(isMap)) {
      const parts = (value as Record<string, unknown>[]).map((item) =>
        compileMapSelection(name, item)
      );
      const tests = parts.map((part) => part.test);
      return {
        test: (record) => tests.some((test) => test(record)),
        eventNames: unionAll(parts.map((part) => part.eventNames)),
        eventSources: unionAll(parts.map((part) => part.eventSources)),
      };
    }
    if (value.every((item) => item === null || typeof item !== "object")) {
      return compileKeywords(name, value);
    }
    unsupported(`selection "${name}" mixes maps and plain values`);
  }
  if (value === null || typeof value !== "object") return compileKeywords(name, [value]);
  unsupported(`selection "${name}" is not a map or a list`);
}

/**
 * The record's top-level keys that the decoder may have deferred ({@link DEFERRED_PAYLOADS}): a
 * test that reads one parses the record's deferred payloads first, so events whose candidate
 * rules are decided by other fields never parse them.
 */
const PAYLOAD_KEYS: ReadonlySet<string> = new Set(DEFERRED_PAYLOADS);

/** Whether testing `field|modifiers: value` reads a deferred payload. */
function readsPayload(key: string, value: unknown): boolean {
  const [field, ...modifiers] = key.split("|");
  if (PAYLOAD_KEYS.has(field.split(".")[0])) return true;
  if (!modifiers.includes("fieldref")) return false;
  const others = Array.isArray(value) ? value : [value];
  return others.some((other) => PAYLOAD_KEYS.has(String(other).split(".")[0]));
}

/** `test`, after parsing the record's deferred payloads (if any). */
function withPayloads(test: Predicate): Predicate {
  return (record) => {
    materialize(record);
    return test(record);
  };
}

function compileMapSelection(name: string, map: Record<string, unknown>): CompiledSelection {
  const entries = Object.entries(map);
  if (entries.length === 0) unsupported(`selection "${name}" is empty`);
  const fields = entries.map(([key, value]) => {
    const field = compileField(key, value);
    const payload = readsPayload(key, value);
    // AND is order-free: the cheap, selective fields are tested first, and payloads (which are
    // parsed for it) last.
    const cost = fieldCost(key) + (payload ? 4 : 0);
    return { ...field, test: payload ? withPayloads(field.test) : field.test, cost };
  });
  const tests = [...fields].sort((a, b) => a.cost - b.cost).map((field) => field.test);
  let eventNames: Set<string> | null = null;
  let eventSources: Set<string> | null = null;
  for (const field of fields) {
    if (!field.plain) continue;
    if (field.field === "eventName") eventNames = intersect(eventNames, new Set(field.plain));
    if (field.field === "eventSource") eventSources = intersect(eventSources, new Set(field.plain));
  }
  const test: Predicate = tests.length === 1 ? tests[0] : (record) => {
    for (const t of tests) if (!t(record)) return false;
    return true;
  };
  return { test, eventNames, eventSources };
}

/** Rough cost of testing a `field|modifiers` entry, for ordering the fields of a selection. */
function fieldCost(key: string): number {
  const [field, ...modifiers] = key.toLowerCase().split("|");
  if (modifiers.length === 0) return field === "eventname" || field === "eventsource" ? 0 : 1;
  if (
    modifiers.some((m) => ["re", "cidr", "fieldref", "base64", "base64offset", "all"].includes(m))
  ) {
    return 3;
  }
  return 2;
}

/** Keywords: any scalar anywhere in the record contains one of them (case-insensitive). */
function compileKeywords(name: string, values: unknown[]): CompiledSelection {
  const tests = values.filter((item) => item !== null).map((item) =>
    textTest(String(item), "contains", false)
  );
  if (tests.length === 0) unsupported(`selection "${name}" has no keywords`);
  const leaf: LeafTest = (value) => {
    const text = scalarText(value);
    if (text === undefined) return false;
    const lower = lowerOf(text);
    return tests.some((test) => test(text, lower));
  };
  return {
    test: withPayloads((record) => someDeep(record, leaf, 0)),
    eventNames: null,
    eventSources: null,
  };
}

function someDeep(node: unknown, test: LeafTest, depth: number): boolean {
  if (depth > 64) return false;
  if (Array.isArray(node)) {
    for (const item of node) if (someDeep(item, test, depth + 1)) return true;
    return false;
  }
  if (node !== null && typeof node === "object") {
    for (const key of Object.keys(node)) {
      if (someDeep((node as Record<string, unknown>)[key], test, depth + 1)) return true;
    }
    return false;
  }
  return test(node);
}

function intersect(a: Set<string> | null, b: Set<string> | null): Set<string> | null {
  if (!a) return b;
  if (!b) return a;
  return new Set([...a].filter((item) => b.has(item)));
}

function unionAll(sets: (Set<string> | null)[]): Set<string> | null {
  const out = new Set<string>();
  for (const set of sets) {
    if (!set) return null;
    for (const item of set) out.add(item);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Conditions

type ConditionNode =
  | { type: "ref"; name: string }
  | { type: "and" | "or"; items: ConditionNode[] }
  | { type: "not"; item: ConditionNode }
  | { type: "of"; quantifier: "all" | number; pattern: string };

function tokenize(condition: string): string[] {
  if (condition.includes("|")) {
    unsupported("aggregations (`| count() …`) are not supported");
  }
  const tokens: string[] = [];
  const re = /\s*(\(|\)|[^\s()]+)/y;
  let match: RegExpExecArray | null;
  let last = 0;
  while ((match = re.exec(condition)) !== null) {
    tokens.push(match[1]);
    last = re.lastIndex;
  }
  if (condition.slice(last).trim() !== "") {
    unsupported(`condition: cannot read "${condition.slice(last)}"`);
  }
  return tokens;
}

function parseCondition(condition: string): ConditionNode {
  const tokens = tokenize(condition);
  let pos = 0;
  const peek = () => tokens[pos]?.toLowerCase();
  const fail: (message: string) => never = (message) =>
    unsupported(`condition "${condition}": ${message}`);

  const parseOr = (): ConditionNode => {
    const items = [parseAnd()];
    while (peek() === "or") {
      pos++;
      items.push(parseAnd());
    }
    return items.length === 1 ? items[0] : { type: "or", items };
  };
  const parseAnd = (): ConditionNode => {
    const items = [parseNot()];
    while (peek() === "and") {
      pos++;
      items.push(parseNot());
    }
    return items.length === 1 ? items[0] : { type: "and", items };
  };
  const parseNot = (): ConditionNode => {
    if (peek() === "not") {
      pos++;
      return { type: "not", item: parseNot() };
    }
    return parsePrimary();
  };
  const parsePrimary = (): ConditionNode => {
    const token = tokens[pos];
    if (token === undefined) return fail("unexpected end");
    const lower = token.toLowerCase();
    if (token === "(") {
      pos++;
      const inner = parseOr();
      if (tokens[pos] !== ")") fail("missing )");
      pos++;
      return inner;
    }
    if (tokens[pos + 1]?.toLowerCase() === "of") {
      let quantifier: "all" | number;
      if (lower === "all") quantifier = "all";
      else if (lower === "any") quantifier = 1;
      else if (/^[1-9]\d*$/.test(lower)) quantifier = Number(lower);
      else return fail(`"${token} of" is not "1 of" or "all of"`);
      const pattern = tokens[pos + 2];
      if (pattern === undefined || pattern === "(" || pattern === ")") {
        fail(`"${token} of" needs a name`);
      }
      pos += 3;
      return { type: "of", quantifier, pattern };
    }
    if (lower === "near") fail("near aggregations are not supported");
    if (["and", "or", "not", "of", ")"].includes(lower)) fail(`unexpected "${token}"`);
    if (token.includes("*")) fail(`wildcard name "${token}" outside "1 of" / "all of"`);
    pos++;
    return { type: "ref", name: token };
  };

  const node = parseOr();
  if (pos < tokens.length) fail(`unexpected "${tokens[pos]}"`);
  return node;
}

function wildcardName(pattern: string): RegExp {
  const source = pattern.split("*").map(escapeRegex).join(".*");
  return new RegExp(`^${source}$`);
}

interface CompiledDetection {
  matches: Predicate;
  eventNames: ReadonlySet<string> | null;
  eventSources: ReadonlySet<string> | null;
}

interface CompiledNode {
  test: Predicate;
  eventNames: Set<string> | null;
  eventSources: Set<string> | null;
}

function compileNode(
  node: ConditionNode,
  selections: Map<string, CompiledSelection>,
): CompiledNode {
  switch (node.type) {
    case "ref": {
      const selection = selections.get(node.name);
      if (!selection) unsupported(`condition refers to an unknown selection "${node.name}"`);
      return selection;
    }
    case "not": {
      const inner = compileNode(node.item, selections).test;
      return { test: (record) => !inner(record), eventNames: null, eventSources: null };
    }
    case "and":
    case "or":
      return combine(node.type, node.items.map((item) => compileNode(item, selections)));
    case "of": {
      const names = [...selections.keys()].filter((name) =>
        node.pattern === "them" ? !name.startsWith("_") : wildcardName(node.pattern).test(name)
      );
      if (names.length === 0) unsupported(`no selection matches "${node.pattern}"`);
      const parts = names.map((name) => selections.get(name)!);
      if (node.quantifier === "all") return combine("and", parts);
      if (node.quantifier === 1) return combine("or", parts);
      const needed = node.quantifier;
      const tests = parts.map((part) => part.test);
      const union = combine("or", parts);
      return {
        test: (record) => {
          let count = 0;
          for (const test of tests) if (test(record) && ++count >= needed) return true;
          return false;
        },
        eventNames: union.eventNames,
        eventSources: union.eventSources,
      };
    }
  }
}

function combine(type: "and" | "or", parts: CompiledNode[]): CompiledNode {
  if (parts.length === 1) return parts[0];
  const tests = parts.map((part) => part.test);
  if (type === "and") {
    let eventNames: Set<string> | null = null;
    let eventSources: Set<string> | null = null;
    for (const part of parts) {
      eventNames = intersect(eventNames, part.eventNames);
      eventSources = intersect(eventSources, part.eventSources);
    }
    return {
      test: (record) => {
        for (const test of tests) if (!test(record)) return false;
        return true;
      },
      eventNames,
      eventSources,
    };
  }
  return {
    test: (record) => {
      for (const test of tests) if (test(record)) return true;
      return false;
    },
    eventNames: unionAll(parts.map((part) => part.eventNames)),
    eventSources: unionAll(parts.map((part) => part.eventSources)),
  };
}

function compileDetection(detection: Record<string, unknown>): CompiledDetection {
  if (detection.timeframe !== undefined) unsupported("timeframes are not supported");
  const condition = detection.condition;
  if (condition === undefined) unsupported("the detection has no condition");
  const conditions = Array.isArray(condition) ? condition : [condition];
  if (conditions.length === 0 || !conditions.every((item) => typeof item === "string")) {
    unsupported("the condition must be a string or a list of strings");
  }
  const selections = new Map<string, CompiledSelection>();
  for (const [name, value] of Object.entries(detection)) {
    if (name === "condition") continue;
    selections.set(name, compileSelection(name, value));
  }
  const nodes = (conditions as string[]).map((text) =>
    compileNode(parseCondition(text), selections)
  );
  // Several conditions (an older Sigma form) are alternatives.
  const compiled = combine("or", nodes);
  return {
    matches: compiled.test,
    eventNames: compiled.eventNames,
    eventSources: compiled.eventSources,
  };
}

// ---------------------------------------------------------------------------------------------
// Index

/**
 * Rules indexed by the `eventName` (else `eventSource`) values they require; rules that require
 * neither are evaluated for every event.
 *
 * @example Evaluating an event
 * ```ts
 * import { parseRuleFile, RuleIndex } from "./_sigma.ts";
 * const { rules } = parseRuleFile(`
 * title: Trail stopped
 * id: 1b1d7f4e-0000-4000-8000-000000000001
 * logsource: {product: aws, service: cloudtrail}
 * detection: {selection: {eventName: StopLogging}, condition: selection}
 * `, "stop.yml");
 * const index = new RuleIndex(rules);
 * index.evaluate({ eventName: "StopLogging" }).map((rule) => rule.id);
 * ```
 */
export class RuleIndex {
  readonly #byName = new Map<string, SigmaRule[]>();
  readonly #bySource = new Map<string, SigmaRule[]>();
  readonly #always: SigmaRule[] = [];
  readonly #order = new Map<SigmaRule, number>();
  readonly #all: readonly SigmaRule[];
  readonly #cache = new Map<string, Map<string, SigmaRule[]>>();

  /** Indexes `rules` (their order is the order of the results). */
  constructor(rules: readonly SigmaRule[]) {
    this.#all = rules;
    rules.forEach((rule, i) => {
      this.#order.set(rule, i);
      if (rule.eventNames) add(this.#byName, rule.eventNames, rule);
      else if (rule.eventSources) add(this.#bySource, rule.eventSources, rule);
      else this.#always.push(rule);
    });
  }

  /** Number of rules evaluated for every event (no eventName/eventSource requirement). */
  get unindexed(): number {
    return this.#always.length;
  }

  /** The rules that may match `record` (a superset of those that do), in index order. */
  candidates(record: CloudTrailRecord): readonly SigmaRule[] {
    const name = record.eventName;
    const source = record.eventSource ?? "";
    if (typeof name !== "string" || typeof source !== "string") return this.#all;
    let bySource = this.#cache.get(name);
    const cached = bySource?.get(source);
    if (cached) return cached;
    const list = [
      ...this.#byName.get(name.toLowerCase()) ?? [],
      ...this.#bySource.get(source.toLowerCase()) ?? [],
      ...this.#always,
    ];
    list.sort((a, b) => this.#order.get(a)! - this.#order.get(b)!);
    if (!bySource) {
      if (this.#cache.size >= CANDIDATE_CACHE_SIZE) this.#cache.clear();
      bySource = new Map();
      this.#cache.set(name, bySource);
    }
    if (bySource.size < CANDIDATE_CACHE_SIZE) bySource.set(source, list);
    return list;
  }

  /** The rules that match `record`, in index order (`candidates`: its candidates, if known). */
  evaluate(record: CloudTrailRecord, candidates = this.candidates(record)): SigmaRule[] {
    const matched: SigmaRule[] = [];
    for (const rule of candidates) if (rule.matches(record)) matched.push(rule);
    return matched;
  }
}

/** Distinct eventNames (and eventSources per name) whose candidate lists are kept. */
const CANDIDATE_CACHE_SIZE = 10_000;

function add(map: Map<string, SigmaRule[]>, keys: ReadonlySet<string>, rule: SigmaRule): void {
  for (const key of keys) {
    const list = map.get(key);
    if (list) list.push(rule);
    else map.set(key, [rule]);
  }
}
