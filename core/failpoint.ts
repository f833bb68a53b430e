/**
 * Failpoints for crash tests: `TRAILWATCH_FAILPOINTS="name:N,…"` makes the process SIGKILL itself
 * the N-th time it reaches the named point (the harness in tests/crash_restart_test.ts uses it to
 * die at exact places: after a chunk commit, between objects, between the commit of alerts and
 * their delivery, after a webhook answered but before the outbox was updated). Unset, a failpoint
 * costs one boolean test.
 *
 * @module
 */

const counts = new Map<string, number>();
let armed: Map<string, number> | undefined;

function load(): Map<string, number> {
  const points = new Map<string, number>();
  try {
    for (const part of (Deno.env.get("TRAILWATCH_FAILPOINTS") ?? "").split(",")) {
      const [name, n] = part.trim().split(":");
      if (name) points.set(name, Number(n) || 1);
    }
  } catch {
    // no env permission: no failpoints
  }
  return points;
}

/** Kills the process with SIGKILL if `name` is armed and reached for the armed time. */
export function failpoint(name: string): void {
  armed ??= load();
  if (armed.size === 0) return;
  const target = armed.get(name);
  if (target === undefined) return;
  const n = (counts.get(name) ?? 0) + 1;
  counts.set(name, n);
  if (n === target) Deno.kill(Deno.pid, "SIGKILL");
}
