/**
 * Delivery throughput: alerts/s through the durable outbox (a KV file) to a `webhook` sink
 * posting to a loopback `Deno.serve` receiver, one POST per alert, each removed from the outbox
 * after the receiver's 2xx. Also a signed run (HMAC header) and a grouped run.
 *
 * `deno run -A bench/delivery_bench.ts [--alerts 2000]`
 *
 * Last line: `delivery: plain=<N> alerts/s signed=<N> alerts/s grouped=<N> alerts/s (<alerts> alerts)`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Commit, StateStore } from "../core/state.ts";
import { Outbox } from "../sinks/outbox.ts";
import { createWebhookSink } from "../sinks/webhook.ts";
import { Receiver, sampleAlert } from "../tests/helpers/receiver.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { alerts: { type: "string", default: "2000" } },
});
const alertCount = Math.max(1, Number(values.alerts) || 2000);

async function run(
  label: string,
  options: { secret?: string; group?: boolean; count?: number; quiet?: boolean },
): Promise<number> {
  const total = options.count ?? alertCount;
  const dir = await Deno.makeTempDir({ prefix: "trailwatch-delivery-bench-" });
  const receiver = await Receiver.start();
  const store = await StateStore.open(`${dir}/state.kv`);
  try {
    const sink = createWebhookSink({ url: receiver.url, secret: options.secret }, {
      name: "bench",
      baseDir: dir,
    });
    const outbox = new Outbox(store, [{
      sink,
      minSeverity: "info",
      excludeDetectors: [],
      group: options.group ?? false,
    }]);
    const users = ["alice", "bob", "carol", "dave", "erin"];
    const alerts = Array.from(
      { length: total },
      (_, i) => sampleAlert({ user: users[i % users.length], event_ids: [`bench-${label}-${i}`] }),
    );
    for (let i = 0; i < alerts.length; i += 400) {
      const commit = new Commit();
      for (const alert of alerts.slice(i, i + 400)) outbox.stage(commit, alert);
      await store.commit(commit);
    }
    const started = performance.now();
    let delivered = 0;
    while (delivered < total) {
      const report = await outbox.deliver();
      if (report.delivered === 0) {
        throw new Error(`${label}: delivery stalled: ${JSON.stringify(report)}`);
      }
      delivered += report.delivered;
    }
    const seconds = (performance.now() - started) / 1000;
    const ids = new Set(
      receiver.acceptedJson<{ id?: string; alerts?: { id: string }[] }>().flatMap((b) =>
        b.alerts ? b.alerts.map((a) => a.id) : [b.id!]
      ),
    );
    if (ids.size !== total) throw new Error(`${label}: receiver got ${ids.size} of ${total}`);
    const rate = total / seconds;
    if (options.quiet) return rate;
    console.log(
      `${label.padEnd(8)} ${total} alerts in ${seconds.toFixed(2)} s = ${
        Math.round(rate)
      } alerts/s (${receiver.requests.length} POSTs)`,
    );
    return rate;
  } finally {
    store.close();
    await receiver.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

await run("warm-up", { count: 200, quiet: true });
const plain = await run("plain", {});
const signed = await run("signed", { secret: "bench-secret-0123456789" });
const grouped = await run("grouped", { group: true });
console.log(
  `delivery: plain=${Math.round(plain)} alerts/s signed=${Math.round(signed)} alerts/s ` +
    `grouped=${Math.round(grouped)} alerts/s (${alertCount} alerts)`,
);
