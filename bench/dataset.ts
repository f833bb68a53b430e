/**
 * A deterministic, realistic CloudTrail dataset for benchmarks: mixed services and event names,
 * ~5% ConsoleLogin, many users, roles and access keys, IPs across countries, ~1.5 KB per record.
 *
 * @module
 */

import { gzipSync } from "node:zlib";

/** A seeded PRNG (mulberry32). */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Public IPs whose geoip-lite countries are spread over the world. */
export const PUBLIC_IPS = [
  "81.2.69.142", // GB
  "178.62.1.1", // GB
  "200.147.67.142", // BR
  "85.214.132.117", // DE
  "52.95.110.1", // US
  "24.24.24.24", // US
  "1.1.1.1", // AU
  "89.187.160.1", // JP
  "62.4.1.1", // FR
  "91.198.174.192", // NL
  "190.210.1.1", // AR
  "41.63.64.1", // ZA
  "119.28.1.1", // HK
  "195.110.124.1", // IT
  "18.200.1.1", // IE
];

const SERVICES: [string, string[]][] = [
  ["ec2.amazonaws.com", [
    "DescribeInstances",
    "DescribeSecurityGroups",
    "DescribeVolumes",
    "RunInstances",
    "CreateTags",
  ]],
  ["s3.amazonaws.com", ["ListBuckets", "GetBucketAcl", "GetBucketPolicy", "PutBucketTagging"]],
  ["iam.amazonaws.com", [
    "ListRoles",
    "GetRole",
    "ListAttachedRolePolicies",
    "GetUser",
    "ListAccessKeys",
  ]],
  ["sts.amazonaws.com", ["AssumeRole", "GetCallerIdentity"]],
  ["lambda.amazonaws.com", ["ListFunctions20150331", "GetFunction20150331v2", "Invoke"]],
  ["kms.amazonaws.com", ["Decrypt", "GenerateDataKey", "ListKeys"]],
  ["logs.amazonaws.com", ["DescribeLogGroups", "CreateLogStream", "PutRetentionPolicy"]],
  ["cloudwatch.amazonaws.com", ["DescribeAlarms", "PutMetricAlarm", "GetMetricData"]],
  ["dynamodb.amazonaws.com", ["DescribeTable", "ListTables", "UpdateTimeToLive"]],
  ["ssm.amazonaws.com", ["GetParameter", "DescribeInstanceInformation", "GetParameters"]],
  ["secretsmanager.amazonaws.com", ["GetSecretValue", "DescribeSecret"]],
  ["rds.amazonaws.com", ["DescribeDBInstances", "DescribeDBClusters"]],
];

const AGENTS = [
  "aws-cli/2.22.0 md/awscrt#0.23.4 ua/2.0 os/linux#6.8.0-1019-aws md/arch#x86_64 lang/python#3.12.6 md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.24 md/prompt#off md/command#ec2.describe-instances",
  "aws-sdk-go-v2/1.32.6 ua/2.1 os/linux lang/go#1.23.4 md/GOOS#linux md/GOARCH#amd64 api/s3#1.71.0 m/E,Z,g",
  "Boto3/1.35.80 md/Botocore#1.35.80 ua/2.0 os/linux#5.10.228-219.884.amzn2.x86_64 md/arch#x86_64 lang/python#3.11.10 md/pyimpl#CPython exec-env/AWS_Lambda_python3.11 cfg/retry-mode#legacy Botocore/1.35.80",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
  "terraform-provider-aws/5.80.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.32.6 ua/2.1 os/linux lang/go#1.23.4",
];

/** Options of {@link generateRecords}. */
export interface DatasetOptions {
  /** Seed of the PRNG. */
  seed: number;
  /** Number of users (IAM users and role sessions). */
  users: number;
  /** First event time (epoch ms). */
  start: number;
  /** Mean gap between events (ms). */
  gapMs: number;
}

/** Default dataset options. */
export const defaults = {
  seed: 42,
  users: 400,
  start: Date.parse("2026-11-10T00:00:00Z"),
  gapMs: 40,
} satisfies DatasetOptions;

const hexOf = (r: () => number, n: number) => {
  let s = "";
  for (let i = 0; i < n; i++) s += Math.floor(r() * 16).toString(16);
  return s;
};

/**
 * Yields `count` CloudTrail records as JSON text (one string per record), deterministic for a
 * given seed and offset.
 */
export function* generateRecords(
  count: number,
  offset = 0,
  options: Partial<DatasetOptions> = {},
): Generator<string> {
  const opts = { ...defaults, ...options };
  const r = seeded(opts.seed + offset * 7919);
  const accounts = ["111122223333", "444455556666", "777788889999"];
  for (let i = 0; i < count; i++) {
    const n = offset + i;
    const u = Math.floor(r() * opts.users);
    const account = accounts[u % accounts.length];
    const isRole = u % 3 === 0;
    const name = isRole ? `role-${u % 40}` : `user-${u}`;
    const ip = PUBLIC_IPS[(u + (r() < 0.003 ? 1 + Math.floor(r() * 6) : 0)) % PUBLIC_IPS.length];
    const time = new Date(opts.start + n * opts.gapMs + Math.floor(r() * opts.gapMs)).toISOString()
      .replace(/\.\d{3}Z$/, "Z");
    const login = r() < 0.05;
    const [source, names] = SERVICES[Math.floor(r() * SERVICES.length)];
    const eventName = login ? "ConsoleLogin" : names[Math.floor(r() * names.length)];
    const eventSource = login ? "signin.amazonaws.com" : source;
    const region = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"][u % 5];
    const keyId = `AKIA${(u * 7919).toString(16).toUpperCase().padStart(16, "0")}`;
    const identity = isRole
      ? {
        type: "AssumedRole",
        principalId: `AROA${hexOf(r, 16).toUpperCase()}:${name}-session`,
        arn: `arn:aws:sts::${account}:assumed-role/${name}/${name}-session`,
        accountId: account,
        // One temporary key per role session (an hour).
        accessKeyId: `ASIA${
          ((u * 2654435761) ^ Math.floor((opts.start + n * opts.gapMs) / 3_600_000)) >>> 0
        }`.padEnd(20, "X"),
        sessionContext: {
          sessionIssuer: {
            type: "Role",
            principalId: `AROA${hexOf(r, 16).toUpperCase()}`,
            arn: `arn:aws:iam::${account}:role/${name}`,
            accountId: account,
            userName: name,
          },
          webIdFederationData: {},
          attributes: { creationDate: time, mfaAuthenticated: "false" },
        },
      }
      : {
        type: "IAMUser",
        principalId: `AIDA${hexOf(r, 16).toUpperCase()}`,
        arn: `arn:aws:iam::${account}:user/${name}`,
        accountId: account,
        accessKeyId: keyId,
        userName: name,
      };
    const failed = !login && r() < 0.02;
    const record: Record<string, unknown> = {
      eventVersion: "1.10",
      userIdentity: identity,
      eventTime: time,
      eventSource,
      eventName,
      awsRegion: region,
      sourceIPAddress: ip,
      userAgent: AGENTS[login ? 3 + (u % 2) : u % AGENTS.length],
    };
    if (failed) {
      record.errorCode = "AccessDenied";
      record.errorMessage =
        `User: arn:aws:iam::${account}:user/${name} is not authorized to perform: ${
          eventSource.split(".")[0]
        }:${eventName} on resource: arn:aws:${
          eventSource.split(".")[0]
        }:${region}:${account}:resource/${hexOf(r, 8)}`;
    }
    if (login) {
      record.requestParameters = null;
      record.responseElements = { ConsoleLogin: r() < 0.1 ? "Failure" : "Success" };
      record.additionalEventData = {
        LoginTo:
          "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB",
        MobileVersion: "No",
        MFAUsed: r() < 0.97 ? "Yes" : "No",
      };
    } else {
      const params: Record<string, unknown> = {
        filterSet: {
          items: [{
            name: "tag:Environment",
            valueSet: { items: [{ value: ["prod", "staging", "dev"][u % 3] }] },
          }],
        },
        maxResults: 1000,
        resourceArn: `arn:aws:${eventSource.split(".")[0]}:${region}:${account}:resource/${
          hexOf(r, 12)
        }`,
      };
      const extra = 1 + Math.floor(r() * 8);
      for (let k = 0; k < extra; k++) params[`attribute${k}`] = `value-${hexOf(r, 24)}`;
      record.requestParameters = params;
      record.responseElements = r() < 0.5 ? null : {
        requestId: `${hexOf(r, 8)}-${hexOf(r, 4)}-${hexOf(r, 4)}`,
        status: "ok",
        itemCount: Math.floor(r() * 100),
      };
    }
    record.requestID = `${hexOf(r, 8)}-${hexOf(r, 4)}-${hexOf(r, 4)}-${hexOf(r, 4)}-${
      hexOf(r, 12)
    }`;
    record.eventID = `${(n >>> 0).toString(16).padStart(8, "0")}-${hexOf(r, 4)}-4${hexOf(r, 3)}-8${
      hexOf(r, 3)
    }-${hexOf(r, 12)}`;
    record.readOnly = /^(Get|List|Describe)/.test(eventName);
    record.eventType = login ? "AwsConsoleSignIn" : "AwsApiCall";
    record.managementEvent = true;
    record.recipientAccountId = account;
    record.eventCategory = "Management";
    if (!login) {
      record.tlsDetails = {
        tlsVersion: "TLSv1.3",
        cipherSuite: "TLS_AES_128_GCM_SHA256",
        clientProvidedHostHeader: `${eventSource.split(".")[0]}.${region}.amazonaws.com`,
      };
    }
    yield JSON.stringify(record);
  }
}

/** One `{"Records":[…]}` file of `count` records, gzipped. */
export function trailFile(
  count: number,
  offset: number,
  options: Partial<DatasetOptions> = {},
): Uint8Array {
  const parts: string[] = [];
  for (const text of generateRecords(count, offset, options)) parts.push(text);
  const body = `{"Records":[${parts.join(",")}]}`;
  return new Uint8Array(gzipSync(new TextEncoder().encode(body), { level: 6 }));
}

/**
 * Writes one gzipped object of at least `bytes` decompressed bytes to `path`, streaming (it never
 * holds more than a batch of records). Returns the record count.
 */
export async function writeBigObject(path: string, bytes: number, offset: number): Promise<number> {
  const { createGzip } = await import("node:zlib");
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const gzip = createGzip({ level: 1 });
  const done = new Promise<void>((resolve, reject) => {
    gzip.on("data", (chunk: Uint8Array) => {
      let at = 0;
      while (at < chunk.length) at += file.writeSync(chunk.subarray(at));
    });
    gzip.on("end", () => resolve());
    gzip.on("error", reject);
  });
  const write = (text: string) =>
    new Promise<void>((resolve) => {
      if (gzip.write(text)) resolve();
      else gzip.once("drain", () => resolve());
    });
  let written = 0;
  let count = 0;
  await write('{"Records":[');
  while (written < bytes) {
    const batch: string[] = [];
    for (const text of generateRecords(5000, offset + count)) batch.push(text);
    const chunk = (count ? "," : "") + batch.join(",");
    await write(chunk);
    written += chunk.length;
    count += batch.length;
  }
  await write("]}");
  gzip.end();
  await done;
  file.close();
  return count;
}
