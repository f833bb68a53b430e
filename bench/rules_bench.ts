/**
 * Rule evaluation speed of the `rules` detector: `match()` over a realistic mixed stream of
 * normalized events (many services, ~5% console logins, ~1% sensitive calls), with the built-in
 * pack alone and with 60 extra generated rules (equality, wildcard, contains, regex, `1 of`,
 * unindexed). Prints events/s, then runs the `deno bench` cases.
 *
 * Run: `deno bench -A bench/rules_bench.ts`
 */

import { join } from "node:path";
import { captureLog } from "../core/log.ts";
import type { CloudTrailRecord, NormalizedEvent } from "../core/types.ts";
import { normalize } from "../mapping/normalize.ts";
import { createRules, type RulesDetector } from "../detectors/rules.ts";

const EVENTS = 20_000;

/** A small seeded PRNG so every run sees the same stream. */
function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = mulberry32(20261120);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];

/** Everyday calls: [eventSource, eventName, requestParameters]. */
const ROUTINE: [string, string, Record<string, unknown> | null][] = [
  ["sts.amazonaws.com", "AssumeRole", {
    roleArn: "arn:aws:iam::111122223333:role/app",
    roleSessionName: "s",
  }],
  ["sts.amazonaws.com", "GetCallerIdentity", null],
  ["ec2.amazonaws.com", "DescribeInstances", { instancesSet: {}, filterSet: {} }],
  ["ec2.amazonaws.com", "DescribeSecurityGroups", { securityGroupSet: {}, filterSet: {} }],
  ["ec2.amazonaws.com", "DescribeVolumes", { volumeSet: {}, filterSet: {} }],
  ["s3.amazonaws.com", "ListBuckets", { Host: "s3.amazonaws.com" }],
  ["s3.amazonaws.com", "GetBucketAcl", {
    bucketName: "reports",
    Host: "reports.s3.amazonaws.com",
    acl: [""],
  }],
  ["s3.amazonaws.com", "GetBucketPolicy", { bucketName: "reports", policy: [""] }],
  ["iam.amazonaws.com", "ListRoles", null],
  ["iam.amazonaws.com", "GetRole", { roleName: "app" }],
  ["iam.amazonaws.com", "ListAttachedRolePolicies", { roleName: "app" }],
  ["kms.amazonaws.com", "Decrypt", { encryptionAlgorithm: "SYMMETRIC_DEFAULT" }],
  ["kms.amazonaws.com", "GenerateDataKey", { keyId: "alias/app", keySpec: "AES_256" }],
  ["logs.amazonaws.com", "CreateLogStream", {
    logGroupName: "/aws/lambda/app",
    logStreamName: "x",
  }],
  ["logs.amazonaws.com", "DescribeLogGroups", null],
  ["lambda.amazonaws.com", "ListFunctions20150331", null],
  ["lambda.amazonaws.com", "GetFunction20150331v2", { functionName: "app" }],
  ["cloudtrail.amazonaws.com", "LookupEvents", { maxResults: 50 }],
  ["ssm.amazonaws.com", "GetParameter", { name: "/app/config", withDecryption: false }],
  ["secretsmanager.amazonaws.com", "GetSecretValue", { secretId: "prod/db" }],
  ["dynamodb.amazonaws.com", "DescribeTable", { tableName: "orders" }],
  ["ecr.amazonaws.com", "GetAuthorizationToken", null],
  ["autoscaling.amazonaws.com", "DescribeAutoScalingGroups", null],
  ["cloudformation.amazonaws.com", "DescribeStacks", { stackName: "app" }],
  ["monitoring.amazonaws.com", "GetMetricData", { startTime: "x", endTime: "y" }],
];

/** Rare, sensitive calls (some match the pack). */
const SENSITIVE: [string, string, Record<string, unknown>][] = [
  ["ec2.amazonaws.com", "AuthorizeSecurityGroupIngress", {
    groupId: "sg-1",
    ipPermissions: {
      items: [{ ipProtocol: "tcp", fromPort: 22, ipRanges: { items: [{ cidrIp: "0.0.0.0/0" }] } }],
    },
  }],
  ["iam.amazonaws.com", "CreateAccessKey", { userName: "backup" }],
  ["s3.amazonaws.com", "PutBucketPolicy", {
    bucketName: "reports",
    bucketPolicy: { Statement: [{ Effect: "Allow", Principal: "*", Action: "s3:GetObject" }] },
  }],
  ["cloudtrail.amazonaws.com", "StopLogging", { name: "trail" }],
  ["iam.amazonaws.com", "PutRolePolicy", {
    roleName: "x",
    policyDocument: '{"Statement":[{"Action":"*"}]}',
  }],
  ["ssm.amazonaws.com", "StartSession", { target: "i-1" }],
];

const IDENTITIES = [
  {
    type: "IAMUser",
    userName: "alice",
    arn: "arn:aws:iam::111122223333:user/alice",
    accountId: "111122223333",
  },
  {
    type: "AssumedRole",
    arn: "arn:aws:sts::111122223333:assumed-role/app/i-0abc",
    accountId: "111122223333",
    sessionContext: {
      sessionIssuer: { type: "Role", userName: "app", arn: "arn:aws:iam::111122223333:role/app" },
    },
  },
  {
    type: "AssumedRole",
    arn: "arn:aws:sts::111122223333:assumed-role/ci/run",
    accountId: "111122223333",
    sessionContext: {
      sessionIssuer: { type: "Role", userName: "ci", arn: "arn:aws:iam::111122223333:role/ci" },
    },
  },
  { type: "AWSService", invokedBy: "cloudformation.amazonaws.com" },
];
const AGENTS = [
  "aws-cli/2.17.0 Python/3.11",
  "Boto3/1.34.0 Python/3.12",
  "aws-sdk-go-v2/1.30",
  "console.amazonaws.com",
];

function record(i: number): CloudTrailRecord {
  const base: CloudTrailRecord = {
    eventVersion: "1.09",
    eventTime: new Date(Date.parse("2026-11-20T00:00:00Z") + i * 1000).toISOString(),
    eventID: `bench-${i}`,
    awsRegion: pick(["eu-west-1", "us-east-1", "eu-central-1"]),
    sourceIPAddress: `203.0.113.${Math.floor(random() * 250)}`,
    userAgent: pick(AGENTS),
    userIdentity: pick(IDENTITIES),
    eventType: "AwsApiCall",
    recipientAccountId: "111122223333",
    readOnly: true,
  };
  const roll = random();
  if (roll < 0.05) {
    const ok = random() < 0.8;
    return {
      ...base,
      eventSource: "signin.amazonaws.com",
      eventName: "ConsoleLogin",
      eventType: "AwsConsoleSignIn",
      userIdentity: IDENTITIES[0],
      responseElements: { ConsoleLogin: ok ? "Success" : "Failure" },
      additionalEventData: {
        MFAUsed: random() < 0.7 ? "Yes" : "No",
        LoginTo: "https://console.aws.amazon.com/",
      },
    };
  }
  if (roll < 0.06) {
    const [eventSource, eventName, requestParameters] = pick(SENSITIVE);
    return { ...base, eventSource, eventName, requestParameters, readOnly: false };
  }
  const [eventSource, eventName, requestParameters] = pick(ROUTINE);
  const out: CloudTrailRecord = { ...base, eventSource, eventName, requestParameters };
  if (random() < 0.03) out.errorCode = "AccessDenied";
  return out;
}

/** 60 extra rules in the shapes SigmaHQ's CloudTrail rules use. */
function extraRules(): Record<string, string> {
  const files: Record<string, string> = {};
  const names = ROUTINE.map(([, name]) => name).concat([
    "CreateUser",
    "DeleteBucket",
    "PutBucketAcl",
    "RunInstances",
  ]);
  for (let i = 0; i < 60; i++) {
    const id = `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
    let detection: string;
    switch (i % 6) {
      case 0: // plain equality on eventName (indexed)
        detection = `  selection:\n    eventSource: ${
          ROUTINE[i % ROUTINE.length][0]
        }\n    eventName: ${
          names[i % names.length]
        }\n    userAgent|contains: kali\n  condition: selection`;
        break;
      case 1: // several names, an error code and a filter (indexed)
        detection =
          `  selection:\n    eventName:\n      - ${names[i % names.length]}\n      - ${
            names[(i + 3) % names.length]
          }\n    errorCode: AccessDenied\n  filter:\n    userIdentity.type: AWSService\n` +
          `  condition: selection and not filter`;
        break;
      case 2: // startswith on the name, indexed by eventSource
        detection =
          `  selection:\n    eventSource: ${
            ROUTINE[i % ROUTINE.length][0]
          }\n    eventName|startswith: Delete\n` +
          `  condition: selection`;
        break;
      case 3: // regex on the ARN with a name (indexed)
        detection =
          `  selection:\n    eventName: ${
            names[i % names.length]
          }\n    userIdentity.arn|re: ':assumed-role/[^/]+/i-[0-9a-f]+$'\n` +
          `    sourceIPAddress|cidr: 198.51.100.0/24\n  condition: selection`;
        break;
      case 4: // 1 of with nested paths (indexed)
        detection =
          `  selection:\n    eventName: ${
            names[i % names.length]
          }\n  sel_a:\n    requestParameters.roleName|endswith: '-admin'\n  sel_b:\n    errorCode: AccessDenied\n` +
          `  condition: selection and 1 of sel_*`;
        break;
      default: // no eventName or eventSource: evaluated for every event
        detection =
          `  selection:\n    userAgent|contains:\n      - sqlmap\n      - nmap${i}\n      - pacu\n  condition: selection`;
    }
    files[`extra_${String(i).padStart(2, "0")}.yml`] =
      `title: Extra rule ${i}\nid: ${id}\nstatus: test\nlogsource:\n  product: aws\n  service: cloudtrail\n` +
      `detection:\n${detection}\nlevel: low\n`;
  }
  return files;
}

const events: NormalizedEvent[] = Array.from({ length: EVENTS }, (_, i) => normalize(record(i)));

const restore = captureLog(() => {});
const builtin: RulesDetector = await createRules({ exclude: [] }, { name: "rules", baseDir: "." });
const dir = await Deno.makeTempDir({ prefix: "trailwatch-bench-rules-" });
let withExtra: RulesDetector;
try {
  for (const [name, text] of Object.entries(extraRules())) {
    await Deno.writeTextFile(join(dir, name), text);
  }
  withExtra = await createRules({ exclude: [], paths: [dir] }, { name: "rules", baseDir: "." });
} finally {
  restore();
  await Deno.remove(dir, { recursive: true });
}
if (withExtra.report.loaded !== builtin.report.loaded + 60) {
  throw new Error(
    `expected ${builtin.report.loaded + 60} rules, loaded ${withExtra.report.loaded}`,
  );
}

function run(detector: RulesDetector): number {
  let alerts = 0;
  for (const event of events) alerts += detector.match!(event)?.length ?? 0;
  return alerts;
}

function eventsPerSecond(detector: RulesDetector): { rate: number; alerts: number } {
  let alerts = run(detector); // warm-up
  const passes = 10;
  const start = performance.now();
  for (let i = 0; i < passes; i++) alerts = run(detector);
  const seconds = (performance.now() - start) / 1000;
  return { rate: (EVENTS * passes) / seconds, alerts };
}

const format = (n: number) => Math.round(n).toLocaleString("en-US");
for (
  const [label, detector] of [["built-in pack", builtin], [
    "built-in pack + 60 rules",
    withExtra,
  ]] as const
) {
  const { rate, alerts } = eventsPerSecond(detector);
  console.log(
    `rules ${label} (${detector.rules.length} rules): ${format(rate)} events/s ` +
      `(${EVENTS} events, ${alerts} alerts per pass)`,
  );
}

Deno.bench(`rules: built-in pack, ${EVENTS} events`, { group: "rules", baseline: true }, () => {
  run(builtin);
});

Deno.bench(`rules: built-in pack + 60 rules, ${EVENTS} events`, { group: "rules" }, () => {
  run(withExtra);
});
