/**
 * The setup cache: what a successful setup produced (its `cache.paths`), kept as one layer per
 * key, and restored instead of running setup when a later run has the same key.
 *
 * - The key hashes the repository, the setup's commands and paths, the key files' blob ids at
 *   the checked-out commit (git's own content hashes: a lockfile is never read whole), the
 *   sandbox provider and the platform (`uname -sm` inside the sandbox).
 * - A layer is an uncompressed tar, `<dataDir>/cache/env/<key>.tar`, made and unpacked by
 *   `tar` inside the sandbox, so links in a workspace resolve in the sandbox, never on the
 *   host; only the one archive file crosses (`Sandbox.copyIn`/`copyOut`). Written to a temp
 *   name and renamed, so a reader sees a whole layer or none.
 * - Restoring unpacks a copy: a run that deletes or rewrites restored files changes only its
 *   own workspace, never the layer the next run gets.
 * - Bounded: after each save, layers are evicted least recently used first (a restore counts
 *   as a use: it touches the file's mtime) until the total fits `maxBytes`.
 * - Where the sandbox has snapshots (e2b), a layer is a snapshot instead (`snapshots.ts`):
 *   nothing is archived or copied, the next run's VM starts in it.
 */
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import { createSerialQueues } from "../serial.ts";
import type { SetupSpec } from "./schema.ts";
import { createSnapshotLayers } from "./snapshots.ts";

/** A cached layer, as `GET /api/v1/environments` lists it. */
export interface LayerInfo {
  key: string;
  /** Size of an archive; null for a snapshot (the provider keeps it). */
  bytes: number | null;
  lastUsedAt: string;
  /** An archive in the data dir, or a snapshot at the sandbox provider (e2b). */
  storage: "archive" | "snapshot";
}

export interface KeyInput {
  repository: string;
  setup: SetupSpec & { cache: NonNullable<SetupSpec["cache"]> };
  /** The commit the key files are read at. */
  commit: string;
  sandbox: Sandbox;
}

export interface EnvironmentCache {
  /** The cache key of a setup in a sandbox. */
  key(input: KeyInput): Promise<string>;
  /**
   * The snapshot a new sandbox for `repository` should start from (providers with snapshots:
   * the repository's most recently used layer), before its key can be known.
   */
  baseFor(repository: string): Promise<string | undefined>;
  /**
   * Put layer `key` into the sandbox's workspace; false when there is none. A sandbox started
   * from a snapshot layer of another key (or a run with no key: `null`) has it removed.
   */
  restore(key: string | null, sandbox: Sandbox): Promise<boolean>;
  /**
   * Keep `paths` of the sandbox's workspace as layer `key` (a snapshot where the sandbox has
   * them, else an archive), then evict to stay within the bound. Undefined when not kept.
   */
  save(key: string, repository: string, sandbox: Sandbox, paths: string[]): Promise<LayerInfo | undefined>;
  list(): Promise<LayerInfo[]>;
  /** Remove layer `key`; false when there was none. */
  drop(key: string): Promise<boolean>;
}

export interface EnvironmentCacheOptions {
  /** Layers live in `<dataDir>/cache/env`. */
  dataDir: string;
  /** PATCHBAY_ENV_CACHE_MAX_BYTES; 0 keeps nothing. */
  maxBytes: number;
  /** PATCHBAY_ENV_CACHE_MAX_SNAPSHOTS (providers with snapshots); 0 keeps none. Default 20. */
  maxSnapshots?: number;
  /** Deletes a snapshot at the sandbox provider (the session host's `dropSnapshot`). */
  dropSnapshot?: (snapshotId: string) => Promise<void>;
  log: Logger;
}

const KEY = /^[0-9a-f]{40}$/;
const TAR_TIMEOUT_MS = 10 * 60_000;

export function createEnvironmentCache(opts: EnvironmentCacheOptions): EnvironmentCache {
  const dir = path.join(opts.dataDir, "cache", "env");
  const layerFile = (key: string) => {
    if (!KEY.test(key)) throw new EngineError("environment_not_found", `no cached environment ${JSON.stringify(key)}`);
    return path.join(dir, `${key}.tar`);
  };
  const ensureDir = () => fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  const queues = createSerialQueues();
  /** Saves and evictions one after another: the total they keep under the bound is theirs alone. */
  const serial = <T>(fn: () => Promise<T>): Promise<T> => queues("archives", fn);
  const snapshots = createSnapshotLayers({
    dataDir: opts.dataDir,
    maxSnapshots: opts.maxSnapshots ?? 20,
    ...(opts.dropSnapshot ? { dropSnapshot: opts.dropSnapshot } : {}),
    log: opts.log,
  });
  const scratchName = () => `layer-${randomBytes(8).toString("hex")}.tar`;
  const scratchRm = (sandbox: Sandbox, name: string) =>
    sandbox.exec(["rm", "-f", "--", `${sandbox.scratchDir}/${name}`]).catch((e: unknown) => {
      opts.log.warn("could not remove a layer archive from the sandbox", { error: e });
    });

  async function archives(): Promise<LayerInfo[]> {
    let names: string[];
    try {
      names = await fs.promises.readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw e;
    }
    const out: LayerInfo[] = [];
    for (const name of names) {
      const key = name.endsWith(".tar") ? name.slice(0, -4) : "";
      if (!KEY.test(key)) continue;
      try {
        const st = await fs.promises.stat(path.join(dir, name));
        out.push({ key, bytes: st.size, lastUsedAt: st.mtime.toISOString(), storage: "archive" });
      } catch (e) {
        // Evicted while we looked.
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
    return out.sort((a, b) => a.lastUsedAt.localeCompare(b.lastUsedAt));
  }

  /** Drop least recently used layers until the total fits; `keep` goes last. */
  async function evict(keep: string): Promise<void> {
    const layers = await archives();
    let total = layers.reduce((n, l) => n + (l.bytes ?? 0), 0);
    const order = [...layers.filter((l) => l.key !== keep), ...layers.filter((l) => l.key === keep)];
    for (const l of order) {
      if (total <= opts.maxBytes) break;
      await fs.promises.rm(layerFile(l.key), { force: true });
      total -= l.bytes ?? 0;
      opts.log.info("setup cache layer evicted", { key: l.key, bytes: l.bytes });
    }
  }

  return {
    async key({ repository, setup, commit, sandbox }) {
      // One command: the platform, then the key files' entries (mode, blob id, path) at the commit.
      const r = await sandbox.exec(
        ["sh", "-c", 'uname -sm && exec git ls-tree -r --full-tree -z "$@"', "sh", commit, "--", ...setup.cache.key],
        { timeoutMs: 60_000 },
      );
      if (r.exitCode !== 0)
        throw new EngineError("setup_failed", `cannot read the cache key files: ${r.stderr.trim() || r.stdout.trim()}`);
      const [platform = "", ...rest] = r.stdout.split("\n");
      const entries = rest.join("\n").split("\0").filter(Boolean).sort();
      const material = JSON.stringify({
        v: 1,
        repository,
        commands: setup.commands,
        paths: setup.cache.paths,
        entries,
        provider: sandbox.provider,
        platform: platform.trim(),
      });
      return createHash("sha256").update(material).digest("hex").slice(0, 40);
    },

    baseFor: (repository) => snapshots.baseFor(repository),

    async restore(key, sandbox) {
      if (sandbox.snapshots) return snapshots.restore(key, sandbox);
      if (key === null) return false;
      const file = layerFile(key);
      const name = scratchName();
      try {
        const now = new Date();
        await fs.promises.utimes(file, now, now); // a use, for LRU
        await sandbox.copyIn(file, name);
      } catch (e) {
        // None, or evicted between the look and the copy: a miss.
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw e;
      }
      // One command unpacks and removes the archive (each command in a sandbox is a process start).
      const r = await sandbox
        .exec(
          [
            "sh",
            "-c",
            'tar -xf "$1" --no-same-owner; s=$?; rm -f -- "$1"; exit $s',
            "sh",
            `${sandbox.scratchDir}/${name}`,
          ],
          {
            timeoutMs: TAR_TIMEOUT_MS,
          },
        )
        .catch(async (e: unknown) => {
          await scratchRm(sandbox, name);
          throw e;
        });
      if (r.exitCode !== 0)
        throw new EngineError("setup_failed", `restoring the cached setup failed: ${r.stderr.trim().slice(-500)}`);
      return true;
    },

    async save(key, repository, sandbox, paths) {
      if (sandbox.snapshots) return snapshots.save(key, repository, sandbox, paths);
      const file = layerFile(key);
      if (opts.maxBytes === 0) return undefined;
      const name = scratchName();
      const archive = `${sandbox.scratchDir}/${name}`;
      try {
        const r = await sandbox.exec(
          [
            "sh",
            "-c",
            'set -e; out=$1; shift; mkdir -p "$(dirname "$out")"; exec tar -cf "$out" --ignore-failed-read "$@"',
            "sh",
            archive,
            "--",
            ...paths,
          ],
          { timeoutMs: TAR_TIMEOUT_MS },
        );
        if (r.exitCode !== 0)
          throw new EngineError("setup_failed", `archiving the setup's paths failed: ${r.stderr.trim().slice(-500)}`);
        return await serial(async () => {
          await ensureDir();
          const tmp = path.join(dir, `.tmp-${randomBytes(8).toString("hex")}.tar`);
          try {
            await sandbox.copyOut(name, tmp);
            await fs.promises.rename(tmp, file);
          } finally {
            await fs.promises.rm(tmp, { force: true });
          }
          await evict(key);
          const st = await fs.promises.stat(file).catch((e: NodeJS.ErrnoException) => {
            if (e.code === "ENOENT") return undefined;
            throw e;
          });
          if (!st) {
            opts.log.warn("setup cache layer is larger than PATCHBAY_ENV_CACHE_MAX_BYTES; not kept", { key });
            return undefined;
          }
          return { key, bytes: st.size, lastUsedAt: st.mtime.toISOString(), storage: "archive" as const };
        });
      } finally {
        await scratchRm(sandbox, name);
      }
    },

    async list() {
      const all = [...(await archives()), ...(await snapshots.list())];
      return all.sort((a, b) => a.lastUsedAt.localeCompare(b.lastUsedAt));
    },

    async drop(key) {
      const file = layerFile(key);
      const archive = await serial(async () => {
        try {
          await fs.promises.unlink(file);
          return true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
          throw e;
        }
      });
      const snapshot = await snapshots.drop(key);
      return archive || snapshot;
    },
  };
}
