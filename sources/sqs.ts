/**
 * The `sqs` source: CloudTrail notifications from an SQS queue, at least once, with nothing lost.
 *
 * **Shapes.** Each message is recognized by its body (see `_sqs_messages.ts`): an S3 event
 * notification, CloudTrail's own SNS notification, an EventBridge event, or raw CloudTrail JSON,
 * each possibly wrapped in SNS. S3 objects it names are read with the `s3` source's reader
 * ({@link openS3Object}: same errors, digest files skipped); records it carries go to the pipeline
 * as they are. An unknown shape is logged with its message id and left to the queue's redrive
 * policy.
 *
 * **Message life.** received → *held* (its visibility is extended every `visibilityTimeout / 2`
 * while its objects wait, download or are processed) → either every object it names is committed
 * (alerts in the outbox, marker written) and it is **deleted** (DeleteMessageBatch, up to 10 at a
 * time), or an object was released (unreadable after the pipeline's retries) and it is **failed**:
 * not deleted, its visibility set to one `visibilityTimeout` so the queue hands it out again after
 * that (counting towards the redrive policy); once received `maxReceiveCount` times a failing
 * message is reported as poison. Test events and shapes that carry nothing to read (ObjectRemoved,
 * digest files, other EventBridge events) are deleted at once.
 *
 * **Duplicates.** A marker per object processed (`["src", name, "obj", id]`, kept as long as the
 * queue keeps messages) is committed with the object's last alerts, so the same object named again
 * (a redelivered message, an S3 and a CloudTrail notification of one file, a message whose delete
 * was lost in a crash) is acknowledged without being read again. Event dedupe in the pipeline is
 * the second net.
 *
 * **A pass** receives until a long poll returns nothing new, `maxRunSeconds` elapse or the run is
 * aborted (while objects wait to be processed it tops up with short polls, so a stop never waits
 * for a long poll that holds messages). On a stop, messages held but not finished are given back
 * at once (visibility 0); the object in hand is finished by the pipeline first. With decode
 * workers the pipeline pulls objects ahead: the pass finishes (deletes, gives back, stops the
 * heartbeat) when the last of them is settled, or at the next pass or `close()` for those it
 * abandoned.
 *
 * @example One pass over a queue fed by CloudTrail's SNS topic
 * ```ts
 * import { resolveConfig } from "../core/config.ts";
 * import { Runtime } from "../core/pipeline.ts";
 * const config = resolveConfig({
 *   sources: {
 *     trail: {
 *       type: "sqs",
 *       queueUrl: "https://sqs.eu-west-1.amazonaws.com/111122223333/cloudtrail",
 *       region: "eu-west-1",
 *     },
 *   },
 * }, ".");
 * const runtime = await Runtime.create(config);
 * await runtime.runOnce();
 * await runtime.close();
 * ```
 *
 * @module
 */

import { S3Client } from "@aws-sdk/client-s3";
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SQSClient,
} from "@aws-sdk/client-sqs";
import { errorMessage } from "../core/errors.ts";
import { log } from "../core/log.ts";
import type { Commit } from "../core/state.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import { parseMessage, type S3Ref } from "./_sqs_messages.ts";
import {
  AWS_OPTION_KEYS,
  awsClientConfig,
  awsDefaults,
  type AwsOptions,
  checkAwsOptions,
  checkSeedNames,
  credentialPlan,
  describeAwsError,
} from "./aws.ts";
import type { Source, SourceContext, SourceObject, SourcePlugin, SourceRun } from "./mod.ts";
import { isInsightKey, openS3Object, s3ObjectId } from "./s3.ts";

/** Options of the `sqs` source (plus the AWS options of {@link AwsOptions}, for the queue). */
export interface Options extends AwsOptions {
  /** The queue URL, e.g. `https://sqs.eu-west-1.amazonaws.com/111122223333/cloudtrail`. */
  queueUrl: string;
  /**
   * AWS options for reading the S3 objects the messages name, when they differ from the queue's
   * (another account's role, another endpoint). Unset keys come from the queue's options.
   */
  s3?: Partial<AwsOptions>;
  /** Messages per ReceiveMessage call (1–10). */
  maxMessages: number;
  /** Long-poll wait of a ReceiveMessage call (0–20 s); a pass ends at the first empty one. */
  waitTimeSeconds: number;
  /** How long a received message stays invisible to other consumers (s); extended at half. */
  visibilityTimeout: number;
  /** Receives after which a message that still fails is reported as poison. */
  maxReceiveCount: number;
  /** Objects downloaded at once (the ones ahead start while the pipeline commits in order). */
  workers: number;
  /** How long one pass drains the queue before it returns (s); 0 drains until it is empty. */
  maxRunSeconds: number;
}

/** Defaults of the `sqs` source. */
export const defaults = {
  ...awsDefaults,
  queueUrl: "",
  maxMessages: 10,
  waitTimeSeconds: 20,
  visibilityTimeout: 300,
  maxReceiveCount: 5,
  workers: 4,
  maxRunSeconds: 240,
} satisfies Options;

/** Marker lifetime when the queue's retention cannot be read: SQS's longest retention. */
const MAX_RETENTION_MS = 14 * 86_400_000;
/** Time a finished message waits for others to fill a DeleteMessageBatch. */
const DELETE_BATCH_WAIT_MS = 200;
/** SQS batch limit. */
const BATCH = 10;
/** Deno KV getMany limit. */
const KV_GET_MANY = 10;

/** Options that say where credentials come from (the `s3` block replaces all of them at once). */
const CREDENTIAL_KEYS = [
  "credentials",
  "profile",
  "roleArn",
  "externalId",
  "sessionName",
  "roleDurationSeconds",
] as const;

const QUEUE_NAME = /^[A-Za-z0-9_-]{1,80}(\.fifo)?$/;

/** The queue name of a queue URL (its last path segment). */
export function queueName(url: string): string {
  return url.replace(/\/+$/, "").split("/").pop() ?? "";
}

/** An AWS queue URL: region (either form), `.cn`, account, name. */
const AWS_QUEUE_URL =
  /^https:\/\/(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue)\.amazonaws\.com(\.cn)?\/(\d{12})\/([^/]+)$/;

/** `arn:aws:sqs:<region>:<account>:<name>` for an AWS queue URL, else the URL. */
function queueArn(url: string): string {
  const m = AWS_QUEUE_URL.exec(url);
  return m ? `arn:${m[3] ? "aws-cn" : "aws"}:sqs:${m[1] ?? m[2]}:${m[4]}:${m[5]}` : url;
}

/**
 * The region of an AWS queue URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`), if it
 * is one.
 *
 * @example Taking the region from a queue URL
 * ```ts
 * import { queueRegion } from "./sqs.ts";
 * console.log(queueRegion("https://sqs.eu-west-1.amazonaws.com/111122223333/trail")); // eu-west-1
 * ```
 */
export function queueRegion(url: string): string | undefined {
  const m = AWS_QUEUE_URL.exec(url);
  return m ? m[1] ?? m[2] : undefined;
}

function checkQueueUrl(value: string): string | undefined {
  // Not `new URL()`: emulators hand out hosts such as `sqs.us-east-1.127.0.0.1`, which WHATWG URL
  // parsing refuses, and the SDK only passes the URL on.
  const match = /^(https?):\/\/[^/\s?#]+(\/[^\s?#]*)$/.exec(value);
  if (!match) {
    return `expected a queue URL such as "https://sqs.eu-west-1.amazonaws.com/111122223333/trail", got ${
      JSON.stringify(value)
    }`;
  }
  if (!QUEUE_NAME.test(queueName(match[2]))) {
    return `expected the URL to end with a queue name, got ${JSON.stringify(value)}`;
  }
  return undefined;
}

/** The S3 options of a source: the `s3` block, with unset keys taken from the queue's options. */
export function s3Options(options: Partial<Options>): Partial<AwsOptions> {
  const block = options.s3 ?? {};
  const out: Partial<AwsOptions> = {};
  const owned = CREDENTIAL_KEYS.some((k) => block[k] !== undefined);
  for (const key of AWS_OPTION_KEYS) {
    if ((CREDENTIAL_KEYS as readonly string[]).includes(key) && owned) continue;
    if (options[key] !== undefined) (out as Record<string, unknown>)[key] = options[key];
  }
  return { ...out, ...block };
}

// ---------------------------------------------------------------------------------------------
// A pass
// ---------------------------------------------------------------------------------------------

/** A message received in this pass and not yet deleted, failed or given back. */
interface Held {
  id: string;
  receipt: string;
  receives: number;
  /** Objects not settled yet. */
  pending: Set<Entry>;
  /** The first failure among its objects. */
  failure?: string;
  state: "processing" | "deleting";
  /** Its visibility could not be extended: another consumer may have it. */
  lost?: boolean;
}

/** An object to process in this pass, shared by every message naming it. */
interface Entry {
  readonly object: SqsObject;
  readonly messages: Set<Held>;
  state: "queued" | "yielded" | "committed" | "released";
  reason?: string;
  prefetch?: { controller: AbortController; stream: Promise<ReadableStream<Uint8Array>> };
}

/** An object of this source. */
interface SqsObject extends SourceObject {
  readonly pass: Pass;
  entry?: Entry;
}

/** Wakes up whoever waits for the pass's state to change. */
class Changes {
  #waiters: (() => void)[] = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  notify(): void {
    for (const resolve of this.#waiters.splice(0)) resolve();
  }
}

/** What a pass did with the messages, for its log line. */
interface Counts {
  received: number;
  deleted: number;
  failed: number;
  unknown: number;
  poison: number;
  ignored: number;
  duplicates: number;
  returned: number;
}

class Pass {
  readonly source: SqsSource;
  readonly run: SourceRun;
  readonly held = new Map<string, Held>();
  readonly entries = new Map<string, Entry>();
  readonly ready: Entry[] = [];
  /** Messages that failed in this pass → why: seen again, they wait for a later pass. */
  readonly failedIds = new Map<string, string>();
  /** Messages reported as poison in this pass. */
  readonly poisoned = new Set<string>();
  /** Dry run: messages finished but kept in the queue (given back at the end of the pass). */
  readonly kept = new Map<string, Held>();
  readonly changes = new Changes();
  readonly counts: Counts = {
    received: 0,
    deleted: 0,
    failed: 0,
    unknown: 0,
    poison: 0,
    ignored: 0,
    duplicates: 0,
    returned: 0,
  };
  /** Aborts the long poll in flight (never a short poll: its messages are given back). */
  readonly receiving = new AbortController();
  /** Whether the ReceiveMessage in flight is a long poll. */
  longPoll = false;
  receiverDone = false;
  receiveError: Error | undefined;
  /** Why the pass stops early (abort, time budget), if it does. */
  stopped: string | undefined;
  readonly deadline: number | undefined;
  readonly #deletes: Held[] = [];
  #deleteTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #inflight = new Set<Promise<unknown>>();
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #stopTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #onAbort = () => this.stop("the run was stopped");
  readonly #reported = new Set<string>();
  /** Objects handed to the pipeline and not yet committed or released. */
  readonly #inHand = new Set<Entry>();
  /** The generator is done (what remains is objects still in the pipeline's hands). */
  #ended = false;
  #finishing: Promise<void> | undefined;
  /** Objects queued since the progress was last told. */
  #listed = { count: 0, bytes: 0 };
  /** Controllers of downloads started ahead and handed to the pipeline. */
  readonly #abandoned: AbortController[] = [];

  constructor(source: SqsSource, run: SourceRun) {
    this.source = source;
    this.run = run;
    const { maxRunSeconds } = source.opts;
    this.deadline = maxRunSeconds > 0 ? Date.now() + maxRunSeconds * 1000 : undefined;
  }

  /** Objects buffered ahead of the pipeline before receiving pauses. */
  get limit(): number {
    return this.source.opts.maxMessages + this.source.opts.workers;
  }

  start(): Promise<void> {
    const { signal } = this.run;
    if (signal.aborted) this.stop("the run was stopped");
    else signal.addEventListener("abort", this.#onAbort, { once: true });
    if (this.deadline !== undefined) {
      this.#stopTimer = setTimeout(
        () => this.stop(`maxRunSeconds (${this.source.opts.maxRunSeconds} s) elapsed`),
        this.deadline - Date.now(),
      );
      Deno.unrefTimer(this.#stopTimer);
    }
    const every = Math.max(250, this.source.opts.visibilityTimeout * 500);
    this.#heartbeat = setInterval(() => this.#extend(), every);
    Deno.unrefTimer(this.#heartbeat);
    return this.#receiveLoop();
  }

  /** Stops receiving and yielding; what is held is given back by {@link finish}. */
  stop(reason: string): void {
    if (this.stopped) return;
    this.stopped = reason;
    log.info(`source ${this.source.name}: ${reason}; stopping after the object in hand`);
    this.#abortLongPoll(reason);
    this.changes.notify();
  }

  /**
   * A long poll is only in flight while nothing waits to be processed, so aborting it strands
   * nothing we hold; a message SQS hands to the abandoned poll reappears after its visibility
   * timeout. A short poll is waited for, and what it returns is given back.
   */
  #abortLongPoll(reason: string): void {
    if (this.longPoll) this.receiving.abort(new Error(reason));
  }

  // -- receiving ------------------------------------------------------------------------------

  async #receiveLoop(): Promise<void> {
    const { opts } = this.source;
    try {
      while (!this.stopped) {
        // Bounded by what waits to be handed to the pipeline, not by what the pipeline holds: with
        // decode workers it pulls objects ahead and waits for them before it commits any.
        const room = this.limit - this.ready.length;
        if (room <= 0) {
          await this.changes.wait();
          continue;
        }
        // While work is buffered a short poll tops it up; the long poll waits for an idle
        // pipeline (it is also the one a stop may abandon).
        const busy = this.ready.length > 0;
        let wait = busy ? 0 : opts.waitTimeSeconds;
        if (this.deadline !== undefined) {
          const left = this.deadline - Date.now();
          if (left <= 0) {
            this.stop(`maxRunSeconds (${opts.maxRunSeconds} s) elapsed`);
            break;
          }
          // A long poll never outlasts the time budget (under a second left: a short poll).
          wait = Math.min(wait, Math.floor(left / 1000));
        }
        this.longPoll = wait > 0;
        const messages = await this.source.receive(
          Math.min(opts.maxMessages, room),
          wait,
          this.longPoll ? this.receiving.signal : undefined,
        ).finally(() => (this.longPoll = false));
        let fresh = 0;
        for (const message of messages) {
          if (await this.#admit(message)) fresh++;
        }
        if (this.#listed.count) {
          this.run.progress.listed(this.#listed.count, this.#listed.bytes);
          this.#listed = { count: 0, bytes: 0 };
        }
        this.#prefetchAhead();
        this.changes.notify();
        if (fresh > 0) continue;
        // An empty receive with nothing buffered: the queue is drained. An empty short poll
        // proves nothing (it samples a few SQS servers): long-poll once the buffer is worked off.
        if (!busy) break;
        while (this.ready.length && !this.stopped) await this.changes.wait();
      }
    } catch (error) {
      if (!this.receiving.signal.aborted) {
        this.receiveError = error instanceof Error ? error : new Error(String(error));
      }
    } finally {
      this.receiverDone = true;
      this.changes.notify();
    }
  }

  /** Takes a received message in; false when it is not new to this pass. */
  async #admit(message: Message): Promise<boolean> {
    const id = message.MessageId;
    const receipt = message.ReceiptHandle;
    if (!id || !receipt) return false;
    const receives = Number(message.Attributes?.ApproximateReceiveCount ?? 1) || 1;
    const known = this.held.get(id);
    if (known) {
      // Its visibility lapsed and the queue handed it out again (to us): the new receipt handle
      // is the one that works.
      known.receipt = receipt;
      known.receives = receives;
      known.lost = false;
      return false;
    }
    const kept = this.kept.get(id);
    if (kept) {
      kept.receipt = receipt;
      return false;
    }
    // Failed in this pass: it is retried in a later pass, after its visibility timeout.
    const failure = this.failedIds.get(id);
    if (failure !== undefined) {
      this.#poison(id, receives, failure);
      return false;
    }
    this.counts.received++;
    const held: Held = { id, receipt, receives, pending: new Set(), state: "processing" };
    const where = this.source.messageId(id);
    const parsed = parseMessage(message.Body ?? "");
    switch (parsed.kind) {
      case "test":
        log.debug(`${where}: S3 test event; deleting it`);
        this.counts.ignored++;
        this.#delete(held);
        return true;
      case "ignored": {
        // Only a subscription confirmation needs someone to act; the rest is routine.
        const notice = parsed.reason.startsWith("SNS subscription confirmation");
        log[notice ? "warn" : "debug"](`${where}: nothing to read (${parsed.reason}); deleting it`);
        this.counts.ignored++;
        this.#delete(held);
        return true;
      }
      case "unknown":
        this.counts.unknown++;
        log.warn(
          `${where}: ${parsed.reason}; not deleted (left to the queue's redrive policy, ` +
            `received ${receives} time(s))`,
        );
        this.#failed(held, parsed.reason, false);
        return true;
      case "records": {
        const object: SqsObject = {
          id: where,
          pass: this,
          records: parsed.records,
          insight: parsed.insight,
        };
        await this.#attach(held, [object]);
        return true;
      }
      case "objects": {
        const objects = parsed.objects.map((ref) => this.source.s3Object(this, ref));
        await this.#attach(held, objects);
        return true;
      }
    }
  }

  /** Links a message to its objects (new ones are queued); settles it if nothing is left. */
  async #attach(held: Held, objects: SqsObject[]): Promise<void> {
    const unknown: SqsObject[] = [];
    for (const object of objects) {
      const entry = this.entries.get(object.id);
      if (!entry) unknown.push(object);
      else if (entry.state === "committed") this.counts.duplicates++;
      else if (entry.state === "released") held.failure ??= `${object.id}: ${entry.reason}`;
      else {
        entry.messages.add(held);
        held.pending.add(entry);
      }
    }
    const done = await this.source.processed(this.run, unknown.map((o) => o.id));
    for (const object of unknown) {
      // Another message of this receive may have queued it meanwhile.
      const entry = this.entries.get(object.id);
      if (entry) {
        if (entry.state === "committed") this.counts.duplicates++;
        else if (entry.state === "released") held.failure ??= `${object.id}: ${entry.reason}`;
        else {
          entry.messages.add(held);
          held.pending.add(entry);
        }
        continue;
      }
      if (done.has(object.id)) {
        this.counts.duplicates++;
        continue;
      }
      const created: Entry = { object, messages: new Set([held]), state: "queued" };
      object.entry = created;
      this.entries.set(object.id, created);
      this.ready.push(created);
      held.pending.add(created);
      this.#listed.count++;
      this.#listed.bytes += object.size ?? 0;
    }
    if (held.pending.size === 0) {
      if (held.failure) this.#failed(held, held.failure, true);
      else this.#delete(held);
      return;
    }
    this.held.set(held.id, held);
  }

  // -- handing objects to the pipeline --------------------------------------------------------

  /** The next object to process, or undefined when the pass is over. */
  async next(): Promise<SqsObject | undefined> {
    while (true) {
      if (this.stopped) return undefined;
      const entry = this.ready.shift();
      if (entry) {
        entry.state = "yielded";
        this.#inHand.add(entry);
        this.changes.notify();
        this.#prefetchAhead();
        return entry.object;
      }
      if (this.receiverDone) return undefined;
      await this.changes.wait();
    }
  }

  /** Starts the downloads of the objects next in line (`workers − 1` ahead of the current). */
  #prefetchAhead(): void {
    let ahead = this.source.opts.workers - 1;
    for (const entry of this.ready) {
      if (ahead <= 0) break;
      const ref = this.source.refOf(entry.object);
      if (!ref) continue;
      ahead--;
      if (entry.prefetch) continue;
      const controller = new AbortController();
      const stream = openS3Object(this.source.s3, ref.bucket, ref.key, controller.signal);
      stream.catch(() => {});
      entry.prefetch = { controller, stream };
    }
  }

  /** Opens an object: takes over its download started ahead, or starts one. */
  open(object: SqsObject, signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const ref = this.source.refOf(object)!;
    const prefetched = object.entry?.prefetch;
    if (prefetched && object.entry) object.entry.prefetch = undefined;
    if (prefetched && !signal.aborted) {
      // Kept for finish(), which aborts it should the pass end with the body unread.
      this.#abandoned.push(prefetched.controller);
      return prefetched.stream;
    }
    prefetched?.controller.abort();
    return openS3Object(this.source.s3, ref.bucket, ref.key, signal);
  }

  // -- settling -------------------------------------------------------------------------------

  committed(object: SqsObject): void {
    const entry = object.entry;
    // After a forced finish its messages were given back: nothing left to do.
    if (!entry || this.#finishing) return;
    entry.state = "committed";
    for (const held of entry.messages) {
      held.pending.delete(entry);
      if (held.pending.size === 0) {
        if (held.failure) this.#failed(held, held.failure, true);
        else this.#delete(held);
      }
    }
    entry.messages.clear();
    this.#settled(entry);
  }

  released(object: SqsObject, reason: string): void {
    const entry = object.entry;
    if (!entry || this.#finishing) return;
    entry.state = "released";
    entry.reason = reason;
    for (const held of entry.messages) {
      held.pending.delete(entry);
      held.failure ??= `${object.id}: ${reason}`;
      if (held.pending.size === 0) this.#failed(held, held.failure, true);
    }
    entry.messages.clear();
    this.#settled(entry);
  }

  /** An object left the pipeline's hands; the last one lets an ended pass finish. */
  #settled(entry: Entry): void {
    this.#inHand.delete(entry);
    if (this.#ended && this.#inHand.size === 0) {
      this.finish().catch((error) =>
        log.warn(`source ${this.source.name}: ${errorMessage(error)}`)
      );
    }
  }

  /** Queues a message for DeleteMessageBatch (a dry run keeps it, to give it back at the end). */
  #delete(held: Held): void {
    if (this.run.state.dryRun) {
      this.held.delete(held.id);
      this.kept.set(held.id, held);
      this.changes.notify();
      return;
    }
    held.state = "deleting";
    this.held.set(held.id, held);
    this.#deletes.push(held);
    if (this.#deletes.length >= BATCH) this.#flushDeletes();
    else if (this.#deleteTimer === undefined) {
      this.#deleteTimer = setTimeout(() => this.#flushDeletes(), DELETE_BATCH_WAIT_MS);
    }
  }

  #flushDeletes(): void {
    if (this.#deleteTimer !== undefined) clearTimeout(this.#deleteTimer);
    this.#deleteTimer = undefined;
    while (this.#deletes.length) {
      const batch = this.#deletes.splice(0, BATCH);
      this.#track(
        this.source.deleteBatch(batch.map((h) => h.receipt)).then((failures) => {
          for (const [i, reason] of failures) {
            log.warn(
              `${this.source.messageId(batch[i].id)}: could not be deleted (${reason}); ` +
                `it will be received again and acknowledged without being read`,
            );
          }
          this.counts.deleted += batch.length - failures.size;
        }, (error) => {
          this.#report(
            "delete",
            `could not delete ${batch.length} processed message(s): ${errorMessage(error)}; ` +
              `they will be received again and acknowledged without being read`,
          );
        }).finally(() => {
          for (const h of batch) this.held.delete(h.id);
          this.changes.notify();
        }),
      );
    }
  }

  /** A message that stays in the queue: visible again after one visibility timeout. */
  #failed(held: Held, reason: string, resetVisibility: boolean): void {
    this.held.delete(held.id);
    this.failedIds.set(held.id, reason);
    this.counts.failed++;
    if (resetVisibility) {
      const seconds = this.source.opts.visibilityTimeout;
      this.#track(
        this.source.changeVisibility([held.receipt], seconds).then(() => {}, (error) =>
          log.warn(
            `${this.source.messageId(held.id)}: could not set its visibility: ${
              errorMessage(error)
            }`,
          )),
      );
    }
    this.#poison(held.id, held.receives, reason);
    this.changes.notify();
  }

  /** Reports a failing message received `maxReceiveCount` times (once per pass). */
  #poison(id: string, receives: number, reason: string): void {
    const max = this.source.opts.maxReceiveCount;
    if (receives < max || this.poisoned.has(id)) return;
    this.poisoned.add(id);
    this.counts.poison++;
    this.run.fail(
      this.source.messageId(id),
      `poison message: received ${receives} times (maxReceiveCount ${max}) and still ` +
        `failing: ${reason}; not deleted, left to the queue's redrive policy (dead-letter queue)`,
    );
  }

  /** Extends the visibility of every message held (the heartbeat). */
  #extend(): void {
    const live = [...this.held.values()].filter((h) => !h.lost);
    if (!live.length) return;
    const seconds = this.source.opts.visibilityTimeout;
    for (let i = 0; i < live.length; i += BATCH) {
      const batch = live.slice(i, i + BATCH);
      this.#track(
        this.source.changeVisibility(batch.map((h) => h.receipt), seconds).then(
          (failures) => {
            for (const [j, reason] of failures) {
              const held = batch[j];
              // A message deleted meanwhile cannot be extended, and needs not be.
              if (this.held.get(held.id) !== held || held.state === "deleting") continue;
              held.lost = true;
              log.warn(
                `${this.source.messageId(held.id)}: its visibility could not be extended ` +
                  `(${reason}); another consumer may receive it (its events are deduplicated)`,
              );
            }
          },
          (error) =>
            this.#report(
              "heartbeat",
              `could not extend message visibility: ${errorMessage(error)}`,
            ),
        ),
      );
    }
  }

  /** Reports a queue-wide problem once per pass. */
  #report(kind: string, reason: string): void {
    log.warn(`source ${this.source.name}: ${reason}`);
    if (this.#reported.has(kind)) return;
    this.#reported.add(kind);
    this.run.fail(`sqs://${queueName(this.source.opts.queueUrl)}`, reason);
  }

  #track(promise: Promise<unknown>): void {
    this.#inflight.add(promise);
    promise.finally(() => this.#inflight.delete(promise)).catch(() => {});
  }

  /**
   * The generator is done: stops receiving. With decode workers the pipeline may still hold
   * objects it pulled ahead; the pass finishes when the last of them is committed or released
   * (their messages stay held, with the heartbeat), or when {@link finish} is called for
   * objects the pipeline abandoned (the next pass, `close()`).
   */
  async end(): Promise<void> {
    this.run.signal.removeEventListener("abort", this.#onAbort);
    if (this.#stopTimer !== undefined) clearTimeout(this.#stopTimer);
    if (!this.receiverDone) {
      this.stopped ??= "the pass ended";
      this.#abortLongPoll("the pass ended");
      this.changes.notify();
      while (!this.receiverDone) await this.changes.wait();
    }
    for (const entry of this.ready) entry.prefetch?.controller.abort();
    this.#ended = true;
    if (this.#inHand.size === 0) await this.finish();
  }

  /**
   * Finishes the pass: gives back what is held but not finished (visibility 0, so another
   * consumer gets it at once), deletes what is finished, stops the heartbeat. Runs once.
   */
  finish(): Promise<void> {
    this.#finishing ??= this.#finish();
    return this.#finishing;
  }

  async #finish(): Promise<void> {
    this.#ended = true;
    this.run.signal.removeEventListener("abort", this.#onAbort);
    if (this.#stopTimer !== undefined) clearTimeout(this.#stopTimer);
    this.stopped ??= "the pass ended";
    this.#abortLongPoll("the pass ended");
    this.changes.notify();
    while (!this.receiverDone) await this.changes.wait();
    for (const entry of this.ready) entry.prefetch?.controller.abort();
    for (const controller of this.#abandoned) controller.abort();
    // A heartbeat still in flight must not land after the give-back below.
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    await Promise.allSettled([...this.#inflight]);
    const unfinished = [...this.held.values()].filter((h) => h.state === "processing");
    unfinished.push(...this.kept.values());
    for (const held of unfinished) this.held.delete(held.id);
    for (let i = 0; i < unfinished.length; i += BATCH) {
      const batch = unfinished.slice(i, i + BATCH);
      this.#track(
        this.source.changeVisibility(batch.map((h) => h.receipt), 0).then(
          () => void (this.counts.returned += batch.length),
          (error) =>
            log.warn(
              `source ${this.source.name}: could not give back ${batch.length} message(s) ` +
                `(${errorMessage(error)}); they reappear after their visibility timeout`,
            ),
        ),
      );
    }
    this.#flushDeletes();
    while (this.#inflight.size) await Promise.allSettled([...this.#inflight]);
    const c = this.counts;
    const line = `source ${this.source.name}: ${c.received} message(s) received, ${c.deleted} ` +
      `deleted, ${c.failed} left in the queue (${c.unknown} unknown, ${c.poison} poison), ` +
      `${c.ignored} without objects, ${c.duplicates} duplicate object(s), ${c.returned} ` +
      `given back to the queue`;
    if (c.received) log.info(line);
    else log.debug(line);
  }
}

// ---------------------------------------------------------------------------------------------
// The source
// ---------------------------------------------------------------------------------------------

interface Resolved {
  queueUrl: string;
  queue: string;
  region?: string;
  maxMessages: number;
  waitTimeSeconds: number;
  visibilityTimeout: number;
  maxReceiveCount: number;
  workers: number;
  maxRunSeconds: number;
}

/** A processed-object marker. */
interface ObjectMark {
  /** When it was processed (epoch ms). */
  t: number;
  /** The content failure, if the object was bad. */
  f?: string;
}

/** Dependencies of the source that tests replace. */
export interface SqsSourceDeps {
  /** A ready SQS client instead of one built from the options. */
  sqs?: SQSClient;
  /** A ready S3 client instead of one built from the options. */
  s3?: S3Client;
}

class SqsSource implements Source {
  readonly name: string;
  readonly type = "sqs";
  readonly opts: Resolved;
  readonly sqs: SQSClient;
  readonly s3: S3Client;
  readonly #configPath: string;
  readonly #refs = new WeakMap<SourceObject, S3Ref>();
  #retentionMs: number | undefined;
  #toldRedrive = false;
  /** The latest pass (it may still hold objects the pipeline pulled ahead). */
  #pass: Pass | undefined;
  /** Lifetime of the markers staged in this pass (ms). */
  #ttl = MAX_RETENTION_MS;

  constructor(options: Partial<Options>, context: SourceContext, deps: SqsSourceDeps = {}) {
    const o = { ...defaults, ...options };
    this.name = context.name;
    this.#configPath = `sources.${context.name}`;
    const region = o.region ?? queueRegion(o.queueUrl);
    this.opts = {
      queueUrl: o.queueUrl,
      queue: queueName(o.queueUrl),
      region,
      maxMessages: o.maxMessages,
      waitTimeSeconds: o.waitTimeSeconds,
      visibilityTimeout: o.visibilityTimeout,
      maxReceiveCount: o.maxReceiveCount,
      workers: Math.max(1, o.workers),
      maxRunSeconds: o.maxRunSeconds,
    };
    const queueOptions = { ...o, region };
    const sqsConfig = awsClientConfig(queueOptions);
    this.sqs = deps.sqs ?? new SQSClient(sqsConfig);
    const s3 = s3Options(queueOptions);
    const s3Config = awsClientConfig(s3);
    // Without its own credentials the S3 client shares the queue's (one role session, not two).
    const shared = !CREDENTIAL_KEYS.some((k) => o.s3?.[k] !== undefined);
    this.s3 = deps.s3 ??
      new S3Client({
        ...s3Config,
        ...(shared ? { credentials: sqsConfig.credentials } : {}),
        forcePathStyle: s3.forcePathStyle ?? false,
        // A bucket in another region than the queue is followed, not an error.
        followRegionRedirects: !s3.endpoint,
        // The decoder checks gzip's CRC32 and s3BodyStream the length (as in the s3 source).
        responseChecksumValidation: "WHEN_REQUIRED",
      });
    log.debug(
      `source ${this.name}: queue ${credentialPlan(queueOptions).description}; objects ${
        credentialPlan(s3).description
      }`,
    );
  }

  /** The id of a message in logs and failures: `sqs://<queue>/<message id>`. */
  messageId(id: string): string {
    return `sqs://${this.opts.queue}/${id}`;
  }

  /** A state key of this source. */
  key(...parts: string[]): Deno.KvKey {
    return ["src", this.name, ...parts];
  }

  /** The S3 object named by a message, as a source object. */
  s3Object(pass: Pass, ref: S3Ref): SqsObject {
    const object: SqsObject = {
      id: s3ObjectId(ref.bucket, ref.key),
      pass,
      size: ref.size,
      insight: isInsightKey(ref.key) || undefined,
      open: (signal: AbortSignal) => pass.open(object, signal),
    };
    this.#refs.set(object, ref);
    return object;
  }

  /** The bucket and key of an S3 object of this source. */
  refOf(object: SourceObject): S3Ref | undefined {
    return this.#refs.get(object);
  }

  #errorContext(permission: string) {
    return {
      permission,
      arn: queueArn(this.opts.queueUrl),
      scope: "queue" as const,
      region: this.opts.region,
      configPath: this.#configPath,
    };
  }

  /**
   * Checks the queue with GetQueueAttributes; throws a message naming the queue and what to
   * fix (a missing queue, rejected credentials, the permission likely missing).
   */
  async preflight(): Promise<void> {
    try {
      const out = await this.sqs.send(
        new GetQueueAttributesCommand({
          QueueUrl: this.opts.queueUrl,
          AttributeNames: ["QueueArn", "MessageRetentionPeriod", "RedrivePolicy"],
        }),
      );
      this.#remember(out.Attributes);
    } catch (error) {
      const info = describeAwsError(error, this.#errorContext("sqs:GetQueueAttributes"));
      throw new Error(`Cannot open queue ${this.opts.queueUrl}: ${info.message}`, {
        cause: error,
      });
    }
  }

  #remember(attributes: Record<string, string> | undefined): void {
    const retention = Number(attributes?.MessageRetentionPeriod);
    this.#retentionMs = retention > 0 ? retention * 1000 : MAX_RETENTION_MS;
    if (attributes && !attributes.RedrivePolicy && !this.#toldRedrive) {
      this.#toldRedrive = true;
      log.info(
        `source ${this.name}: queue ${this.opts.queue} has no redrive policy; messages that ` +
          `keep failing are received again until they expire (set a dead-letter queue)`,
      );
    }
  }

  /** How long markers are kept: as long as the queue keeps a message. */
  async #markerTtl(): Promise<number> {
    if (this.#retentionMs === undefined) {
      try {
        const out = await this.sqs.send(
          new GetQueueAttributesCommand({
            QueueUrl: this.opts.queueUrl,
            AttributeNames: ["MessageRetentionPeriod", "RedrivePolicy"],
          }),
        );
        this.#remember(out.Attributes);
      } catch (error) {
        log.debug(`source ${this.name}: GetQueueAttributes failed: ${errorMessage(error)}`);
        this.#retentionMs = MAX_RETENTION_MS;
      }
    }
    return this.#retentionMs! + 3_600_000;
  }

  /** Receives up to `max` messages, waiting up to `wait` seconds. */
  async receive(max: number, wait: number, signal?: AbortSignal): Promise<Message[]> {
    try {
      const out = await this.sqs.send(
        new ReceiveMessageCommand({
          QueueUrl: this.opts.queueUrl,
          MaxNumberOfMessages: max,
          WaitTimeSeconds: wait,
          VisibilityTimeout: this.opts.visibilityTimeout,
          MessageSystemAttributeNames: ["ApproximateReceiveCount"],
        }),
        { abortSignal: signal },
      );
      return out.Messages ?? [];
    } catch (error) {
      if (signal?.aborted) throw error;
      const info = describeAwsError(error, this.#errorContext("sqs:ReceiveMessage"));
      throw new Error(`Cannot receive from ${this.opts.queueUrl}: ${info.message}`, {
        cause: error,
      });
    }
  }

  /** Deletes messages (≤ 10); returns the failed entries (index → reason). */
  async deleteBatch(receipts: string[]): Promise<Map<number, string>> {
    try {
      const out = await this.sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: this.opts.queueUrl,
          Entries: receipts.map((receipt, i) => ({ Id: String(i), ReceiptHandle: receipt })),
        }),
      );
      return new Map((out.Failed ?? []).map((f) => [Number(f.Id), f.Message ?? f.Code ?? "?"]));
    } catch (error) {
      throw new Error(describeAwsError(error, this.#errorContext("sqs:DeleteMessage")).message, {
        cause: error,
      });
    }
  }

  /** Sets the visibility of messages (≤ 10); returns the failed entries (index → reason). */
  async changeVisibility(receipts: string[], seconds: number): Promise<Map<number, string>> {
    try {
      const out = await this.sqs.send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: this.opts.queueUrl,
          Entries: receipts.map((receipt, i) => ({
            Id: String(i),
            ReceiptHandle: receipt,
            VisibilityTimeout: seconds,
          })),
        }),
      );
      return new Map((out.Failed ?? []).map((f) => [Number(f.Id), f.Message ?? f.Code ?? "?"]));
    } catch (error) {
      throw new Error(
        describeAwsError(error, this.#errorContext("sqs:ChangeMessageVisibility")).message,
        { cause: error },
      );
    }
  }

  /** Which of `ids` were processed before (their marker is in the state). */
  async processed(run: SourceRun, ids: string[]): Promise<Set<string>> {
    const done = new Set<string>();
    for (let i = 0; i < ids.length; i += KV_GET_MANY) {
      const chunk = ids.slice(i, i + KV_GET_MANY);
      const entries = await run.state.kv.getMany(chunk.map((id) => this.key("obj", id)));
      entries.forEach((entry, j) => entry.value !== null && done.add(chunk[j]));
    }
    return done;
  }

  async *objects(run: SourceRun): AsyncGenerator<SourceObject> {
    // Objects the previous pass's pipeline pulled ahead and never processed: give them back.
    await this.#pass?.finish();
    this.#ttl = await this.#markerTtl();
    const pass = new Pass(this, run);
    this.#pass = pass;
    const receiving = pass.start();
    try {
      while (true) {
        const object = await pass.next();
        if (!object) break;
        yield object;
      }
    } finally {
      await pass.end();
      await receiving;
    }
    if (pass.receiveError) throw pass.receiveError;
  }

  checkpoint(object: SourceObject, commit: Commit, failure?: string): void {
    const mark: ObjectMark = failure ? { t: Date.now(), f: failure } : { t: Date.now() };
    commit.set(this.key("obj", object.id), mark, { expireIn: this.#ttl });
  }

  committed(object: SourceObject): void {
    const o = object as SqsObject;
    o.pass.committed(o);
  }

  released(object: SourceObject, reason: string): void {
    const o = object as SqsObject;
    o.pass.released(o, reason);
  }

  async close(): Promise<void> {
    // Deletes of the last pass may still be in flight; what it still holds is given back.
    await this.#pass?.finish();
    this.sqs.destroy();
    this.s3.destroy();
  }
}

/** Creates an `sqs` source. */
export function createSqsSource(
  options: Partial<Options>,
  context: SourceContext,
  deps: SqsSourceDeps = {},
): Source {
  return new SqsSource(options, context, deps);
}

/** The `sqs` source plugin. */
export const sqsSource: SourcePlugin = {
  description:
    "CloudTrail notifications from an SQS queue (S3 events, CloudTrail SNS, EventBridge, raw)",
  check(check: OptionsChecker) {
    const url = check.string("queueUrl", { required: true });
    if (url !== undefined) {
      const problem = checkQueueUrl(url);
      if (problem) check.problem("queueUrl", problem);
    }
    check.integer("maxMessages", { min: 1, max: 10 });
    check.integer("waitTimeSeconds", { min: 0, max: 20 });
    check.integer("visibilityTimeout", { min: 1, max: 43_200 });
    check.integer("maxReceiveCount", { min: 1, max: 1000 });
    check.integer("workers", { min: 1, max: 64 });
    check.integer("maxRunSeconds", { min: 0, max: 86_400 });
    checkAwsOptions(check);
    check.object("s3", (c) => checkAwsOptions(c));
    checkSeedNames(check, { queue_url: "queueUrl" });
  },
  create: (options: RawOptions, context) => createSqsSource(options as Partial<Options>, context),
};
