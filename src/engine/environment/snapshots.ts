/**
 * Setup's cache where the sandbox provider has snapshots (E2B): a layer is a snapshot of the
 * run's VM taken right after its setup succeeded, and a later run whose key matches starts
 * its VM from that snapshot, so nothing is copied at all: not through the files API, not
 * inside the VM.
 *
 * - The snapshot is taken before the agent starts (a sandbox with snapshots runs setup first,
 *   `session/run-session.ts`), so no OpenCode server, password or gateway token is in it;
 *   what setup's commands left on disk is, as in an archive layer.
 * - For the snapshot, the cached paths are moved (a rename, same filesystem) from the
 *   workspace to `<scratch>/../env-layer/` and moved back once it is taken. A VM started from
 *   it has its predecessor's workspace and mirror removed by the provider (the run's own
 *   checkout comes fresh); when the run's key is the layer's, its paths are moved into the
 *   new workspace, else removed and setup runs. Every run gets its own VM from the snapshot,
 *   so what a run does to its copy never reaches the next.
 * - Which snapshot a run starts from is decided before its repository is checked out (the
 *   key needs the files at the commit): the repository's most recently used layer. A run
 *   whose key turns out different pays only for the removal of the stale paths.
 * - The index (`<dataDir>/cache/env/snapshots.json`: key, repository, snapshot, last use) is
 *   bounded by PATCHBAY_ENV_CACHE_MAX_SNAPSHOTS, least recently used dropped first, with its
 *   snapshot deleted at the provider.
 */
import fs from "node:fs";
import path from "node:path";
import * as z from "zod";
import type { Logger } from "../log.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import { createSerialQueues } from "../serial.ts";
import { writePrivateFile } from "../store/private-file.ts";
import type { LayerInfo } from "./cache.ts";

const Entry = z.object({ key: z.string(), repository: z.string(), snapshotId: z.string(), lastUsedAt: z.string() });
type Entry = z.infer<typeof Entry>;
const Index = z.object({ v: z.literal(1), layers: z.array(Entry) });

export interface SnapshotLayers {
  /** The snapshot a new run of `repository` starts from: its most recently used layer. */
  baseFor(repository: string): Promise<string | undefined>;
  /**
   * A sandbox started from a layer: when that layer's key is `key`, move its paths into the
   * workspace (true); otherwise remove them (false). False for a sandbox started from none.
   */
  restore(key: string | null, sandbox: Sandbox): Promise<boolean>;
  /** Keep `paths` of the sandbox's workspace as layer `key`: a snapshot of the sandbox. */
  save(key: string, repository: string, sandbox: Sandbox, paths: string[]): Promise<LayerInfo | undefined>;
  list(): Promise<LayerInfo[]>;
  drop(key: string): Promise<boolean>;
}

export interface SnapshotLayersOptions {
  dataDir: string;
  /** PATCHBAY_ENV_CACHE_MAX_SNAPSHOTS; 0 keeps none. */
  maxSnapshots: number;
  /** Deletes a snapshot at the provider. */
  dropSnapshot?: (snapshotId: string) => Promise<void>;
  log: Logger;
}

const MOVE_TIMEOUT_MS = 5 * 60_000;
/** Moves each path (relative to the workspace) that exists from directory $1 to directory $2. */
const MOVE = [
  "set -e",
  'from=$1; to=$2; shift 2; mkdir -p "$to"',
  'for p; do if [ -e "$from/$p" ] || [ -L "$from/$p" ]; then mkdir -p "$(dirname "$to/$p")"; rm -rf "$to/$p"; mv "$from/$p" "$to/$p"; fi; done',
].join("\n");

export function createSnapshotLayers(opts: SnapshotLayersOptions): SnapshotLayers {
  const file = path.join(opts.dataDir, "cache", "env", "snapshots.json");
  const queues = createSerialQueues();
  /** Index updates one after another. */
  const serial = <T>(work: () => Promise<T>) => queues("index", work);
  const stashOf = (sandbox: Sandbox) => path.posix.join(path.posix.dirname(sandbox.scratchDir), "env-layer");

  async function read(): Promise<Entry[]> {
    try {
      const parsed = Index.safeParse(JSON.parse(await fs.promises.readFile(file, "utf8")));
      if (parsed.success) return parsed.data.layers;
      opts.log.warn("the setup snapshot index is unreadable; starting a new one", { file });
      return [];
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
  }
  const write = async (layers: Entry[]) => {
    await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await writePrivateFile(file, JSON.stringify({ v: 1, layers } satisfies z.infer<typeof Index>));
  };
  const info = (e: Entry): LayerInfo => ({ key: e.key, bytes: null, lastUsedAt: e.lastUsedAt, storage: "snapshot" });
  const forget = async (e: Entry) => {
    try {
      await opts.dropSnapshot?.(e.snapshotId);
    } catch (error) {
      // Left at the provider: it costs storage there, never a wrong restore here.
      opts.log.warn("could not delete a setup snapshot", { key: e.key, snapshotId: e.snapshotId, error });
    }
  };

  const move = async (sandbox: Sandbox, from: string, to: string, paths: string[]) => {
    const r = await sandbox.exec(["sh", "-c", MOVE, "sh", from, to, ...paths], { timeoutMs: MOVE_TIMEOUT_MS });
    if (r.exitCode !== 0) throw new Error(`moving the setup's paths failed: ${r.stderr.trim().slice(-500)}`);
  };
  const clear = async (sandbox: Sandbox) => {
    await sandbox.exec(["rm", "-rf", "--", stashOf(sandbox)], { timeoutMs: MOVE_TIMEOUT_MS });
  };

  return {
    async baseFor(repository) {
      if (opts.maxSnapshots === 0) return undefined;
      const mine = (await read()).filter((e) => e.repository === repository);
      return mine.sort((a, b) => b.lastUsedAt.localeCompare(a.lastUsedAt))[0]?.snapshotId;
    },

    async restore(key, sandbox) {
      const from = sandbox.snapshots?.from;
      if (!from) return false;
      const entry = (await read()).find((e) => e.snapshotId === from);
      if (!key || entry?.key !== key) {
        await clear(sandbox);
        return false;
      }
      const stash = stashOf(sandbox);
      const paths = await sandbox.exec(["sh", "-c", 'cd "$1" && find . -mindepth 1 -maxdepth 1 -print0', "sh", stash]);
      const names = paths.stdout
        .split("\0")
        .filter(Boolean)
        .map((p) => p.replace(/^\.\//, ""));
      await move(sandbox, stash, sandbox.workdir, names);
      await clear(sandbox);
      await serial(async () => {
        const layers = await read();
        const now = new Date().toISOString();
        await write(layers.map((e) => (e.snapshotId === from ? { ...e, lastUsedAt: now } : e)));
      });
      return true;
    },

    async save(key, repository, sandbox, paths) {
      if (!sandbox.snapshots || opts.maxSnapshots === 0) return undefined;
      const stash = stashOf(sandbox);
      await move(sandbox, sandbox.workdir, stash, paths);
      let snapshotId: string;
      try {
        snapshotId = await sandbox.snapshots.take();
      } finally {
        await move(sandbox, stash, sandbox.workdir, paths);
        await clear(sandbox);
      }
      const entry: Entry = { key, repository, snapshotId, lastUsedAt: new Date().toISOString() };
      const gone = await serial(async () => {
        const layers = await read();
        const replaced = layers.filter((e) => e.key === key);
        const kept = [...layers.filter((e) => e.key !== key), entry].sort((a, b) =>
          b.lastUsedAt.localeCompare(a.lastUsedAt),
        );
        await write(kept.slice(0, opts.maxSnapshots));
        return [...replaced, ...kept.slice(opts.maxSnapshots)];
      });
      for (const e of gone) await forget(e);
      return info(entry);
    },

    async list() {
      return (await read()).map(info);
    },

    async drop(key) {
      const gone = await serial(async () => {
        const layers = await read();
        await write(layers.filter((e) => e.key !== key));
        return layers.filter((e) => e.key === key);
      });
      for (const e of gone) await forget(e);
      return gone.length > 0;
    },
  };
}
