/**
 * The base of the sandbox providers whose processes run on this host (`local`, `bwrap`).
 *
 * A sandbox is a directory, `<dataDir>/sandboxes/<id>/`, holding the checkout (`repo/`), a
 * private home (`home/`) and a TMPDIR (`tmp/`). Everything else is the same for both
 * providers and lives here: sandboxes made empty (`prepare`) and filled with a run's
 * checkout (`adopt`; `create` is both under the run's name), process groups tracked while
 * they run, kill, and `reap` of what a dead Patchbay left behind. A provider says only how
 * a command starts in a sandbox (a {@link HostFlavor}).
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { createHostGit, validateRef, type GitRunner } from "../git/git.ts";
import { checkoutFromMirror, updateFromMirror, createMirrorCache } from "../git/mirror.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { killStrays, removeTree } from "./process.ts";
import { sandboxEnv, type HostCommand, type IsolatedNetwork } from "./host-command.ts";
import { HostSandbox } from "./host-sandbox.ts";
import {
  fillOrKill,
  type KeptSandbox,
  type Sandbox,
  type SandboxCreateOptions,
  type SandboxNetwork,
  type SandboxProvider,
  type WarmSandbox,
} from "./sandbox.ts";

export { sandboxEnv, type HostCommand, type IsolatedNetwork };

/** Options every host provider takes. */
export interface HostProviderOptions {
  /** Sandboxes live in `<dataDir>/sandboxes`, mirrors in `<dataDir>/mirrors`. */
  dataDir: string;
  log?: Logger;
  /** Runs git on the host (mirror and checkout only). Default: `createHostGit` with HOME at `<dataDir>/git-home`. */
  gitRunner?: GitRunner;
  /** Grace period between SIGTERM and SIGKILL when a process is killed. Default 3 s. */
  killGraceMs?: number;
}

/** What a host provider adds to the base. */
export interface HostFlavor {
  readonly name: "local" | "bwrap";
  /** The workdir, as commands in the sandbox at `root` see it. */
  workdir(root: string): string;
  /** The sandbox's `tmp/`, as its commands see it. */
  tmpdir(root: string): string;
  /** How `argv` starts in the sandbox at `root`, in `cwd` (a path as the sandbox sees it). */
  command(root: string, argv: string[], cwd: string): HostCommand;
  /** Files the provider needs in a new sandbox directory besides `repo/`, `home/` and `tmp/`. */
  layout?(root: string): void;
  /**
   * Gives what Patchbay made on the host under `dir` (the new sandbox, then the checkout) to
   * the user the sandbox's processes run as.
   */
  handOver?(dir: string): void;
  /** The git that checks the run's repository out into `repo/`, given the host's. */
  checkoutGit?(hostGit: GitRunner): GitRunner;
  /** A tool's binary inside the sandbox, when the provider puts one there. */
  binaryPath?(name: "opencode"): string | undefined;
  /**
   * True when commands see host paths (HOME, TMPDIR, the workdir). A sandbox renamed after
   * its run then leaves a link at its old path, for the processes started before.
   */
  readonly hostPaths: boolean;
  /**
   * Give a sandbox a network of its own that reaches only the model gateway (`model-only`).
   * Absent: the provider cannot, and such a sandbox is refused.
   */
  isolate?(root: string, network: SandboxNetwork): Promise<IsolatedNetwork>;
}

const SANDBOX_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Create a host provider of the given flavor. */
export function createHostProvider(opts: HostProviderOptions, flavor: HostFlavor): SandboxProvider {
  const log = opts.log ?? silentLogger;
  const dataDir = path.resolve(opts.dataDir);
  const sandboxesDir = path.join(dataDir, "sandboxes");
  const hostGit = opts.gitRunner ?? createHostGit({ home: path.join(dataDir, "git-home") });
  const checkoutGit = flavor.checkoutGit?.(hostGit) ?? hostGit;
  const mirrors = createMirrorCache({ dataDir, run: hostGit, log });
  const killGraceMs = opts.killGraceMs ?? 3000;
  /** Every name in `sandboxesDir` a live sandbox holds: its own, and the links at its former ones. */
  const live = new Map<string, HostSandbox>();

  const checkId = (id: string): void => {
    if (!SANDBOX_ID.test(id))
      throw new EngineError("sandbox_failed", `run id ${JSON.stringify(id)} cannot name a sandbox`);
    if (live.has(id)) throw new EngineError("sandbox_failed", `a sandbox for run ${id} already exists`);
  };

  /** A sandbox with an empty workspace (the first half of `create`, and what a warm pool keeps). */
  const prepare = async (id: string): Promise<HostSandbox> => {
    checkId(id);
    const root = path.join(sandboxesDir, id);
    // A directory left by a crash belongs to no live sandbox (checked above): start afresh.
    await removeTree(root);
    for (const dir of ["repo", "home/.config", "home/.cache", "home/.local/share", "home/.local/state", "tmp"])
      fs.mkdirSync(path.join(root, dir), { recursive: true, mode: 0o700 });
    flavor.layout?.(root);
    flavor.handOver?.(root);
    return track(id, root);
  };

  /** A live sandbox object for the directory at `root`. */
  const track = (id: string, root: string): HostSandbox => {
    const sandbox = new HostSandbox({
      id,
      root,
      flavor,
      killGraceMs,
      log,
      adopt: (s, c) => adopt(s, c),
      onGone: (s) => {
        for (const [name, owner] of live) if (owner === s) live.delete(name);
      },
    });
    live.set(id, sandbox);
    return sandbox;
  };

  /**
   * Check the run's repository out into a prepared sandbox's (empty) workspace, or bring a
   * sandbox that already holds it (a warm pool's repository entry) to the run's ref.
   */
  const adopt = async (sandbox: HostSandbox, c: SandboxCreateOptions): Promise<Sandbox> => {
    const held = sandbox.repository;
    if (held !== undefined && held !== c.repository.fullName)
      throw new EngineError("sandbox_failed", `this sandbox holds ${held}, not ${c.repository.fullName}`);
    // A repository entry on a flavor whose processes see host paths (local) keeps its
    // directory: OpenCode keys its instance by the real path of the workdir, so a rename
    // would make it build the instance again. Its id stays the pool's name.
    const keepName = held !== undefined && flavor.hostPaths;
    if (keepName) {
      checkId(c.runId);
      if (c.ref !== undefined) await validateRef(hostGit, c.ref);
      sandbox.keepNameFor(c.runId);
    }
    if (sandbox.id !== c.runId && !keepName) {
      checkId(c.runId);
      if (c.ref !== undefined) await validateRef(hostGit, c.ref);
      // Open files and working directories follow a rename (bwrap's bind mounts too), so the
      // processes already running keep working; the directory is then named after its run.
      const [former, from, to] = [sandbox.id, sandbox.root, path.join(sandboxesDir, c.runId)];
      await removeTree(to);
      fs.renameSync(from, to);
      // Paths written into a running process's environment (local's HOME) do not follow:
      // a link at the former name keeps them, and the name, the sandbox's until it is killed.
      if (flavor.hostPaths) fs.symlinkSync(to, from);
      else live.delete(former);
      sandbox.rename(c.runId, to, flavor.hostPaths ? from : undefined);
      live.set(c.runId, sandbox);
    }
    if (c.network) {
      if (!flavor.isolate)
        throw new EngineError("unsupported_network_policy", `a ${flavor.name} sandbox cannot hold a run to model-only`);
      sandbox.isolate(await flavor.isolate(sandbox.root, c.network));
    }
    const { fullName, cloneUrl } = c.repository;
    const { ref, signal } = c;
    const workdir = path.join(sandbox.root, "repo");
    const checkout = await mirrors.withMirror({ fullName, cloneUrl, credential: c.credential, signal }, (mirrorDir) =>
      (held ? updateFromMirror : checkoutFromMirror)({
        run: checkoutGit,
        mirrorDir,
        workdir,
        cloneUrl,
        fullName,
        ref,
        signal,
      }),
    );
    flavor.handOver?.(workdir);
    if (c.signal?.aborted) throw new EngineError("cancelled", "sandbox creation was cancelled");
    sandbox.setBase(checkout.baseSha, checkout.baseRef, fullName);
    log.info("sandbox created", {
      sandbox: c.runId,
      repository: c.repository.fullName,
      baseRef: checkout.baseRef,
      baseSha: checkout.baseSha,
    });
    return sandbox;
  };

  return {
    name: flavor.name,

    async create(c: SandboxCreateOptions): Promise<Sandbox> {
      // Checked before anything touches the disk: hostile input never reaches git. The ref
      // was validated by the engine already; once more costs one tiny git call.
      checkId(c.runId);
      if (c.ref !== undefined) await validateRef(hostGit, c.ref);
      const sandbox = await prepare(c.runId);
      return fillOrKill(sandbox, () => adopt(sandbox, c), c.signal);
    },

    async prepare(): Promise<WarmSandbox> {
      return prepare(`warm_${randomBytes(6).toString("hex")}`);
    },

    // A hibernated sandbox is its directory: nothing ran in it since, so it is taken as it is.
    async wake(runId: string, kept: KeptSandbox, o: { network?: SandboxNetwork } = {}): Promise<Sandbox> {
      checkId(runId);
      const root = path.join(sandboxesDir, runId);
      if (kept.provider !== flavor.name || !fs.existsSync(path.join(root, "repo")))
        throw new EngineError("sandbox_failed", `the hibernated sandbox of run ${runId} is gone`);
      const sandbox = track(runId, root);
      sandbox.setBase(kept.baseSha, kept.baseRef);
      if ("modelOnly" in kept && kept.modelOnly) {
        if (!flavor.isolate || !o.network)
          throw new EngineError(
            "unsupported_network_policy",
            `a ${flavor.name} sandbox cannot hold a run to model-only`,
          );
        // Its setup ran before it hibernated: commands start restricted again.
        sandbox.isolate(await flavor.isolate(root, o.network));
        await sandbox.restrictNetwork();
      }
      return sandbox;
    },

    keeps: (runId, kept) =>
      kept.provider === flavor.name && SANDBOX_ID.test(runId) && fs.existsSync(path.join(sandboxesDir, runId, "repo")),

    async discard(runId: string): Promise<void> {
      const sandbox = live.get(runId);
      if (sandbox) return sandbox.kill();
      const root = path.join(sandboxesDir, runId);
      killStrays(root, log);
      await removeTree(root);
    },

    async reap(liveRunIds: ReadonlySet<string>): Promise<void> {
      let entries: string[];
      try {
        entries = await fs.promises.readdir(sandboxesDir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return; // no sandbox was ever made
        throw e;
      }
      for (const id of entries) {
        if (liveRunIds.has(id) || live.has(id)) continue;
        const root = path.join(sandboxesDir, id);
        // Every process of a sandbox works in its directory on the host (bwrap: the bwrap
        // process, whose death takes its PID namespace down).
        killStrays(root, log);
        await removeTree(root);
        log.info("reaped sandbox", { sandbox: id });
      }
    },

    async close(): Promise<void> {
      await Promise.all([...new Set(live.values())].map((s) => s.kill()));
    },
  };
}
