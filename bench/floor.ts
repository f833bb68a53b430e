/**
 * The decode floor: `node:zlib` gunzip + `JSON.parse` of every `.json.gz` file in a folder, what
 * any CloudTrail reader must at least do. `bench/run.ts` times it in-process, and split over two
 * Workers ({@link FloorPair}: the most two threads give this machine for work with no overhead);
 * `bench/work.ts` runs this module as a child to count its instructions.
 *
 * Usage as a script: `deno run -R bench/floor.ts <folder>` (one pass; prints the event count).
 *
 * @module
 */

import { gunzipSync } from "node:zlib";

/** The `.json.gz` files of `folder`, in name order. */
export function floorFiles(folder: string): string[] {
  return [...Deno.readDirSync(folder)].map((entry) => `${folder}/${entry.name}`).sort();
}

/** Decodes `paths` once; returns the number of records. */
export function floorDecode(paths: readonly string[]): number {
  let events = 0;
  for (const path of paths) {
    const parsed = JSON.parse(new TextDecoder().decode(gunzipSync(Deno.readFileSync(path))));
    events += parsed.Records.length;
  }
  return events;
}

/** Decodes every file of `folder` once; returns the number of records. */
export function floorPass(folder: string): number {
  return floorDecode(floorFiles(folder));
}

/**
 * Two Workers that decode every other file of a folder each, at once: the floor's own work on two
 * threads, without anything to hand back but a count.
 */
export class FloorPair {
  readonly #workers = [0, 1].map(() =>
    new Worker(new URL("./floor_worker.ts", import.meta.url), { type: "module" })
  );

  /** Decodes every file of `folder` once over the two workers; returns the number of records. */
  async pass(folder: string): Promise<number> {
    const files = floorFiles(folder);
    const counts = await Promise.all(
      this.#workers.map((worker, w) =>
        new Promise<number>((resolve, reject) => {
          worker.onmessage = (event: MessageEvent<number>) => resolve(event.data);
          worker.onerror = (event) => {
            event.preventDefault();
            reject(new Error(`floor worker failed: ${event.message}`));
          };
          worker.postMessage(files.filter((_, i) => i % 2 === w));
        })
      ),
    );
    return counts[0] + counts[1];
  }

  /** Stops the workers. */
  close(): void {
    for (const worker of this.#workers) worker.terminate();
  }
}

if (import.meta.main) console.log(floorPass(Deno.args[0]));
