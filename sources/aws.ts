/**
 * AWS plumbing shared by the `s3` and `sqs` sources: the common options (region, endpoint,
 * credentials, profile, role), the credential provider built from the AWS SDK's own providers,
 * the client configuration (retries with backoff and jitter, timeouts, keep-alive), and the
 * mapping of SDK errors onto short messages that name the resource and the permission that is
 * probably missing. Every secret seen here is registered for redaction.
 *
 * @example Building a client configuration from checked options
 * ```ts
 * import { S3Client } from "@aws-sdk/client-s3";
 * import { awsClientConfig } from "./aws.ts";
 * const client = new S3Client({
 *   ...awsClientConfig({ region: "eu-west-1", profile: "security-audit" }),
 *   forcePathStyle: false,
 * });
 * client.destroy();
 * ```
 *
 * @module
 */

import type { S3ClientConfig } from "@aws-sdk/client-s3";
import {
  fromIni,
  fromNodeProviderChain,
  fromTemporaryCredentials,
} from "@aws-sdk/credential-providers";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { errorMessage } from "../core/errors.ts";
import { redact, registerSecret } from "../core/log.ts";
import type { OptionsChecker } from "../core/validate.ts";

/** Static AWS keys. */
export interface StaticCredentials {
  /** The access key id (`AKIA…`, or `ASIA…` with a session token). */
  accessKeyId: string;
  /** The secret access key. */
  secretAccessKey: string;
  /** The session token of temporary credentials. */
  sessionToken?: string;
}

/** Options shared by the AWS sources. */
export interface AwsOptions {
  /** AWS region of the bucket or queue; default: `AWS_REGION`, then the profile's region. */
  region?: string;
  /** Endpoint URL of an S3/SQS-compatible service (MinIO, LocalStack, tests). */
  endpoint?: string;
  /** Path-style S3 URLs (`endpoint/bucket/key`), needed by most S3-compatible stores. */
  forcePathStyle: boolean;
  /** Static keys; without them (and without `profile`) the SDK's default chain is used. */
  credentials?: StaticCredentials;
  /** A profile of the shared config/credentials files (`~/.aws/config`). */
  profile?: string;
  /** A role to assume with STS AssumeRole, using the credentials above as the caller. */
  roleArn?: string;
  /** The external id the role's trust policy requires. */
  externalId?: string;
  /** Session name of the assumed role (shows up in the role's own CloudTrail events). */
  sessionName: string;
  /** Lifetime of the assumed-role credentials (900–43200 s); they are refreshed 5 min early. */
  roleDurationSeconds: number;
  /** STS endpoint URL (a VPC endpoint, or tests); default: the regional STS endpoint. */
  stsEndpoint?: string;
  /** Attempts per AWS request (1 = no retry), with exponential backoff and jitter. */
  maxAttempts: number;
}

/** Defaults of the AWS options. */
export const awsDefaults = {
  forcePathStyle: false,
  sessionName: "trailwatch",
  roleDurationSeconds: 3600,
  maxAttempts: 6,
} satisfies AwsOptions;

/** The AWS option names, for plugins that list their keys. */
export const AWS_OPTION_KEYS = [
  "region",
  "endpoint",
  "forcePathStyle",
  "credentials",
  "profile",
  "roleArn",
  "externalId",
  "sessionName",
  "roleDurationSeconds",
  "stsEndpoint",
  "maxAttempts",
] as const;

const REGION = /^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d{1,2}$/;
const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;
const SESSION_NAME = /^[\w+=,.@-]{2,64}$/;

function checkUrl(value: string): string | undefined {
  try {
    const url = new URL(value);
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return `expected an http(s) URL, got ${JSON.stringify(url.protocol)}`;
    }
  } catch {
    return `expected a URL such as "https://s3.eu-west-1.amazonaws.com", got ${
      JSON.stringify(value)
    }`;
  }
  return undefined;
}

/**
 * Checks the AWS options on a plugin's checker (unknown keys are left to the plugin's `done()`),
 * and registers every secret among them for redaction.
 *
 * @example Checking an S3 source block
 * ```ts
 * import { OptionsChecker } from "../core/validate.ts";
 * import { checkAwsOptions } from "./aws.ts";
 * const check = new OptionsChecker({ region: "eu-west-1", roleArn: "nope" }, "sources.trail");
 * checkAwsOptions(check);
 * console.log(check.problems); // [{ path: "sources.trail.roleArn", message: "expected …" }]
 * ```
 */
export function checkAwsOptions(check: OptionsChecker): void {
  const endpoint = check.string("endpoint");
  // S3-compatible stores (an endpoint) may use any region name.
  if (endpoint === undefined && check.raw.endpoint === undefined) {
    check.string("region", { pattern: REGION, hint: "an AWS region such as eu-west-1" });
  } else check.string("region", { pattern: /^\S+$/, hint: "a region name" });
  if (endpoint !== undefined) {
    const problem = checkUrl(endpoint);
    if (problem) check.problem("endpoint", problem);
  }
  check.boolean("forcePathStyle");
  check.object("credentials", (c) => {
    const id = c.string("accessKeyId", { required: true });
    const secret = c.string("secretAccessKey", { required: true });
    const token = c.string("sessionToken");
    for (const value of [id, secret, token]) registerSecret(value);
  });
  const profile = check.string("profile", { pattern: /^\S+$/, hint: "a profile name" });
  if (check.raw.credentials !== undefined && profile !== undefined) {
    check.problem("profile", "set either credentials or profile, not both");
  }
  const roleArn = check.string("roleArn", {
    pattern: ROLE_ARN,
    hint: "a role ARN such as arn:aws:iam::111122223333:role/trailwatch-reader",
  });
  const externalId = check.string("externalId", { pattern: /^[\w+=,.@:/-]{2,1224}$/ });
  registerSecret(externalId);
  if (externalId !== undefined && check.raw.roleArn === undefined) {
    check.problem("externalId", "needs roleArn (the external id is sent when assuming the role)");
  }
  check.string("sessionName", {
    pattern: SESSION_NAME,
    hint: "2–64 letters, digits or +=,.@_-",
  });
  check.integer("roleDurationSeconds", { min: 900, max: 43_200 });
  for (const key of ["sessionName", "roleDurationSeconds"]) {
    if (check.raw[key] !== undefined && roleArn === undefined && check.raw.roleArn === undefined) {
      check.problem(key, "needs roleArn");
    }
  }
  const sts = check.string("stsEndpoint");
  if (sts !== undefined) {
    const problem = checkUrl(sts);
    if (problem) check.problem("stsEndpoint", problem);
  }
  check.integer("maxAttempts", { min: 1, max: 20 });
}

/** A credential provider as the SDK clients take it (the SDK memoizes and refreshes it). */
export type CredentialProvider = NonNullable<S3ClientConfig["credentials"]>;

/** Which provider {@link awsCredentialProvider} built. */
export interface CredentialPlan {
  /** Where the base credentials come from. */
  base: "static" | "profile" | "default-chain";
  /** The role assumed on top of the base credentials, if any. */
  roleArn?: string;
  /** One line for logs: never contains a secret. */
  description: string;
}

/** Which credentials `options` select, without building anything. */
export function credentialPlan(options: Partial<AwsOptions>): CredentialPlan {
  const base = options.credentials ? "static" : options.profile ? "profile" : "default-chain";
  const from = base === "static"
    ? "static keys"
    : base === "profile"
    ? `profile "${options.profile}"`
    : "the AWS SDK default chain (env, shared profile, web identity, container/instance metadata)";
  return {
    base,
    roleArn: options.roleArn,
    description: options.roleArn
      ? `role ${options.roleArn} assumed with credentials from ${from}`
      : `credentials from ${from}`,
  };
}

type IdentityProvider = (props?: Record<string, unknown>) => Promise<Identity>;
interface Identity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/** Wraps a provider so every credential it returns is registered for redaction. */
function registering(provider: IdentityProvider): IdentityProvider {
  return async (props) => {
    const identity = await provider(props);
    registerSecret(identity.accessKeyId);
    registerSecret(identity.secretAccessKey);
    registerSecret(identity.sessionToken);
    return identity;
  };
}

/**
 * Builds the credential provider of `options` with the SDK's own providers: static keys,
 * `fromIni` for a profile, or `fromNodeProviderChain` (env, shared profile, SSO, web identity,
 * container and instance metadata); with `roleArn`, `fromTemporaryCredentials` assumes the role on
 * top of them (STS AssumeRole, refreshed by the SDK clients 5 minutes before expiry). Every key,
 * secret and token it returns is registered for redaction.
 *
 * @example Assuming a role with a profile's credentials
 * ```ts
 * import { awsCredentialProvider } from "./aws.ts";
 * const credentials = awsCredentialProvider({
 *   profile: "audit",
 *   roleArn: "arn:aws:iam::111122223333:role/trailwatch-reader",
 *   externalId: "b7f0c2",
 * });
 * ```
 */
export function awsCredentialProvider(options: Partial<AwsOptions>): CredentialProvider {
  let base: IdentityProvider;
  if (options.credentials) {
    const { accessKeyId, secretAccessKey, sessionToken } = options.credentials;
    for (const value of [accessKeyId, secretAccessKey, sessionToken]) registerSecret(value);
    const identity: Identity = sessionToken
      ? { accessKeyId, secretAccessKey, sessionToken }
      : { accessKeyId, secretAccessKey };
    base = () => Promise.resolve({ ...identity });
  } else if (options.profile) {
    base = fromIni({ profile: options.profile }) as IdentityProvider;
  } else {
    base = fromNodeProviderChain() as IdentityProvider;
  }
  base = registering(base);
  if (!options.roleArn) return base as CredentialProvider;
  registerSecret(options.externalId);
  const assumed = fromTemporaryCredentials({
    masterCredentials: base as Parameters<typeof fromTemporaryCredentials>[0]["masterCredentials"],
    params: {
      RoleArn: options.roleArn,
      RoleSessionName: options.sessionName ?? awsDefaults.sessionName,
      DurationSeconds: options.roleDurationSeconds ?? awsDefaults.roleDurationSeconds,
      ...(options.externalId ? { ExternalId: options.externalId } : {}),
    },
    clientConfig: {
      ...(options.region ? { region: options.region } : {}),
      ...(options.stsEndpoint ? { endpoint: options.stsEndpoint } : {}),
      ...(options.profile ? { profile: options.profile } : {}),
      maxAttempts: options.maxAttempts ?? awsDefaults.maxAttempts,
      requestHandler: httpHandler(),
    },
  }) as IdentityProvider;
  return registering(assumed) as CredentialProvider;
}

/** Milliseconds to open a connection before the attempt fails (and is retried). */
const CONNECT_TIMEOUT_MS = 5_000;
/** Milliseconds a socket may stay idle (no bytes) before the request fails (and is retried). */
const SOCKET_TIMEOUT_MS = 60_000;
/** Connections kept per client: downloads in flight + listings. */
const MAX_SOCKETS = 64;

function httpHandler(): NodeHttpHandler {
  return new NodeHttpHandler({
    connectionTimeout: CONNECT_TIMEOUT_MS,
    requestTimeout: SOCKET_TIMEOUT_MS,
    httpAgent: { keepAlive: true, maxSockets: MAX_SOCKETS },
    httpsAgent: { keepAlive: true, maxSockets: MAX_SOCKETS },
  });
}

/** The client configuration shared by the S3 and SQS clients. */
export interface AwsClientConfig {
  /** Region, when configured (otherwise the SDK resolves it from env or profile). */
  region?: string;
  /** Custom endpoint. */
  endpoint?: string;
  /** Profile (also used by the SDK to find the region). */
  profile?: string;
  /** The credential provider. */
  credentials: CredentialProvider;
  /** Attempts per request. */
  maxAttempts: number;
  /** `standard`: exponential backoff with full jitter on throttling, 5xx and network errors. */
  retryMode: "standard";
  /** Node HTTP handler with keep-alive and timeouts. */
  requestHandler: NodeHttpHandler;
}

/**
 * The client configuration of `options`: region, endpoint, credentials, retries (the SDK's
 * `standard` mode: exponential backoff with jitter on 5xx, SlowDown/throttling and connection
 * errors, bounded by `maxAttempts`) and socket timeouts. S3 clients add `forcePathStyle`.
 */
export function awsClientConfig(options: Partial<AwsOptions>): AwsClientConfig {
  return {
    ...(options.region ? { region: options.region } : {}),
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(options.profile ? { profile: options.profile } : {}),
    credentials: awsCredentialProvider(options),
    maxAttempts: options.maxAttempts ?? awsDefaults.maxAttempts,
    retryMode: "standard",
    requestHandler: httpHandler(),
  };
}

/** What an AWS error means for trailwatch. */
export type AwsErrorKind =
  | "access-denied"
  | "kms"
  | "no-such-bucket"
  | "no-such-key"
  | "no-such-queue"
  | "wrong-region"
  | "no-region"
  | "credentials"
  | "throttled"
  | "server"
  | "network"
  | "other";

/** An SDK error, explained. */
export interface AwsErrorInfo {
  /** The category. */
  kind: AwsErrorKind;
  /** A redacted message saying what went wrong and what to check (callers name the resource). */
  message: string;
  /** Whether a later attempt may succeed without a change on the user's side. */
  retryable: boolean;
  /** The AWS error code or Node error code, when there was one. */
  code?: string;
  /** HTTP status, when there was a response. */
  status?: number;
  /** The region AWS says the bucket is in (wrong-region errors). */
  region?: string;
}

/** What an AWS call was about, for {@link describeAwsError}. */
export interface AwsErrorContext {
  /** The IAM action the call needs, e.g. `s3:GetObject`. */
  permission: string;
  /** The ARN the permission must cover, e.g. `arn:aws:s3:::bucket/key`. */
  arn?: string;
  /** What the call was on: a 404 on a bucket means it is missing, on an object that it is gone. */
  scope: "bucket" | "object" | "queue";
  /** The configured region, to name in wrong-region messages. */
  region?: string;
  /** Config path of the source, e.g. `sources.trail`, to name in fix-it hints. */
  configPath?: string;
}

const THROTTLING = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "RequestLimitExceeded",
  "TooManyRequestsException",
  "ProvisionedThroughputExceededException",
  "BandwidthLimitExceeded",
]);
const CREDENTIALS = new Set([
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "ExpiredToken",
  "ExpiredTokenException",
  "InvalidToken",
  "InvalidClientTokenId",
  "TokenRefreshRequired",
  "UnrecognizedClientException",
  "CredentialsProviderError",
  "InvalidIdentityToken",
]);
const NETWORK = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ENOTFOUND",
  "TimeoutError",
  "RequestTimeout",
  "RequestTimeoutException",
]);

function field(error: unknown, name: string): unknown {
  return typeof error === "object" && error !== null
    ? (error as Record<string, unknown>)[name]
    : undefined;
}

/**
 * Explains an AWS SDK error: AccessDenied names the resource and the permission likely missing
 * (`s3:GetObject`, `s3:ListBucket`, `kms:Decrypt` for SSE-KMS objects), a missing bucket or a
 * wrong region says what to fix, throttling/5xx/network errors are retryable. The message is
 * redacted.
 *
 * @example Explaining a failed download
 * ```ts
 * import { describeAwsError } from "./aws.ts";
 * const denied = Object.assign(new Error("Access Denied"), { name: "AccessDenied" });
 * const info = describeAwsError(denied, {
 *   scope: "object",
 *   permission: "s3:GetObject",
 *   arn: "arn:aws:s3:::trail/AWSLogs/x.json.gz",
 * });
 * console.log(info.kind, info.message); // access-denied, "… likely lack s3:GetObject on …"
 * ```
 */
export function describeAwsError(error: unknown, context: AwsErrorContext): AwsErrorInfo {
  const metadata = field(error, "$metadata") as
    | { httpStatusCode?: number; attempts?: number }
    | undefined;
  const status = metadata?.httpStatusCode;
  const attempts = metadata?.attempts ?? 1;
  const name = field(error, "name");
  const rawCode = field(error, "Code") ?? field(error, "code");
  const nodeCode = typeof field(error, "code") === "string" ? field(error, "code") as string : "";
  const code = typeof rawCode === "string" && rawCode
    ? rawCode
    : typeof name === "string" && name !== "Error" && name !== "UnknownError"
    ? name
    : nodeCode || (status ? String(status) : "");
  const text = errorMessage(error);
  const detail = text && text !== code && text !== "UnknownError" ? `: ${text}` : "";
  const tried = attempts > 1 ? ` (after ${attempts} attempts)` : "";
  const key = (name: string) => (context.configPath ? `${context.configPath}.${name}` : name);
  const done = (
    kind: AwsErrorKind,
    message: string,
    retryable: boolean,
    region?: string,
  ): AwsErrorInfo => ({
    kind,
    message: redact(message),
    retryable,
    code: code || undefined,
    status,
    region,
  });

  const headerRegion = (field(field(error, "$response"), "headers") as
    | Record<string, string>
    | undefined)?.["x-amz-bucket-region"];
  const bodyRegion = field(error, "Region") ?? field(error, "BucketRegion");
  const expecting = /expecting '([a-z0-9-]+)'/.exec(text)?.[1];
  const actualRegion = (typeof bodyRegion === "string" && bodyRegion) || headerRegion || expecting;

  if (/kms/i.test(code) || (/kms/i.test(text) && (status === 403 || /denied/i.test(code)))) {
    return done(
      "kms",
      `access denied by KMS (${code || status}${detail}): the object is encrypted with ` +
        `SSE-KMS and the credentials likely lack kms:Decrypt on its key (allow kms:Decrypt in the ` +
        `key policy and the IAM policy)`,
      false,
    );
  }
  if (code === "RequestTimeTooSkewed") {
    return done(
      "other",
      `the system clock is off by more than 15 minutes (${code}); fix the clock (NTP)`,
      true,
    );
  }
  if (CREDENTIALS.has(code) || field(error, "name") === "CredentialsProviderError") {
    return done(
      "credentials",
      `the AWS credentials were rejected or could not be loaded (${code}${detail})`,
      false,
    );
  }
  if (code === "AccessDenied" || code === "AccessDeniedException" || status === 403) {
    return done(
      "access-denied",
      `access denied (${code || status}${detail}): the credentials likely lack ` +
        `${context.permission}${
          context.arn ? ` on ${context.arn}` : ""
        }, or a bucket/resource policy denies it`,
      false,
    );
  }
  if (code === "NoSuchBucket" || (status === 404 && context.scope === "bucket")) {
    return done(
      "no-such-bucket",
      `the bucket does not exist (${code || status}); check ${key("bucket")}`,
      false,
    );
  }
  if (code === "NoSuchKey" || (status === 404 && context.scope === "object")) {
    return done("no-such-key", `the object no longer exists (${code || status})`, false);
  }
  if (
    code === "AWS.SimpleQueueService.NonExistentQueue" || code === "QueueDoesNotExist"
  ) {
    return done(
      "no-such-queue",
      `the queue does not exist (${code}); check ${key("queueUrl")}`,
      false,
    );
  }
  if (
    code === "PermanentRedirect" || code === "AuthorizationHeaderMalformed" || status === 301 ||
    code === "IllegalLocationConstraintException" || code === "301"
  ) {
    const hint = actualRegion
      ? `the bucket is in ${actualRegion}${context.region ? `, not ${context.region}` : ""}; ` +
        `set ${key("region")} to "${actualRegion}"`
      : `set ${key("region")} to the bucket's region`;
    return done(
      "wrong-region",
      `wrong region (${code || status}): ${hint}`,
      false,
      actualRegion,
    );
  }
  if (/region is missing/i.test(text)) {
    return done(
      "no-region",
      `no AWS region configured; set ${key("region")} (or AWS_REGION)`,
      false,
    );
  }
  if (THROTTLING.has(code) || status === 429 || status === 503) {
    return done("throttled", `throttled (${code || status}${detail})${tried}`, true);
  }
  if (status !== undefined && status >= 500) {
    return done("server", `server error (${code || status}${detail})${tried}`, true);
  }
  if (NETWORK.has(code) || NETWORK.has(nodeCode) || /socket|network|timed? ?out/i.test(text)) {
    const dns = code === "ENOTFOUND" || nodeCode === "ENOTFOUND"
      ? " (the host name does not resolve: check region and endpoint)"
      : "";
    return done("network", `network error (${code}${detail})${dns}${tried}`, true);
  }
  return done(
    "other",
    `${code || "error"}${detail}${tried}`,
    status === undefined || status >= 500,
  );
}

/** The seeds' names for the AWS keys (BuffaLogs, LimaCharlie) → trailwatch's. */
const SEED_KEY_NAMES: Record<string, string> = {
  aws_access_key_id: "credentials.accessKeyId",
  aws_secret_access_key: "credentials.secretAccessKey",
  access_key: "credentials.accessKeyId",
  secret_key: "credentials.secretAccessKey",
};

/**
 * Reports the seeds' option names used inside a trailwatch source block (`bucket_name`,
 * `access_key`, …) with the trailwatch name to use instead; `names` adds the plugin's own.
 */
export function checkSeedNames(check: OptionsChecker, names: Record<string, string>): void {
  for (const [alias, name] of Object.entries({ ...names, ...SEED_KEY_NAMES })) {
    if (check.raw[alias] !== undefined) {
      check.any(alias);
      check.problem(alias, `trailwatch calls this "${name}"`);
    }
  }
}
