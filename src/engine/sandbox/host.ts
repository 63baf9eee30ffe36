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
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { createHostGit, validateRef, type GitRunner } from "../git/git.ts";
import { checkoutFromMirror, updateFromMirror, createMirrorCache } from "../git/mirror.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import {
  descendants,
  freeLoopbackPort,
  GroupProcess,
  isAlive,
  killStrays,
  removeTree,
  Tail,
  writeStdin,
} from "./process.ts";
import {
  copyIntoScratch,
  copyOutOfScratch,
  sandboxEnv,
  type HostCommand,
  type IsolatedNetwork,
} from "./host-command.ts";
import {
  fillOrKill,
  type ExecOptions,
  type ExecResult,
  type ProcessHandle,
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

/** Output kept per stream by `exec`: the tail is what explains a failure. */
const OUTPUT_CAP = 1024 * 1024;
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
    if (keepName && c.ref !== undefined) await validateRef(hostGit, c.ref);
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

interface HostSandboxInit {
  id: string;
  root: string;
  flavor: HostFlavor;
  killGraceMs: number;
  log: Logger;
  adopt: (s: HostSandbox, c: SandboxCreateOptions) => Promise<Sandbox>;
  onGone: (s: HostSandbox) => void;
}

/** A sandbox of a host provider: a warm one until `adopt`, then a run's. */
class HostSandbox implements WarmSandbox, Sandbox {
  readonly provider: "local" | "bwrap";
  readonly listenHost = "127.0.0.1";
  private _id: string;
  private _root: string;
  private _baseSha = "";
  private _baseRef = "";
  private _repository: string | undefined;
  private log: Logger;
  /** Links left at the directory's former paths (see {@link HostFlavor.hostPaths}). */
  private readonly links: string[] = [];
  private readonly procs = new Set<GroupProcess>();
  private killing: Promise<void> | undefined;
  /** A model-only sandbox's network: its spawned servers are always isolated, its commands once restricted. */
  private isolation: IsolatedNetwork | undefined;
  private restricted = false;

  constructor(private readonly init: HostSandboxInit) {
    this.provider = init.flavor.name;
    this._id = init.id;
    this._root = init.root;
    this.log = init.log.child({ sandbox: init.id });
  }

  get id(): string {
    return this._id;
  }
  get root(): string {
    return this._root;
  }
  get workdir(): string {
    return this.init.flavor.workdir(this._root);
  }
  get baseSha(): string {
    return this._baseSha;
  }
  get scratchDir(): string {
    return this.init.flavor.tmpdir(this._root);
  }
  get baseRef(): string {
    return this._baseRef;
  }

  /** Called by the provider when a warm sandbox becomes a run's. */
  rename(id: string, root: string, link: string | undefined): void {
    this._id = id;
    this._root = root;
    if (link !== undefined) this.links.push(link);
    this.log = this.init.log.child({ sandbox: id });
  }

  setBase(sha: string, ref: string, repository: string): void {
    this._baseSha = sha;
    this._baseRef = ref;
    this._repository = repository;
  }

  /** The repository checked out in the workspace, once there is one. */
  get repository(): string | undefined {
    return this._repository;
  }

  adopt(c: SandboxCreateOptions): Promise<Sandbox> {
    this.alive();
    return this.init.adopt(this, c);
  }

  /** Called by the provider when the run's sandbox is made model-only. */
  isolate(isolation: IsolatedNetwork): void {
    this.isolation = isolation;
  }

  async restrictNetwork(): Promise<void> {
    if (!this.isolation)
      throw new EngineError("unsupported_network_policy", `sandbox ${this._id} was not made with network model-only`);
    this.restricted = true;
  }

  binaryPath(name: "opencode"): string | undefined {
    return this.init.flavor.binaryPath?.(name);
  }

  async copyOut(name: string, hostFile: string): Promise<void> {
    this.alive();
    await copyOutOfScratch(this._root, name, hostFile);
  }

  async copyIn(hostFile: string, name: string): Promise<void> {
    this.alive();
    await copyIntoScratch(hostFile, this._root, name);
  }

  private alive(): void {
    if (this.killing) throw new EngineError("sandbox_failed", `sandbox ${this._id} has been killed`);
  }

  /** Start `argv` as the leader of a process group of its own, tracked until it exits. */
  private launch(
    argv: string[],
    opts: ExecOptions,
    kind: "exec" | "spawn",
  ): { proc: GroupProcess; child: ChildProcess } {
    this.alive();
    if (argv.length === 0 || !argv[0]) throw new EngineError("sandbox_failed", "no command given");
    const cwd = opts.cwd ?? this.workdir;
    // A server outlives setup, so it is isolated from its start; commands once setup is over.
    const cmd =
      this.isolation && (kind === "spawn" || this.restricted)
        ? this.isolation.command(this._root, argv, cwd, { bridged: kind === "spawn", ports: opts.ports ?? [] })
        : this.init.flavor.command(this._root, argv, cwd);
    let child: ChildProcess;
    try {
      // A process group of its own, so that killing it also stops everything it started.
      child = spawn(cmd.file, cmd.args, {
        cwd: cmd.cwd,
        env: { ...cmd.env, ...opts.env },
        detached: true,
        // Node drops supplementary groups before it switches (libuv calls setgroups(0)).
        ...(cmd.user ? { uid: cmd.user.uid, gid: cmd.user.gid } : {}),
        stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      });
    } catch (e) {
      // Thrown synchronously only for malformed input (a NUL byte in an argument or value).
      throw new EngineError("sandbox_failed", `cannot start ${JSON.stringify(argv[0])}: ${(e as Error).message}`);
    }
    const proc = new GroupProcess(child, this.init.killGraceMs, this.log);
    this.procs.add(proc);
    void proc.exited.then(() => this.procs.delete(proc));
    return { proc, child };
  }

  async exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const { proc, child } = this.launch(argv, opts, "exec");
    const stdout = new Tail(opts.maxOutputBytes ?? OUTPUT_CAP);
    const stderr = new Tail(OUTPUT_CAP);
    proc.onOutput((chunk, stream) => (stream === "stdout" ? stdout : stderr).push(chunk));
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            proc.signalGroup("SIGKILL");
          }, opts.timeoutMs);
    const stop = () => proc.signalGroup("SIGKILL");
    if (opts.signal?.aborted) stop();
    else opts.signal?.addEventListener("abort", stop, { once: true });
    writeStdin(child, opts.stdin, this.log);
    const { code, signal } = await proc.exited;
    if (timer) clearTimeout(timer);
    opts.signal?.removeEventListener("abort", stop);
    // A command run to completion leaves nothing behind: whatever it put in the background
    // would otherwise outlive the call, unseen (bwrap's namespace takes it down already).
    proc.signalGroup("SIGKILL");
    return {
      exitCode: code ?? 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 0),
      stdout: stdout.text(),
      stderr: stderr.text() + (proc.spawnError ? `${proc.spawnError.message}\n` : ""),
      ...(timedOut ? { timedOut } : {}),
    };
  }

  spawn(argv: string[], opts: ExecOptions = {}): ProcessHandle {
    const { proc, child } = this.launch(argv, opts, "spawn");
    writeStdin(child, opts.stdin, this.log);
    if (opts.timeoutMs !== undefined) {
      const timer = setTimeout(() => void proc.kill(), opts.timeoutMs);
      void proc.exited.then(() => clearTimeout(timer));
    }
    return proc;
  }

  freePort(): Promise<number> {
    // Both providers share the host's network namespace: a port free here is free inside.
    return freeLoopbackPort();
  }

  async endpoint(port: number): Promise<string> {
    return (await this.isolation?.endpoint(port)) ?? `http://127.0.0.1:${port}`;
  }

  engineUrl(port: number): string {
    return `http://127.0.0.1:${port}`;
  }

  pids(): number[] {
    return [...this.procs].filter((p) => p.running && p.pid !== undefined).map((p) => p.pid!);
  }

  kill(): Promise<void> {
    this.killing ??= (async () => {
      const inside = descendants(this.pids());
      await Promise.all([...this.procs].map((p) => p.kill()));
      this.procs.clear();
      // A process that left its group (setsid) is not reached by the group's signals.
      for (const pid of inside.filter(isAlive)) signal(pid, this.log);
      // PDEATHSIG and a PID namespace's teardown are asynchronous: wait until every process
      // that was inside is really gone before the directory goes.
      const deadline = Date.now() + 5000;
      while (inside.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      for (const pid of inside.filter(isAlive)) this.log.warn("sandbox process survived its sandbox", { pid });
      await this.isolation?.close();
      await removeTree(this._root);
      await Promise.all(this.links.map((l) => fs.promises.rm(l, { force: true })));
      this.init.onGone(this);
      this.log.info("sandbox removed");
    })();
    return this.killing;
  }
}

function signal(pid: number, log: Logger): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") log.warn("could not kill a sandbox process", { pid, error: e });
  }
}
