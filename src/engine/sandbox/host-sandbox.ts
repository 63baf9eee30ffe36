/**
 * A sandbox of a host provider (`host.ts`): a directory whose processes run on this host in
 * process groups of their own, tracked until they exit; killed with everything it started.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
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
import { copyIntoScratch, copyOutOfScratch, type IsolatedNetwork } from "./host-command.ts";
import type { HostFlavor } from "./host.ts";
import type {
  ExecOptions,
  ExecResult,
  KeptSandbox,
  ProcessHandle,
  Sandbox,
  SandboxCreateOptions,
  WarmSandbox,
} from "./sandbox.ts";

/** Output kept per stream by `exec`: the tail is what explains a failure. */
const OUTPUT_CAP = 1024 * 1024;

export interface HostSandboxInit {
  id: string;
  root: string;
  flavor: HostFlavor;
  killGraceMs: number;
  log: Logger;
  adopt: (s: HostSandbox, c: SandboxCreateOptions) => Promise<Sandbox>;
  onGone: (s: HostSandbox) => void;
}

/** A sandbox of a host provider: a warm one until `adopt`, then a run's. */
export class HostSandbox implements WarmSandbox, Sandbox {
  readonly provider: "local" | "bwrap";
  readonly listenHost = "127.0.0.1";
  private _id: string;
  private _root: string;
  private _baseSha = "";
  private _baseRef = "";
  private _repository: string | undefined;
  private runName: string | undefined;
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

  setBase(sha: string, ref: string, repository?: string): void {
    this._baseSha = sha;
    this._baseRef = ref;
    if (repository !== undefined) this._repository = repository;
  }

  /** A repository entry that kept its directory for run `runId` (local): named after it when it hibernates. */
  keepNameFor(runId: string): void {
    this.runName = runId;
  }

  /** The repository checked out in the workspace, once there is one (known to the process that checked it out). */
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

  readonly hibernation = "files" as const;

  /** Stop every process and keep the directory (the agent's files, OpenCode's session store). */
  async hibernate(): Promise<KeptSandbox> {
    const kept: KeptSandbox = {
      provider: this.provider,
      baseSha: this._baseSha,
      baseRef: this._baseRef,
      ...(this.isolation ? { modelOnly: true } : {}),
    };
    await (this.killing ??= this.stop(false));
    if (this.runName !== undefined && this.runName !== this._id) {
      // A repository entry kept the pool's name for its server's sake; with no process left,
      // the kept directory takes its run's name, where waking and a restart look for it.
      const to = path.join(path.dirname(this._root), this.runName);
      await removeTree(to);
      fs.renameSync(this._root, to);
      this._root = to;
      this._id = this.runName;
    }
    return kept;
  }

  kill(): Promise<void> {
    this.killing ??= this.stop(true);
    return this.killing;
  }

  /** Every process gone, the host side of its network closed; the directory too when `remove`. */
  private async stop(remove: boolean): Promise<void> {
    const inside = descendants(this.pids());
    const procs = [...this.procs];
    this.procs.clear();
    await Promise.all(procs.map((p) => p.end()));
    // A process that left its group (setsid) is not reached by the group's signals, nor one
    // that left our tree too (bwrap's inner process, orphaned while bwrap was starting).
    for (const pid of inside.filter(isAlive)) signal(pid, this.log);
    killStrays([this._root, ...this.links], this.log);
    await Promise.all(procs.map((p) => p.kill()));
    // PDEATHSIG and a PID namespace's teardown are asynchronous: wait until every process
    // that was inside is really gone before the directory goes.
    const deadline = Date.now() + 5000;
    while (inside.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    for (const pid of inside.filter(isAlive)) this.log.warn("sandbox process survived its sandbox", { pid });
    await this.isolation?.close();
    if (remove) await removeTree(this._root);
    // No process started under a former name is left to follow its link.
    await Promise.all(this.links.map((l) => fs.promises.rm(l, { force: true })));
    this.init.onGone(this);
    this.log.info(remove ? "sandbox removed" : "sandbox hibernated: processes stopped, files kept");
  }
}

function signal(pid: number, log: Logger): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ESRCH") log.warn("could not kill a sandbox process", { pid, error: e });
  }
}
