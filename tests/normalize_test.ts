import assert from "node:assert/strict";
import { hasDeferred } from "../core/decode.ts";
import { RecordError } from "../core/errors.ts";
import { compileCustomMapping } from "../mapping/custom_mapping.ts";
import { normalize, parseEventTime, toEcs } from "../mapping/normalize.ts";
import { ctRecord, deferred, rootLogin } from "./helpers/records.ts";

Deno.test("normalize() maps an IAM user call to BuffaLogs' fields", () => {
  const event = normalize(ctRecord({ eventID: "e-1", eventTime: "2026-11-18T08:00:00Z" }));
  assert.equal(event.timestamp, "2026-11-18T08:00:00Z");
  assert.equal(event.time, Date.parse("2026-11-18T08:00:00Z"));
  assert.equal(event.event_id, "e-1");
  assert.equal(event.event_name, "DescribeInstances");
  assert.equal(event.event_source, "ec2.amazonaws.com");
  assert.equal(event.username, "alice");
  assert.equal(event.user_type, "IAMUser");
  assert.equal(event.ip, "81.2.69.142");
  assert.equal(event.region, "us-east-1");
  assert.equal(event.account_id, "111122223333");
  assert.equal(event.access_key_id, "AKIAEXAMPLE0000000001");
  assert.equal(event.agent, "aws-cli/2.22.0");
  assert.equal(event.outcome, "success");
});

Deno.test("normalize() names the user by identity type", () => {
  const cases: [Record<string, unknown>, string, string | undefined][] = [
    [{ type: "IAMUser", userName: "bob", arn: "arn:aws:iam::1:user/bob" }, "bob", undefined],
    [
      {
        type: "AssumedRole",
        principalId: "AROAX:carol",
        arn: "arn:aws:sts::111122223333:assumed-role/AdminRole/carol",
        sessionContext: { sessionIssuer: { type: "Role", userName: "AdminRole" } },
      },
      "AdminRole",
      "carol",
    ],
    [
      { type: "AssumedRole", arn: "arn:aws:sts::1:assumed-role/OnlyArnRole/sess-9" },
      "OnlyArnRole",
      "sess-9",
    ],
    [
      { type: "Root", principalId: "111122223333", arn: "arn:aws:iam::111122223333:root" },
      "root",
      undefined,
    ],
    [{ type: "AWSService", invokedBy: "lambda.amazonaws.com" }, "lambda.amazonaws.com", undefined],
    [
      { type: "AWSAccount", accountId: "999988887777", principalId: "AIDAZ" },
      "999988887777",
      undefined,
    ],
    [
      {
        type: "FederatedUser",
        principalId: "111122223333:dana",
        sessionContext: { sessionIssuer: { userName: "federation-user" } },
      },
      "federation-user",
      "dana",
    ],
    [{ type: "SAMLUser", principalId: "saml:erin", userName: "erin" }, "erin", undefined],
    [
      { type: "WebIdentityUser", principalId: "accounts.google.com:1234" },
      "accounts.google.com:1234",
      undefined,
    ],
  ];
  for (const [identity, user, session] of cases) {
    const event = normalize(ctRecord({ userIdentity: identity }));
    assert.equal(event.username, user, `user for ${identity.type}`);
    assert.equal(event.session_name, session, `session for ${identity.type}`);
  }
});

Deno.test("normalize() gives no ip for a source address that is not an IP", () => {
  for (const source of ["AWS Internal", "ec2.amazonaws.com", "cloudtrail.amazonaws.com"]) {
    const event = normalize(ctRecord({ sourceIPAddress: source }));
    assert.equal(event.ip, undefined);
    assert.equal(event.source_host, source);
  }
  assert.equal(normalize(ctRecord({ sourceIPAddress: "2001:db8::7" })).ip, "2001:db8::7");
});

Deno.test("normalize() sets the outcome from errorCode and failed console logins", () => {
  assert.equal(normalize(ctRecord({ errorCode: "AccessDenied" })).outcome, "failure");
  assert.equal(normalize(ctRecord({ errorCode: "AccessDenied" })).error_code, "AccessDenied");
  const failedLogin = rootLogin({ responseElements: { ConsoleLogin: "Failure" } });
  assert.equal(normalize(failedLogin).outcome, "failure");
  const login = normalize(rootLogin());
  assert.equal(login.outcome, "success");
  assert.equal(login.mfa_used, "Yes");
});

Deno.test("normalize() rejects bad core fields with an error naming the field", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ eventTime: undefined }, /missing eventTime/],
    [{ eventTime: 1731916800 }, /eventTime: expected an ISO 8601 string, got 1731916800/],
    [{ eventTime: "yesterday" }, /eventTime: not a valid time/],
    [{ eventName: undefined }, /missing eventName/],
    [{ eventName: 42 }, /eventName: expected a non-empty string/],
    [{ eventID: { id: 1 } }, /eventID: expected a string/],
    [{ sourceIPAddress: { ip: "1.2.3.4" } }, /sourceIPAddress: expected a string, got an object/],
    [{ userIdentity: null }, /userIdentity: expected an object, got null/],
  ];
  for (const [overrides, pattern] of cases) {
    const record = ctRecord(overrides);
    for (const [k, v] of Object.entries(overrides)) if (v === undefined) delete record[k];
    assert.throws(
      () => normalize(record),
      (error: unknown) => error instanceof RecordError && pattern.test(error.message),
    );
  }
});

Deno.test("normalize() gives a record without eventID a stable content id", () => {
  const record = ctRecord();
  delete record.eventID;
  const a = normalize(record).event_id;
  assert.match(a, /^sha1:[0-9a-f]{40}$/);
  assert.equal(normalize(structuredClone(record)).event_id, a);
});

Deno.test("normalize() marks insight events", () => {
  assert.equal(normalize(ctRecord({ eventType: "AwsCloudTrailInsight" })).insight, true);
  assert.equal(normalize(ctRecord(), { insight: true }).insight, true);
  assert.equal(normalize(ctRecord()).insight, undefined);
});

Deno.test("custom_mapping overrides standard fields and adds custom ones by dotted path", () => {
  const mapping = compileCustomMapping({
    username: "userIdentity.arn",
    ip: "requestParameters.clientIp",
    country: "additionalEventData.geo.country",
    lat: "additionalEventData.geo.lat",
    team: "requestParameters.tags.0.value",
    missing: "requestParameters.nope.deeper",
  }, ["team"]);
  const event = normalize(
    ctRecord({
      requestParameters: { clientIp: "85.214.132.117", tags: [{ key: "team", value: "payments" }] },
      additionalEventData: { geo: { country: "DE", lat: "52.5" } },
    }),
    { mapping },
  );
  assert.equal(event.username, "arn:aws:iam::111122223333:user/alice");
  assert.equal(event.ip, "85.214.132.117");
  assert.equal(event.country, "DE");
  assert.equal(event.lat, 52.5);
  assert.equal(event.custom?.team, "payments");
  assert.equal(event.custom && "missing" in event.custom, false);
});

Deno.test("custom_mapping refuses prototype paths and never reads through a prototype", () => {
  assert.throws(
    () => compileCustomMapping({ username: "userIdentity.__proto__.polluted" }),
    /__proto__/,
  );
  assert.throws(
    () => compileCustomMapping(JSON.parse('{"__proto__": "eventName"}')),
    /not allowed/,
  );
  assert.throws(() => compileCustomMapping({ x: "constructor.prototype" }), /constructor/);
  assert.throws(() => compileCustomMapping({ team: "a" }, ["other"]), /__custom_fields__/);
  const mapping = compileCustomMapping({ username: "userIdentity.toString" });
  const event = normalize(ctRecord(), { mapping });
  assert.equal(event.username, "alice"); // inherited toString is not an own property
  const record = JSON.parse('{"__proto__": {"polluted": "yes"}}');
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.hasOwn(record, "__proto__"), true);
});

Deno.test("toEcs() projects the event onto ECS fields", () => {
  const event = normalize(ctRecord({ errorCode: "AccessDenied", eventID: "e-9" }));
  event.country = "GB";
  event.lat = 52.2;
  event.lon = 0.48;
  const ecs = toEcs(event);
  assert.deepEqual(ecs.event, {
    id: "e-9",
    action: "DescribeInstances",
    provider: "ec2.amazonaws.com",
    outcome: "failure",
    kind: "event",
  });
  assert.equal(ecs.source?.ip, "81.2.69.142");
  assert.deepEqual(ecs.source?.geo, {
    country_iso_code: "GB",
    city_name: undefined,
    location: { lat: 52.2, lon: 0.48 },
  });
  assert.equal(ecs.user.name, "alice");
  assert.equal(ecs.cloud.account?.id, "111122223333");
  assert.equal(ecs.cloud.region, "us-east-1");
  assert.equal(ecs.user_agent?.original, "aws-cli/2.22.0");
  assert.equal(ecs.error?.code, "AccessDenied");
  assert.equal(ecs["@timestamp"], "2026-11-18T08:00:00Z");
});

/** `record` as the pipeline's decoder gives it: its payloads deferred. */
Deno.test("normalize() reads the deferred payloads it needs and leaves the others", () => {
  // A console login's outcome is in responseElements.
  const failedLogin = rootLogin({ responseElements: { ConsoleLogin: "Failure" } });
  assert.equal(normalize(deferred(failedLogin)).outcome, "failure");
  // Without an eventID, the id is a hash of the whole record.
  const noId = ctRecord({ requestParameters: { bucketName: "b" } });
  delete noId.eventID;
  assert.equal(normalize(deferred(noId)).event_id, normalize(structuredClone(noId)).event_id);
  // A custom mapping may read any field.
  const mapping = compileCustomMapping({ team: "requestParameters.team" }, ["team"]);
  const mapped = normalize(deferred(ctRecord({ requestParameters: { team: "payments" } })), {
    mapping,
  });
  assert.equal(mapped.custom?.team, "payments");
  // An ordinary call: the payload stays deferred (nothing read it).
  const call = normalize(deferred(ctRecord({ requestParameters: { bucketName: "b" } })));
  assert.equal(hasDeferred(call.raw), true);
});

Deno.test("parseEventTime() agrees with Date.parse, fast path or not", () => {
  const texts = [
    "2026-11-20T08:00:00Z",
    "2026-11-20T23:59:59Z",
    "2026-11-21T00:00:00Z",
    "2024-02-29T12:34:56Z",
    "1999-12-31T23:59:59Z",
    "2026-11-20T08:00:00.123Z",
    "2026-11-20T08:00:00+02:00",
    "2026-11-20T24:00:00Z",
    "2026-11-20T08:60:00Z",
    "2026-11-20T08:00:60Z",
    "2026-02-30T08:00:00Z",
    "2026-13-01T08:00:00Z",
    "2026-06-31T08:00:00Z",
    "2026-11-2xT08:00:00Z",
    "2026/11/20T08:00:00Z",
    "2026-11-20 08:00:00Z",
    "2026-11-20T08:00:00z",
    "20261120T080000Z",
    "not a time at all!!!",
    "",
  ];
  // Twice over, so the cached day is used after another day was parsed, and after a bad one.
  for (const text of [...texts, ...texts.toReversed()]) {
    assert.deepEqual(parseEventTime(text), Date.parse(text), text);
  }
  // Every second of two days, across midnight.
  const start = Date.UTC(2026, 10, 20, 0, 0, 0);
  for (let ms = start; ms < start + 2 * 86_400_000; ms += 997) {
    const text = new Date(ms - (ms % 1000)).toISOString().replace(".000Z", "Z");
    assert.equal(parseEventTime(text), ms - (ms % 1000), text);
  }
});
