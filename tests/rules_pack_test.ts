/**
 * Tests of the built-in Sigma pack (`detectors/rules/*.yml`): metadata, and for every rule its
 * positive and negative sample events.
 *
 * The samples live in `tests/fixtures/rules/<rule file name>.json`:
 * `{ "rule": <id>, "title": …, "positives": [record…], "negatives": [record…] }`. Each record is
 * written by the team and lists what the rule looks at; {@link BASE} fills in the fields every
 * CloudTrail record has (time, id, region, caller, account), and the sample's own fields win.
 */

import assert from "node:assert/strict";
import YAML from "yaml";
import { DEFERRED_PAYLOADS, RecordSplitter } from "../core/decode.ts";
import { captureLog } from "../core/log.ts";
import type { CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { normalize } from "../mapping/normalize.ts";
import type { SigmaRule } from "../detectors/_sigma.ts";
import {
  BUILTIN_RULES_DIR,
  CONSOLE_LOGIN_NO_MFA_RULE_ID,
  createRules,
  ROOT_USAGE_RULE_ID,
  type RulesDetector,
} from "../detectors/rules.ts";

const FIXTURES = new URL("./fixtures/rules/", import.meta.url);

/** Fields every sample record gets unless it sets them: an IAM user alice in 111122223333. */
const BASE: CloudTrailRecord = {
  eventVersion: "1.09",
  eventTime: "2026-11-20T08:00:00Z",
  awsRegion: "eu-west-1",
  sourceIPAddress: "198.51.100.23",
  userAgent: "aws-cli/2.17.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.5.0",
  eventType: "AwsApiCall",
  managementEvent: true,
  readOnly: false,
  recipientAccountId: "111122223333",
  userIdentity: {
    type: "IAMUser",
    principalId: "AIDAEXAMPLEALICE",
    arn: "arn:aws:iam::111122223333:user/alice",
    accountId: "111122223333",
    accessKeyId: "AKIAEXAMPLEALICE",
    userName: "alice",
  },
};

interface Samples {
  rule: string;
  title: string;
  positives: CloudTrailRecord[];
  negatives: CloudTrailRecord[];
}

const ruleFiles: string[] = [];
for await (const entry of Deno.readDir(BUILTIN_RULES_DIR)) {
  if (entry.isFile && entry.name.endsWith(".yml")) ruleFiles.push(entry.name);
}
ruleFiles.sort();

const restoreLog = captureLog(() => {});
const detector: RulesDetector = await createRules({ exclude: [] }, { name: "rules", baseDir: "." });
restoreLog();

function sampleEvent(
  file: string,
  kind: string,
  i: number,
  record: CloudTrailRecord,
): NormalizedEvent {
  return normalize({ ...BASE, eventID: `${file}-${kind}-${i}`, ...record });
}

async function samplesOf(file: string): Promise<Samples> {
  const text = await Deno.readTextFile(new URL(file.replace(/\.yml$/, ".json"), FIXTURES));
  return JSON.parse(text) as Samples;
}

Deno.test("built-in pack: at least 40 rules, all loaded, none unsupported", () => {
  assert.ok(ruleFiles.length >= 40, `only ${ruleFiles.length} rules`);
  assert.equal(detector.rules.length, ruleFiles.length);
  assert.deepEqual(detector.report.unsupported, []);
  assert.deepEqual(detector.report.errors, []);
  assert.equal(detector.report.skipped, 0);
});

Deno.test("built-in pack: every rule has the metadata the team requires", async () => {
  const ids = new Set<string>();
  const titles = new Set<string>();
  for (const file of ruleFiles) {
    const doc = YAML.parse(await Deno.readTextFile(new URL(file, BUILTIN_RULES_DIR)));
    const where = `${file}: `;
    assert.match(
      doc.id,
      /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
      where + "id",
    );
    assert.ok(!ids.has(doc.id), where + "duplicate id");
    ids.add(doc.id);
    assert.equal(typeof doc.title, "string", where + "title");
    assert.ok(!titles.has(doc.title), where + "duplicate title");
    titles.add(doc.title);
    assert.ok(["test", "stable", "experimental"].includes(doc.status), where + "status");
    assert.ok(
      typeof doc.description === "string" && doc.description.length > 40,
      where + "description",
    );
    assert.equal(doc.author, "trailwatch", where + "author");
    assert.match(String(doc.date), /^\d{4}-\d{2}-\d{2}$/, where + "date");
    assert.deepEqual(doc.logsource, { product: "aws", service: "cloudtrail" }, where + "logsource");
    assert.ok(Array.isArray(doc.tags), where + "tags");
    assert.ok(
      doc.tags.some((t: string) => /^attack\.t\d{4}(\.\d{3})?$/.test(t)),
      where + "ATT&CK technique tag",
    );
    assert.ok(
      doc.tags.some((t: string) => /^attack\.[a-z]+(-[a-z]+)*$/.test(t)),
      where + "ATT&CK tactic tag",
    );
    assert.ok(
      Array.isArray(doc.falsepositives) && doc.falsepositives.length > 0,
      where + "falsepositives",
    );
    assert.ok(
      ["informational", "low", "medium", "high", "critical"].includes(doc.level),
      where + "level",
    );
    assert.ok(file.startsWith("aws_") && file === file.toLowerCase(), where + "file name");
  }
  assert.ok(ids.has(ROOT_USAGE_RULE_ID), "the root usage rule keeps its id");
  assert.ok(
    ids.has(CONSOLE_LOGIN_NO_MFA_RULE_ID),
    "the console login without MFA rule keeps its id",
  );
});

Deno.test("built-in pack: every rule has samples (at least one positive and one negative)", async () => {
  const fixtureFiles: string[] = [];
  for await (const entry of Deno.readDir(FIXTURES)) fixtureFiles.push(entry.name);
  assert.deepEqual(fixtureFiles.sort(), ruleFiles.map((f) => f.replace(/\.yml$/, ".json")));
  const byFile = new Map(detector.rules.map((r) => [r.file.replace(/^builtin:/, ""), r]));
  for (const file of ruleFiles) {
    const samples = await samplesOf(file);
    assert.equal(samples.rule, byFile.get(file)?.id, `${file}: the samples name the rule's id`);
    assert.ok(samples.positives.length >= 1, `${file}: positives`);
    assert.ok(samples.negatives.length >= 1, `${file}: negatives`);
  }
});

for (const file of ruleFiles) {
  const rule = detector.rules.find((r) => r.file === `builtin:${file}`) as SigmaRule;
  Deno.test(`built-in rule ${file} (${rule?.title}) matches its positives and not its negatives`, async () => {
    assert.ok(rule, `${file} did not load`);
    const samples = await samplesOf(file);
    for (const [i, record] of samples.positives.entries()) {
      const event = sampleEvent(file, "positive", i, record);
      const alerts = detector.match!(event) ?? [];
      const alert = alerts.find((a) => a.key === rule.id);
      assert.ok(
        alert,
        `positive ${i} of ${file} raised no alert (got ${alerts.map((a) => a.title).join(", ")})`,
      );
      assert.equal(alert.title, rule.title);
      assert.deepEqual(alert.details?.matched, event.raw);
    }
    for (const [i, record] of samples.negatives.entries()) {
      const event = sampleEvent(file, "negative", i, record);
      assert.equal(rule.matches(event.raw), false, `negative ${i} of ${file} matched`);
      assert.ok(
        !(detector.match!(event) ?? []).some((a) => a.key === rule.id),
        `negative ${i} of ${file} alerted`,
      );
    }
  });
}

Deno.test("built-in pack: the index gives the same alerts as evaluating every rule on every sample", async () => {
  let checked = 0;
  for (const file of ruleFiles) {
    const samples = await samplesOf(file);
    const records = [...samples.positives, ...samples.negatives];
    for (const [i, record] of records.entries()) {
      const event = sampleEvent(file, "any", i, record);
      const expected = detector.rules.filter((r) => r.matches(event.raw)).map((r) => r.id);
      assert.deepEqual(
        (detector.match!(event) ?? []).map((a) => a.key),
        expected,
        `${file} sample ${i}`,
      );
      checked++;
    }
  }
  assert.ok(checked >= ruleFiles.length * 2);
});

Deno.test("built-in pack: every sample gives the same alerts when the decoder deferred its payloads", async () => {
  let deferred = 0;
  for (const file of ruleFiles) {
    const samples = await samplesOf(file);
    for (const [i, record] of [...samples.positives, ...samples.negatives].entries()) {
      const full = { ...BASE, eventID: `${file}-deferred-${i}`, ...record };
      const splitter = new RecordSplitter(file, { defer: DEFERRED_PAYLOADS });
      const [item] = splitter.push(new TextEncoder().encode(JSON.stringify({ Records: [full] })));
      if (JSON.stringify(item.record) !== JSON.stringify(full)) deferred++;
      const expected = detector.match!(normalize(structuredClone(full))) ?? [];
      const actual = detector.match!(normalize(item.record!)) ?? [];
      assert.deepEqual(actual, expected, `${file} sample ${i}`);
    }
  }
  // The pack's samples carry payloads: most of them were cut out by the decoder.
  assert.ok(deferred >= ruleFiles.length, `only ${deferred} samples had deferred payloads`);
});

Deno.test("built-in pack: most rules are indexed by eventName or eventSource", () => {
  const unindexed = detector.rules.filter((r) => !r.eventNames && !r.eventSources).map((r) => r.id);
  assert.deepEqual(
    unindexed,
    [ROOT_USAGE_RULE_ID],
    "only the root usage rule applies to every event",
  );
});

Deno.test("built-in pack: ordinary read-only activity raises nothing", () => {
  const quiet: CloudTrailRecord[] = [
    { eventSource: "s3.amazonaws.com", eventName: "ListBuckets", readOnly: true },
    { eventSource: "sts.amazonaws.com", eventName: "GetCallerIdentity", readOnly: true },
    { eventSource: "ec2.amazonaws.com", eventName: "DescribeInstances", readOnly: true },
    {
      eventSource: "signin.amazonaws.com",
      eventName: "ConsoleLogin",
      eventType: "AwsConsoleSignIn",
      responseElements: { ConsoleLogin: "Success" },
      additionalEventData: { MFAUsed: "Yes" },
    },
    { eventSource: "kms.amazonaws.com", eventName: "GenerateDataKey", readOnly: true },
  ];
  for (const [i, record] of quiet.entries()) {
    assert.equal(
      detector.match!(sampleEvent("quiet", "negative", i, record)),
      undefined,
      JSON.stringify(record),
    );
  }
});
