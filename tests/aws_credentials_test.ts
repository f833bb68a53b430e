import assert from "node:assert/strict";
import { HeadBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { resolveConfig } from "../core/config.ts";
import { redact } from "../core/log.ts";
import { OptionsChecker } from "../core/validate.ts";
import {
  awsClientConfig,
  awsCredentialProvider,
  checkAwsOptions,
  credentialPlan,
  describeAwsError,
} from "../sources/aws.ts";
import { startS3 } from "./helpers/fauxqs.ts";
import { startFaultProxy } from "./helpers/fault_proxy.ts";

type Provider = () => Promise<{
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}>;

/** The access key id a SigV4 Authorization header was signed with. */
function signedWith(authorization: string | null | undefined): string | undefined {
  return /Credential=([^/]+)\//.exec(authorization ?? "")?.[1];
}

/** Runs `fn` with environment variables set (undefined unsets), then restores them. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>) {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) {
      if (v === undefined) Deno.env.delete(k);
      else Deno.env.set(k, v);
    }
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

interface StsCall {
  params: URLSearchParams;
  signedWith?: string;
}

/** A loopback STS answering AssumeRole (Query API) with numbered credentials. */
function startSts(lifetimeMs: number) {
  const calls: StsCall[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const params = new URLSearchParams(await req.text());
    calls.push({ params, signedWith: signedWith(req.headers.get("authorization")) });
    if (params.get("Action") !== "AssumeRole") {
      return new Response(
        "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>",
        {
          status: 400,
        },
      );
    }
    const n = String(calls.length).padStart(4, "0");
    const expiration = new Date(Date.now() + lifetimeMs).toISOString();
    const xml = `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIASTUBASSUMED${n}</AccessKeyId>
      <SecretAccessKey>stub-assumed-secret-${n}-xxxxxxxxxxxxxxxx</SecretAccessKey>
      <SessionToken>stub-session-token-${n}-yyyyyyyyyyyyyyyy</SessionToken>
      <Expiration>${expiration}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <AssumedRoleId>AROASTUB:${params.get("RoleSessionName")}</AssumedRoleId>
      <Arn>arn:aws:sts::111122223333:assumed-role/reader/${params.get("RoleSessionName")}</Arn>
    </AssumedRoleUser>
  </AssumeRoleResult>
  <ResponseMetadata><RequestId>stub-${n}</RequestId></ResponseMetadata>
</AssumeRoleResponse>`;
    return new Response(xml, { headers: { "content-type": "text/xml" } });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, calls, stop: () => server.shutdown() };
}

const BASE = {
  accessKeyId: "AKIABASECALLER000001",
  secretAccessKey: "base-caller-secret-key-000000000000000001",
};
const ROLE = "arn:aws:iam::111122223333:role/trailwatch-reader";

Deno.test("static keys are used as they are and registered as secrets", async () => {
  const credentials = {
    accessKeyId: "AKIASTATICKEY0000001",
    secretAccessKey: "static-secret-key-that-must-not-leak-0001",
    sessionToken: "static-session-token-that-must-not-leak",
  };
  assert.equal(credentialPlan({ credentials }).base, "static");
  const provider = awsCredentialProvider({ credentials }) as Provider;
  assert.deepEqual(await provider(), credentials);
  assert.equal(redact(`key ${credentials.secretAccessKey}`), "key ***");
  assert.equal(redact(credentials.sessionToken), "***");
  assert.doesNotMatch(credentialPlan({ credentials }).description, /static-secret/);
});

Deno.test("a profile reads the shared credentials file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-aws-" });
  try {
    await Deno.writeTextFile(
      `${dir}/credentials`,
      "[default]\naws_access_key_id = AKIADEFAULTPROFILE01\naws_secret_access_key = default-x\n\n" +
        "[audit]\naws_access_key_id = AKIAPROFILEAUDIT0001\n" +
        "aws_secret_access_key = profile-audit-secret-0000000000000001\n",
    );
    await Deno.writeTextFile(`${dir}/config`, "[profile audit]\nregion = eu-west-1\n");
    await withEnv({
      AWS_SHARED_CREDENTIALS_FILE: `${dir}/credentials`,
      AWS_CONFIG_FILE: `${dir}/config`,
      AWS_PROFILE: undefined,
      AWS_ACCESS_KEY_ID: undefined,
      AWS_SECRET_ACCESS_KEY: undefined,
    }, async () => {
      assert.equal(credentialPlan({ profile: "audit" }).base, "profile");
      const provider = awsCredentialProvider({ profile: "audit" }) as Provider;
      const identity = await provider();
      assert.equal(identity.accessKeyId, "AKIAPROFILEAUDIT0001");
      assert.equal(identity.secretAccessKey, "profile-audit-secret-0000000000000001");
      assert.equal(redact(identity.secretAccessKey), "***");
      // The client takes its region from the profile too.
      const client = new S3Client(awsClientConfig({ profile: "audit" }));
      try {
        assert.equal(await client.config.region(), "eu-west-1");
      } finally {
        client.destroy();
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without keys or a profile, the SDK default chain is used (environment first)", async () => {
  await withEnv({
    AWS_ACCESS_KEY_ID: "AKIAFROMENVIRONMENT1",
    AWS_SECRET_ACCESS_KEY: "env-secret-key-000000000000000000000001",
    AWS_SESSION_TOKEN: "env-session-token-0000000000000001",
  }, async () => {
    assert.equal(credentialPlan({}).base, "default-chain");
    const provider = awsCredentialProvider({}) as Provider;
    const identity = await provider();
    assert.equal(identity.accessKeyId, "AKIAFROMENVIRONMENT1");
    assert.equal(identity.sessionToken, "env-session-token-0000000000000001");
    assert.equal(redact("env-secret-key-000000000000000000000001"), "***");
  });
});

Deno.test("roleArn assumes the role through STS with the external id, and S3 calls use the role", async () => {
  const sts = startSts(3_600_000);
  await using s3 = await startS3();
  s3.createBucket("assumed");
  await using proxy = await startFaultProxy({ target: s3.endpoint });
  const options = {
    region: "us-east-1",
    endpoint: proxy.url,
    credentials: BASE,
    roleArn: ROLE,
    externalId: "external-id-1234",
    sessionName: "trailwatch-test",
    roleDurationSeconds: 900,
    stsEndpoint: sts.url,
  };
  const plan = credentialPlan(options);
  assert.equal(plan.base, "static");
  assert.equal(plan.roleArn, ROLE);
  const client = new S3Client({ ...awsClientConfig(options), forcePathStyle: true });
  try {
    await client.send(new HeadBucketCommand({ Bucket: "assumed" }));
    await client.send(new HeadBucketCommand({ Bucket: "assumed" }));
    assert.equal(sts.calls.length, 1, "credentials valid for an hour are reused");
    const call = sts.calls[0];
    assert.equal(call.params.get("RoleArn"), ROLE);
    assert.equal(call.params.get("ExternalId"), "external-id-1234");
    assert.equal(call.params.get("RoleSessionName"), "trailwatch-test");
    assert.equal(call.params.get("DurationSeconds"), "900");
    assert.equal(call.signedWith, BASE.accessKeyId, "STS is called with the base credentials");
    const signers = proxy.log.map((r) => signedWith(r.headers.authorization));
    assert.deepEqual(signers, ["ASIASTUBASSUMED0001", "ASIASTUBASSUMED0001"]);
    assert.equal(
      proxy.log[0].headers["x-amz-security-token"],
      "stub-session-token-0001-yyyyyyyyyyyyyyyy",
    );
    assert.equal(redact("stub-assumed-secret-0001-xxxxxxxxxxxxxxxx"), "***");
    assert.equal(redact("external-id-1234"), "***");
  } finally {
    client.destroy();
    await sts.stop();
  }
});

Deno.test("assumed-role credentials are refreshed before they expire", async () => {
  // The SDK refreshes credentials 5 minutes before they expire: these become due 2 s after they
  // are issued, so the request after the pause assumes the role again and signs with new keys.
  const sts = startSts(300_000 + 2_000);
  await using s3 = await startS3();
  s3.createBucket("refreshed");
  await using proxy = await startFaultProxy({ target: s3.endpoint });
  const client = new S3Client({
    ...awsClientConfig({
      region: "us-east-1",
      endpoint: proxy.url,
      credentials: BASE,
      roleArn: ROLE,
      stsEndpoint: sts.url,
    }),
    forcePathStyle: true,
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: "refreshed" }));
    await client.send(new HeadBucketCommand({ Bucket: "refreshed" }));
    assert.equal(sts.calls.length, 1);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    await client.send(new HeadBucketCommand({ Bucket: "refreshed" }));
    await client.send(new HeadBucketCommand({ Bucket: "refreshed" }));
    assert.equal(sts.calls.length, 2);
    assert.equal(sts.calls[1].params.get("RoleSessionName"), "trailwatch");
    assert.deepEqual(proxy.log.map((r) => signedWith(r.headers.authorization)), [
      "ASIASTUBASSUMED0001",
      "ASIASTUBASSUMED0001",
      "ASIASTUBASSUMED0002",
      "ASIASTUBASSUMED0002",
    ]);
  } finally {
    client.destroy();
    await sts.stop();
  }
});

Deno.test("a profile's credentials can assume a role", async () => {
  const sts = startSts(3_600_000);
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-aws-" });
  try {
    await Deno.writeTextFile(
      `${dir}/credentials`,
      "[hub]\naws_access_key_id = AKIAHUBPROFILE000001\n" +
        "aws_secret_access_key = hub-profile-secret-000000000000000001\n",
    );
    await Deno.writeTextFile(`${dir}/config`, "");
    await withEnv({
      AWS_SHARED_CREDENTIALS_FILE: `${dir}/credentials`,
      AWS_CONFIG_FILE: `${dir}/config`,
    }, async () => {
      const provider = awsCredentialProvider({
        region: "us-east-1",
        profile: "hub",
        roleArn: ROLE,
        stsEndpoint: sts.url,
      }) as Provider;
      const identity = await provider();
      assert.equal(identity.accessKeyId, "ASIASTUBASSUMED0001");
      assert.ok(identity.expiration instanceof Date);
      assert.equal(sts.calls[0].signedWith, "AKIAHUBPROFILE000001");
    });
  } finally {
    await sts.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the AWS options are checked, each problem naming its key", () => {
  const problems = (raw: Record<string, unknown>) => {
    const check = new OptionsChecker(raw, "sources.trail");
    checkAwsOptions(check);
    check.done();
    return check.problems.map((p) => p.path).sort();
  };
  assert.deepEqual(problems({ region: "us-east-1", credentials: BASE }), []);
  assert.deepEqual(problems({ region: "Frankfurt" }), ["sources.trail.region"]);
  assert.deepEqual(problems({ region: "garage", endpoint: "http://127.0.0.1:3900" }), []);
  assert.deepEqual(problems({ endpoint: "ftp://x" }), ["sources.trail.endpoint"]);
  assert.deepEqual(problems({ credentials: { accessKeyId: "AKIA" } }), [
    "sources.trail.credentials.secretAccessKey",
  ]);
  assert.deepEqual(problems({ credentials: { ...BASE, extra: 1 } }), [
    "sources.trail.credentials.extra",
  ]);
  assert.deepEqual(problems({ credentials: BASE, profile: "audit" }), ["sources.trail.profile"]);
  assert.deepEqual(problems({ roleArn: "arn:aws:iam::1:role/x" }), ["sources.trail.roleArn"]);
  assert.deepEqual(problems({ externalId: "abc" }), ["sources.trail.externalId"]);
  assert.deepEqual(problems({ roleArn: ROLE, roleDurationSeconds: 60 }), [
    "sources.trail.roleDurationSeconds",
  ]);
  assert.deepEqual(problems({ sessionName: "x y" }), [
    "sources.trail.sessionName",
    "sources.trail.sessionName",
  ]);
  assert.deepEqual(problems({ maxAttempts: 0 }), ["sources.trail.maxAttempts"]);
});

Deno.test("BuffaLogs and LimaCharlie S3 blocks become s3 sources with static keys", () => {
  const buffalogs = resolveConfig({
    active_ingestion: "cloudtrail",
    cloudtrail: {
      bucket_name: "org-cloudtrail",
      prefix: "audit/",
      region: "eu-west-1",
      aws_access_key_id: "AKIABUFFALOGS0000001",
      aws_secret_access_key: "buffalogs-secret-0000000000000000000001",
    },
  }, "/");
  const source = buffalogs.sources[0];
  assert.equal(source.type, "s3");
  assert.equal(source.options.bucket, "org-cloudtrail");
  assert.equal(source.options.prefix, "audit/");
  assert.equal(credentialPlan(source.options).base, "static");
  assert.equal(redact("buffalogs-secret-0000000000000000000001"), "***");

  const limaCharlie = resolveConfig({
    s3: {
      bucket_name: "lc-trail",
      access_key: "AKIALIMACHARLIE00001",
      secret_key: "limacharlie-secret-000000000000000000001",
      region: "us-east-2",
      client_options: { hostname: "lc" },
    },
  }, "/");
  assert.equal(limaCharlie.sources[0].name, "lc");
  assert.equal(limaCharlie.sources[0].options.bucket, "lc-trail");
  assert.equal(credentialPlan(limaCharlie.sources[0].options).base, "static");

  // The seeds' names inside a trailwatch s3 block are pointed at the trailwatch names.
  assert.throws(
    () => resolveConfig({ sources: { t: { type: "s3", bucket: "abc", bucket_name: "abc" } } }, "/"),
    /sources\.t\.bucket_name: trailwatch calls this "bucket"/,
  );
});

Deno.test("AWS errors name the resource's missing permission, the fix, and nothing secret", () => {
  const error = (name: string, message: string, status?: number, extra = {}) =>
    Object.assign(new Error(message), {
      name,
      $metadata: { httpStatusCode: status, attempts: 1 },
      ...extra,
    });
  const object = {
    scope: "object" as const,
    permission: "s3:GetObject",
    arn: "arn:aws:s3:::trail/AWSLogs/x.json.gz",
    configPath: "sources.trail",
  };
  const denied = describeAwsError(error("AccessDenied", "Access Denied", 403), object);
  assert.equal(denied.kind, "access-denied");
  assert.equal(denied.retryable, false);
  assert.match(denied.message, /s3:GetObject on arn:aws:s3:::trail\/AWSLogs\/x\.json\.gz/);

  const kms = describeAwsError(
    error("AccessDenied", "not authorized to perform: kms:Decrypt on resource: arn:aws:kms:…", 403),
    object,
  );
  assert.equal(kms.kind, "kms");
  assert.match(kms.message, /kms:Decrypt/);
  const disabled = describeAwsError(error("KMS.DisabledException", "key disabled", 400), object);
  assert.equal(disabled.kind, "kms");

  const bucket = { scope: "bucket" as const, permission: "s3:ListBucket", region: "us-east-1" };
  assert.equal(describeAwsError(error("NoSuchBucket", "nope", 404), bucket).kind, "no-such-bucket");
  assert.equal(describeAwsError(error("NotFound", "", 404), bucket).kind, "no-such-bucket");
  const moved = describeAwsError(
    error(
      "AuthorizationHeaderMalformed",
      "the region 'us-east-1' is wrong; expecting 'ap-south-1'",
      400,
    ),
    { ...bucket, configPath: "sources.trail" },
  );
  assert.equal(moved.kind, "wrong-region");
  assert.equal(moved.region, "ap-south-1");
  assert.match(moved.message, /set sources\.trail\.region to "ap-south-1"/);

  const slow = describeAwsError(error("SlowDown", "Please reduce your request rate.", 503), object);
  assert.equal(slow.kind, "throttled");
  assert.equal(slow.retryable, true);
  const reset = describeAwsError(
    Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }),
    object,
  );
  assert.equal(reset.kind, "network");
  assert.equal(reset.retryable, true);

  const leaked = describeAwsError(
    error("InvalidAccessKeyId", `The key ${BASE.secretAccessKey} is not valid`, 403),
    object,
  );
  assert.equal(leaked.kind, "credentials");
  awsCredentialProvider({ credentials: BASE });
  const again = describeAwsError(
    error("InvalidAccessKeyId", `The key ${BASE.secretAccessKey} is not valid`, 403),
    object,
  );
  assert.doesNotMatch(again.message, /base-caller-secret/);
});
