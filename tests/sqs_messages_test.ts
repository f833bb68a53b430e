import assert from "node:assert/strict";
import { decodeS3EventKey, type ParsedMessage, parseMessage } from "../sources/_sqs_messages.ts";

const KEY = "AWSLogs/111122223333/CloudTrail/eu-west-1/2026/01/02/" +
  "111122223333_CloudTrail_eu-west-1_20260102T0105Z_abc.json.gz";
const DIGEST = "AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/2026/01/02/" +
  "111122223333_CloudTrail-Digest_eu-west-1_trail_eu-west-1_20260102T0105Z.json.gz";
const INSIGHT_KEY = "AWSLogs/111122223333/CloudTrail-Insight/eu-west-1/2026/01/02/" +
  "111122223333_CloudTrail-Insight_eu-west-1_20260102T0105Z_abc.json.gz";

function s3Event(key: string, eventName = "ObjectCreated:Put", bucket = "trail") {
  return {
    eventVersion: "2.1",
    eventSource: "aws:s3",
    awsRegion: "eu-west-1",
    eventTime: "2026-01-02T01:06:00.000Z",
    eventName,
    userIdentity: { principalId: "AWS:AROAEXAMPLE" },
    requestParameters: { sourceIPAddress: "10.0.0.1" },
    s3: {
      s3SchemaVersion: "1.0",
      configurationId: "trailwatch",
      bucket: { name: bucket, arn: `arn:aws:s3:::${bucket}` },
      object: { key, size: 1234, eTag: "0123456789abcdef", sequencer: "0A1B2C" },
    },
  };
}

function sns(message: unknown): string {
  return JSON.stringify({
    Type: "Notification",
    MessageId: "5f1b3c2e-0000-4000-8000-000000000001",
    TopicArn: "arn:aws:sns:eu-west-1:111122223333:cloudtrail",
    Message: typeof message === "string" ? message : JSON.stringify(message),
    Timestamp: "2026-01-02T01:06:01.000Z",
    SignatureVersion: "1",
    Signature: "EXAMPLE",
    SigningCertURL: "https://sns.eu-west-1.amazonaws.com/cert.pem",
    UnsubscribeURL: "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
  });
}

const ctRecord = {
  eventVersion: "1.10",
  userIdentity: { type: "Root", principalId: "111122223333", accountId: "111122223333" },
  eventTime: "2026-01-02T01:00:00Z",
  eventSource: "iam.amazonaws.com",
  eventName: "ListUsers",
  awsRegion: "eu-west-1",
  sourceIPAddress: "198.51.100.7",
  eventID: "a1b2c3d4-0000-4000-8000-000000000001",
  eventType: "AwsApiCall",
  recipientAccountId: "111122223333",
};

function eventBridge(detailType: string, detail: unknown, source = "aws.iam") {
  return {
    version: "0",
    id: "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": detailType,
    source,
    account: "111122223333",
    time: "2026-01-02T01:00:00Z",
    region: "us-east-1",
    resources: [],
    detail,
  };
}

const ref = (key: string, size?: number, bucket = "trail") =>
  size === undefined ? { bucket, key } : { bucket, key, size };

const cases: [string, string, ParsedMessage][] = [
  [
    "an S3 event notification names the created object",
    JSON.stringify({ Records: [s3Event(KEY)] }),
    { kind: "objects", shape: "s3-notification", sns: false, objects: [ref(KEY, 1234)] },
  ],
  [
    "S3 keys are URL-decoded, + being a space",
    JSON.stringify({ Records: [s3Event("logs/caf%C3%A9+2026/a%2Bb%3Dc.json.gz")] }),
    {
      kind: "objects",
      shape: "s3-notification",
      sns: false,
      objects: [ref("logs/café 2026/a+b=c.json.gz", 1234)],
    },
  ],
  [
    "an S3 event notification wrapped in SNS",
    sns({ Records: [s3Event(KEY, "ObjectCreated:CompleteMultipartUpload")] }),
    { kind: "objects", shape: "s3-notification", sns: true, objects: [ref(KEY, 1234)] },
  ],
  [
    "only ObjectCreated events of a notification name objects",
    JSON.stringify({
      Records: [s3Event("old.json.gz", "ObjectRemoved:Delete"), s3Event(KEY, "ObjectCreated:Copy")],
    }),
    { kind: "objects", shape: "s3-notification", sns: false, objects: [ref(KEY, 1234)] },
  ],
  [
    "an ObjectRemoved notification is ignored",
    JSON.stringify({ Records: [s3Event(KEY, "ObjectRemoved:Delete")] }),
    {
      kind: "ignored",
      sns: false,
      reason: "S3 event ObjectRemoved:Delete does not create an object",
    },
  ],
  [
    "a notification of a digest file is ignored",
    JSON.stringify({ Records: [s3Event(DIGEST)] }),
    { kind: "ignored", sns: false, reason: "it names only CloudTrail digest files" },
  ],
  [
    "the S3 test event is recognized",
    JSON.stringify({
      Service: "Amazon S3",
      Event: "s3:TestEvent",
      Time: "2026-01-02T01:00:00.000Z",
      Bucket: "trail",
      RequestId: "5582815E1AEA5ADF",
      HostId: "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }),
    { kind: "test", sns: false },
  ],
  [
    "CloudTrail's SNS notification names every key, digests and repeats dropped",
    sns({ s3Bucket: "org-trail", s3ObjectKey: [KEY, DIGEST, KEY, INSIGHT_KEY] }),
    {
      kind: "objects",
      shape: "cloudtrail-notification",
      sns: true,
      objects: [ref(KEY, undefined, "org-trail"), ref(INSIGHT_KEY, undefined, "org-trail")],
    },
  ],
  [
    "CloudTrail's notification keys are not URL-decoded",
    JSON.stringify({ s3Bucket: "org-trail", s3ObjectKey: ["a+b%20c.json.gz"] }),
    {
      kind: "objects",
      shape: "cloudtrail-notification",
      sns: false,
      objects: [ref("a+b%20c.json.gz", undefined, "org-trail")],
    },
  ],
  [
    "an EventBridge API call carries its CloudTrail record",
    JSON.stringify(eventBridge("AWS API Call via CloudTrail", ctRecord)),
    {
      kind: "records",
      shape: "eventbridge-cloudtrail",
      sns: false,
      records: [ctRecord],
      insight: undefined,
    },
  ],
  [
    "an EventBridge console sign-in fills in the account and region it lacks",
    JSON.stringify(
      eventBridge("AWS Console Sign In via CloudTrail", {
        ...ctRecord,
        recipientAccountId: undefined,
        awsRegion: undefined,
        eventName: "ConsoleLogin",
        eventSource: "signin.amazonaws.com",
      }),
    ),
    {
      kind: "records",
      shape: "eventbridge-cloudtrail",
      sns: false,
      records: [{
        ...ctRecord,
        eventName: "ConsoleLogin",
        eventSource: "signin.amazonaws.com",
        recipientAccountId: "111122223333",
        awsRegion: "us-east-1",
      }],
      insight: undefined,
    },
  ],
  [
    "an EventBridge Insights event is marked as one",
    JSON.stringify(eventBridge("AWS Insight via CloudTrail", ctRecord, "aws.cloudtrail")),
    {
      kind: "records",
      shape: "eventbridge-cloudtrail",
      sns: false,
      records: [ctRecord],
      insight: true,
    },
  ],
  [
    "S3's EventBridge Object Created event names the object, key as is",
    JSON.stringify(
      eventBridge("Object Created", {
        version: "0",
        bucket: { name: "trail" },
        object: { key: "logs/a+b.json.gz", size: 99 },
        reason: "PutObject",
      }, "aws.s3"),
    ),
    {
      kind: "objects",
      shape: "eventbridge-s3",
      sns: false,
      objects: [ref("logs/a+b.json.gz", 99)],
    },
  ],
  [
    "another EventBridge event is ignored",
    JSON.stringify(
      eventBridge("EC2 Instance State-change Notification", { state: "running" }, "aws.ec2"),
    ),
    {
      kind: "ignored",
      sns: false,
      reason: 'EventBridge event "EC2 Instance State-change Notification" from aws.ec2 is not ' +
        "a CloudTrail event",
    },
  ],
  [
    "an EventBridge event published through SNS",
    sns(eventBridge("AWS API Call via CloudTrail", ctRecord)),
    {
      kind: "records",
      shape: "eventbridge-cloudtrail",
      sns: true,
      records: [ctRecord],
      insight: undefined,
    },
  ],
  [
    "one raw CloudTrail record",
    JSON.stringify(ctRecord),
    { kind: "records", shape: "cloudtrail-records", sns: false, records: [ctRecord] },
  ],
  [
    "a raw CloudTrail file body",
    JSON.stringify({ Records: [ctRecord, { ...ctRecord, eventID: "e2" }] }),
    {
      kind: "records",
      shape: "cloudtrail-records",
      sns: false,
      records: [ctRecord, { ...ctRecord, eventID: "e2" }],
    },
  ],
  [
    "raw CloudTrail records with a bad one (the pipeline reports it)",
    JSON.stringify({ Records: [ctRecord, 42] }),
    { kind: "records", shape: "cloudtrail-records", sns: false, records: [ctRecord, 42] },
  ],
  [
    "an empty Records list is ignored",
    JSON.stringify({ Records: [] }),
    { kind: "ignored", sns: false, reason: "it holds no records" },
  ],
  [
    "a raw-delivery SNS subscription hands over the bare CloudTrail notification",
    JSON.stringify({ s3Bucket: "org-trail", s3ObjectKey: [KEY] }),
    {
      kind: "objects",
      shape: "cloudtrail-notification",
      sns: false,
      objects: [ref(KEY, undefined, "org-trail")],
    },
  ],
  [
    "an SNS subscription confirmation is ignored with its URL",
    JSON.stringify({
      Type: "SubscriptionConfirmation",
      TopicArn: "arn:aws:sns:eu-west-1:999988887777:cloudtrail",
      SubscribeURL: "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t",
      Message: "You have chosen to subscribe",
    }),
    {
      kind: "ignored",
      sns: true,
      reason: "SNS subscription confirmation for arn:aws:sns:eu-west-1:999988887777:cloudtrail: " +
        "confirm the subscription with its SubscribeURL " +
        "(https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t)",
    },
  ],
  ["a body that is not JSON", "hello", { kind: "unknown", reason: "the body is not JSON" }],
  ["a JSON string", '"hello"', { kind: "unknown", reason: "the body is JSON but not an object" }],
  [
    "an object of another kind",
    JSON.stringify({ orderId: 1, status: "paid" }),
    {
      kind: "unknown",
      reason: 'not a known notification shape (a JSON object with keys "orderId", "status")',
    },
  ],
  [
    "an SNS notification whose message is not JSON",
    sns("plain text"),
    { kind: "unknown", reason: "the SNS notification's Message is not JSON" },
  ],
  [
    "an S3 event with a broken URL escape",
    JSON.stringify({ Records: [s3Event("bad%E0%A4%A.json.gz")] }),
    {
      kind: "unknown",
      reason: "S3 event record 0 has a key that is not valid URL encoding",
    },
  ],
  [
    "an S3 event without a bucket",
    JSON.stringify({
      Records: [{ eventSource: "aws:s3", eventName: "ObjectCreated:Put", s3: {} }],
    }),
    { kind: "unknown", reason: "S3 event record 0 has no s3.bucket.name or s3.object.key" },
  ],
  [
    "Records mixing S3 events and CloudTrail records",
    JSON.stringify({ Records: [s3Event(KEY), ctRecord] }),
    { kind: "unknown", reason: "Records mixes S3 event records with other records" },
  ],
  [
    "a CloudTrail notification whose keys are not a list",
    JSON.stringify({ s3Bucket: "trail", s3ObjectKey: 5 }),
    {
      kind: "unknown",
      reason: "CloudTrail notification whose s3ObjectKey is not a list of keys",
    },
  ],
];

for (const [name, body, expected] of cases) {
  Deno.test(`parseMessage(): ${name}`, () => {
    assert.deepEqual(parseMessage(body), expected);
  });
}

Deno.test("parseMessage(): SNS envelopes nested too deep are not unwrapped forever", () => {
  let body = JSON.stringify({ s3Bucket: "trail", s3ObjectKey: [KEY] });
  for (let i = 0; i < 3; i++) body = sns(body);
  assert.deepEqual(parseMessage(body), {
    kind: "unknown",
    reason: "SNS notifications nested too deep",
  });
});

Deno.test("decodeS3EventKey() decodes + and %XX, and refuses a broken escape", () => {
  assert.equal(decodeS3EventKey("a+b%2Bc%20d"), "a b+c d");
  assert.equal(decodeS3EventKey("%E2%9C%93"), "✓");
  assert.equal(decodeS3EventKey("%zz"), undefined);
});
