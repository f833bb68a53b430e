/**
 * The `local` source: a CloudTrail log file, or a directory walked recursively in path order.
 * Reads `.json`, `.json.gz`, `.jsonl` and `.jsonl.gz` (gzip detected by magic bytes, not names),
 * skips `CloudTrail-Digest` files, and remembers what it processed (path + size + mtime).
 *
 * @module
 */

import { resolve } from "node:path";
import { SourceReadError } from "../core/errors.ts";
import type { Commit } from "../core/state.ts";
import type { OptionsChecker, RawOptions } from "../core/validate.ts";
import type { Source, SourceContext, SourceObject, SourcePlugin, SourceRun } from "./mod.ts";

/** Options of the `local` source. */
export interface Options {
  /** A file or a directory. Relative paths are resolved against the config file's folder. */
  path: string;
  /** File name endings read in a directory walk. */
  extensions: string[];
}

/** Defaults of the `local` source. */
export const defaults = {
  path: "",
  extensions: [".json", ".json.gz", ".jsonl", ".jsonl.gz"],
} satisfies Options;

interface FileMark {
  size: number;
  mtime: number;
  failure?: string;
}

interface LocalObject extends SourceObject {
  readonly path: string;
  readonly mark: FileMark;
}

/** Whether a path is a CloudTrail digest file or lies under a digest folder. */
export function isDigestPath(path: string): boolean {
  return path.includes("CloudTrail-Digest");
}

async function* walk(path: string): AsyncGenerator<string> {
  const info = await Deno.stat(path);
  if (info.isFile) {
    yield path;
    return;
  }
  const entries: Deno.DirEntry[] = [];
  for await (const entry of Deno.readDir(path)) entries.push(entry);
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const child = `${path}/${entry.name}`;
    if (entry.isDirectory) yield* walk(child);
    else if (entry.isFile) yield child;
    else if (entry.isSymlink) {
      const target = await Deno.stat(child).catch(() => undefined);
      if (target?.isFile) yield child;
      else if (target?.isDirectory) yield* walk(child);
    }
  }
}

/** Creates a `local` source. */
export function createLocalSource(options: Partial<Options>, context: SourceContext): Source {
  const opts = { ...defaults, ...options };
  const root = resolve(context.baseDir, opts.path);
  const prefix = ["src", context.name, "file"];
  const single = (rel: string) => rel === "";

  function relative(path: string): string {
    return path === root ? "" : path.slice(root.length + 1);
  }

  return {
    name: context.name,
    type: "local",
    async preflight() {
      try {
        await Deno.stat(root);
      } catch (error) {
        throw new Error(
          `sources.${context.name}.path: cannot read ${root}: ${(error as Error).message}`,
        );
      }
    },
    async *objects(run: SourceRun): AsyncGenerator<SourceObject> {
      const marks = new Map<string, FileMark>();
      for await (const entry of run.state.list<FileMark>(prefix)) {
        marks.set(entry.key[entry.key.length - 1] as string, entry.value);
      }
      const pending: LocalObject[] = [];
      let bytes = 0;
      for await (const path of walk(root)) {
        const rel = relative(path);
        if (isDigestPath(rel)) continue;
        if (!single(rel) && !opts.extensions.some((ext) => path.endsWith(ext))) continue;
        const info = await Deno.stat(path);
        const mark: FileMark = { size: info.size, mtime: info.mtime?.getTime() ?? 0 };
        const seen = marks.get(rel);
        if (seen && seen.size === mark.size && seen.mtime === mark.mtime) continue;
        pending.push({
          id: path,
          path,
          size: info.size,
          mark,
          insight: rel.includes("CloudTrail-Insight"),
          open: async () => {
            try {
              const file = await Deno.open(path);
              return file.readable;
            } catch (error) {
              throw new SourceReadError(path, (error as Error).message, false, { cause: error });
            }
          },
        });
        bytes += info.size;
      }
      run.progress.listed(pending.length, bytes);
      for (const object of pending) {
        if (run.signal.aborted) return;
        yield object;
      }
    },
    checkpoint(object: SourceObject, commit: Commit, failure?: string) {
      const local = object as LocalObject;
      const mark: FileMark = failure ? { ...local.mark, failure } : local.mark;
      commit.set([...prefix, relative(local.path)], mark);
    },
  };
}

/** The `local` source plugin. */
export const localSource: SourcePlugin = {
  description: "CloudTrail log files from a local file or directory",
  check(check: OptionsChecker) {
    check.string("path", { required: true });
    check.strings("extensions", {
      each: (
        ext,
      ) => (ext.startsWith(".")
        ? undefined
        : `expected a file ending starting with ".", got "${ext}"`),
    });
  },
  create: (options: RawOptions, context) => createLocalSource(options as Partial<Options>, context),
};
