/**
 * Generates the demo CloudTrail logs in examples/logs/ (deterministic; run with
 * `deno task demo-data`). The layout is CloudTrail's own S3 layout:
 * `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<rand>.json.gz`.
 *
 * The story, on 2026-11-18/19, in two accounts and three regions, among a few hundred ordinary
 * calls: alice logs in from the UK, then 90 minutes later from Brazil (impossible travel, new
 * country); the deploy-bot access key is used from the US and, 20 minutes later, from Germany
 * (credential travel); bob logs in without MFA; the root user logs in; carol stops a CloudTrail
 * trail and opens a security group to the world.
 *
 * @module
 */

import { gzipSync } from "node:zlib";
import { seeded } from "../bench/dataset.ts";

/** Where the logs go. */
export const OUT_DIR = new URL("./logs/", import.meta.url);

const PROD = "111122223333";
const DEV = "444455556666";

const random = seeded(20261118);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
const hex = (n: number) =>
  Array.from({ length: n }, () => Math.floor(random() * 16).toString(16)).join("");
const uuid = () =>
  `${hex(8)}-${hex(4)}-4${hex(3)}-${pick(["8", "9", "a", "b"])}${hex(3)}-${hex(12)}`;

const BROWSER =
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const WINDOWS =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const CLI =
  "aws-cli/2.22.0 md/awscrt#0.23.4 ua/2.0 os/linux#6.8.0 md/arch#x86_64 lang/python#3.12.6";
const SDK =
  "aws-sdk-go-v2/1.32.6 os/linux lang/go#1.23.4 md/GOOS#linux md/GOARCH#amd64 api/s3#1.71.0";

type Identity = Record<string, unknown>;

function iamUser(account: string, name: string, accessKeyId?: string): Identity {
  return {
    type: "IAMUser",
    principalId: `AIDA${hex(16).toUpperCase()}`,
    arn: `arn:aws:iam::${account}:user/${name}`,
    accountId: account,
    ...(accessKeyId ? { accessKeyId } : {}),
    userName: name,
  };
}

function assumedRole(account: string, role: string, session: string): Identity {
  const roleId = `AROA${hex(16).toUpperCase()}`;
  return {
    type: "AssumedRole",
    principalId: `${roleId}:${session}`,
    arn: `arn:aws:sts::${account}:assumed-role/${role}/${session}`,
    accountId: account,
    accessKeyId: `ASIA${hex(16).toUpperCase()}`,
    sessionContext: {
      sessionIssuer: {
        type: "Role",
        principalId: roleId,
        arn: `arn:aws:iam::${account}:role/${role}`,
        accountId: account,
        userName: role,
      },
      attributes: { creationDate: "2026-11-18T07:00:00Z", mfaAuthenticated: "false" },
    },
  };
}

const root = (account: string): Identity => ({
  type: "Root",
  principalId: account,
  arn: `arn:aws:iam::${account}:root`,
  accountId: account,
});

interface Event {
  time: string;
  account: string;
  region: string;
  identity: Identity;
  source: string;
  name: string;
  ip: string;
  agent: string;
  request?: unknown;
  response?: unknown;
  extra?: unknown;
  error?: [string, string];
  type?: string;
  readOnly?: boolean;
}

function record(e: Event): Record<string, unknown> {
  const r: Record<string, unknown> = {
    eventVersion: "1.10",
    userIdentity: e.identity,
    eventTime: e.time,
    eventSource: e.source,
    eventName: e.name,
    awsRegion: e.region,
    sourceIPAddress: e.ip,
    userAgent: e.agent,
  };
  if (e.error) {
    r.errorCode = e.error[0];
    r.errorMessage = e.error[1];
  }
  r.requestParameters = e.request ?? null;
  r.responseElements = e.response ?? null;
  if (e.extra) r.additionalEventData = e.extra;
  r.requestID = uuid();
  r.eventID = uuid();
  r.readOnly = e.readOnly ?? /^(Get|List|Describe|Lookup)/.test(e.name);
  r.eventType = e.type ?? "AwsApiCall";
  r.managementEvent = true;
  r.recipientAccountId = e.account;
  r.eventCategory = "Management";
  if (
    e.type !== "AwsConsoleSignIn" && !e.ip.endsWith(".amazonaws.com") && e.ip !== "AWS Internal"
  ) {
    r.tlsDetails = {
      tlsVersion: "TLSv1.3",
      cipherSuite: "TLS_AES_128_GCM_SHA256",
      clientProvidedHostHeader: `${e.source.split(".")[0]}.${e.region}.amazonaws.com`,
    };
  }
  return r;
}

function login(
  time: string,
  account: string,
  identity: Identity,
  ip: string,
  mfa: "Yes" | "No",
  agent = BROWSER,
): Event {
  return {
    time,
    account,
    region: "us-east-1",
    identity,
    source: "signin.amazonaws.com",
    name: "ConsoleLogin",
    ip,
    agent,
    response: { ConsoleLogin: "Success" },
    extra: {
      LoginTo: "https://console.aws.amazon.com/console/home?state=hashArgs",
      MobileVersion: "No",
      MFAUsed: mfa,
    },
    type: "AwsConsoleSignIn",
  };
}

const at = (day: number, hh: number, mm: number, ss = 0) =>
  `2026-11-${String(day).padStart(2, "0")}T${String(hh).padStart(2, "0")}:${
    String(mm).padStart(2, "0")
  }:${String(ss).padStart(2, "0")}Z`;

const DEPLOY_KEY = "AKIAEXAMPLEDEPLOY001";

/** The notable events of the story. */
function story(): Event[] {
  const alice = iamUser(PROD, "alice");
  const bob = iamUser(PROD, "bob");
  const deploy = iamUser(PROD, "deploy-bot", DEPLOY_KEY);
  const carol = assumedRole(PROD, "AdminRole", "carol");
  return [
    // alice: usual login from the UK, then Brazil 90 minutes later.
    login(at(18, 8, 2, 11), PROD, alice, "81.2.69.142", "Yes"),
    login(at(18, 9, 32, 40), PROD, alice, "200.147.67.142", "Yes", WINDOWS),
    // bob: console login without MFA.
    login(at(18, 10, 15, 3), PROD, bob, "178.62.1.1", "No"),
    // root: console login (with MFA) in the dev account.
    login(at(19, 6, 45, 0), DEV, root(DEV), "85.214.132.117", "Yes"),
    // deploy-bot: CI in the US, then the same key from Germany 20 minutes later.
    {
      time: at(18, 11, 0, 5),
      account: PROD,
      region: "us-west-2",
      identity: deploy,
      source: "s3.amazonaws.com",
      name: "ListBuckets",
      ip: "52.95.110.1",
      agent: SDK,
    },
    {
      time: at(18, 11, 20, 30),
      account: PROD,
      region: "eu-central-1",
      identity: deploy,
      source: "ec2.amazonaws.com",
      name: "DescribeInstances",
      ip: "85.214.132.117",
      agent: CLI,
      request: { instancesSet: {}, filterSet: {} },
    },
    // carol stops the trail and opens SSH to the world.
    {
      time: at(18, 14, 5, 12),
      account: PROD,
      region: "us-east-1",
      identity: carol,
      source: "cloudtrail.amazonaws.com",
      name: "StopLogging",
      ip: "81.2.69.142",
      agent: BROWSER,
      request: { name: `arn:aws:cloudtrail:us-east-1:${PROD}:trail/org-trail` },
    },
    {
      time: at(18, 14, 7, 45),
      account: PROD,
      region: "us-east-1",
      identity: carol,
      source: "ec2.amazonaws.com",
      name: "AuthorizeSecurityGroupIngress",
      ip: "81.2.69.142",
      agent: BROWSER,
      request: {
        groupId: "sg-0a1b2c3d4e5f67890",
        ipPermissions: {
          items: [{
            ipProtocol: "tcp",
            fromPort: 22,
            toPort: 22,
            groups: {},
            ipRanges: { items: [{ cidrIp: "0.0.0.0/0" }] },
            ipv6Ranges: {},
          }],
        },
      },
      response: { _return: true },
    },
  ];
}

const ROUTINE: { source: string; name: string; request?: unknown }[] = [
  {
    source: "ec2.amazonaws.com",
    name: "DescribeInstances",
    request: { instancesSet: {}, filterSet: {} },
  },
  { source: "ec2.amazonaws.com", name: "DescribeSecurityGroups" },
  { source: "s3.amazonaws.com", name: "ListBuckets" },
  {
    source: "s3.amazonaws.com",
    name: "GetBucketLocation",
    request: { bucketName: "app-assets", location: "" },
  },
  { source: "iam.amazonaws.com", name: "ListRoles" },
  { source: "iam.amazonaws.com", name: "GetUser" },
  { source: "sts.amazonaws.com", name: "GetCallerIdentity" },
  { source: "lambda.amazonaws.com", name: "ListFunctions20150331" },
  { source: "cloudwatch.amazonaws.com", name: "DescribeAlarms" },
  { source: "logs.amazonaws.com", name: "DescribeLogGroups" },
  { source: "dynamodb.amazonaws.com", name: "DescribeTable", request: { tableName: "orders" } },
  { source: "kms.amazonaws.com", name: "ListKeys" },
];

/** Ordinary activity: people and CI browsing, services assuming roles. */
function routine(): Event[] {
  const events: Event[] = [];
  const people = [
    { identity: iamUser(PROD, "alice"), ip: "81.2.69.142", agent: BROWSER, account: PROD },
    {
      identity: assumedRole(PROD, "AdminRole", "carol"),
      ip: "81.2.69.142",
      agent: BROWSER,
      account: PROD,
    },
    {
      identity: iamUser(PROD, "deploy-bot", DEPLOY_KEY),
      ip: "52.95.110.1",
      agent: SDK,
      account: PROD,
    },
    {
      identity: assumedRole(DEV, "DeveloperRole", "dave"),
      ip: "89.187.160.1",
      agent: CLI,
      account: DEV,
    },
    { identity: iamUser(DEV, "erin"), ip: "62.4.1.1", agent: CLI, account: DEV },
  ];
  const regions = ["us-east-1", "us-west-2", "eu-central-1"];
  for (let i = 0; i < 330; i++) {
    const day = i < 180 ? 18 : 19;
    const minute = Math.floor(random() * 60 * 16);
    const who = pick(people);
    const call = pick(ROUTINE);
    // deploy-bot only calls from its CI range in us-west-2 (keeps the credential-travel story clean).
    const region = who.identity.userName === "deploy-bot" ? "us-west-2" : pick(regions);
    events.push({
      time: at(day, 6 + Math.floor(minute / 60), minute % 60, Math.floor(random() * 60)),
      account: who.account,
      region,
      identity: who.identity,
      source: call.source,
      name: call.name,
      ip: who.ip,
      agent: who.agent,
      request: call.request,
    });
  }
  for (let i = 0; i < 40; i++) {
    const account = pick([PROD, DEV]);
    const minute = Math.floor(random() * 60 * 16);
    const region = pick(regions);
    events.push({
      time: at(18 + (i % 2), 6 + Math.floor(minute / 60), minute % 60, Math.floor(random() * 60)),
      account,
      region,
      identity: { type: "AWSService", invokedBy: "lambda.amazonaws.com" },
      source: "sts.amazonaws.com",
      name: "AssumeRole",
      ip: "lambda.amazonaws.com",
      agent: "lambda.amazonaws.com",
      request: {
        roleArn: `arn:aws:iam::${account}:role/order-processor`,
        roleSessionName: `s-${hex(8)}`,
      },
      type: "AwsApiCall",
    });
  }
  return events;
}

/** Groups events into CloudTrail-style files: one per account, region and 2-hour window. */
export function buildFiles(): Map<string, Uint8Array> {
  const events = [...story(), ...routine()].sort((a, b) => (a.time < b.time ? -1 : 1));
  const groups = new Map<string, Event[]>();
  for (const e of events) {
    const t = new Date(e.time);
    const window = new Date(Math.floor(t.getTime() / 7_200_000) * 7_200_000 + 300_000);
    const stamp = window.toISOString().replace(/[-:]/g, "").slice(0, 13) + "Z";
    const ymd = window.toISOString().slice(0, 10).replace(/-/g, "/");
    const dir = `AWSLogs/${e.account}/CloudTrail/${e.region}/${ymd}`;
    const key = `${dir}/${e.account}_CloudTrail_${e.region}_${stamp}`;
    const group = groups.get(key);
    if (group) group.push(e);
    else groups.set(key, [e]);
  }
  const files = new Map<string, Uint8Array>();
  for (const [key, group] of groups) {
    const body = JSON.stringify({ Records: group.map(record) });
    files.set(`${key}_${hex(16)}.json.gz`, gzipSync(new TextEncoder().encode(body), { level: 9 }));
  }
  // A digest file, which every source skips.
  const digest = {
    awsAccountId: PROD,
    digestStartTime: "2026-11-18T07:00:00Z",
    digestEndTime: "2026-11-18T08:00:00Z",
    digestS3Bucket: "org-trail-logs",
    logFiles: [],
  };
  files.set(
    `AWSLogs/${PROD}/CloudTrail-Digest/us-east-1/2026/11/18/${PROD}_CloudTrail-Digest_us-east-1_org-trail_us-east-1_20261118T080000Z.json.gz`,
    gzipSync(new TextEncoder().encode(JSON.stringify(digest))),
  );
  return files;
}

if (import.meta.main) {
  await Deno.remove(OUT_DIR, { recursive: true }).catch(() => undefined);
  let bytes = 0;
  const files = buildFiles();
  for (const [path, data] of files) {
    const url = new URL(path, OUT_DIR);
    await Deno.mkdir(new URL(".", url), { recursive: true });
    await Deno.writeFile(url, data);
    bytes += data.length;
  }
  console.log(`wrote ${files.size} files (${(bytes / 1024).toFixed(1)} KiB) under examples/logs/`);
}
