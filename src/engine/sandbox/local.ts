/**
 * The `local` sandbox provider: no isolation, for trusted repositories on your own machine.
 * A sandbox is a directory, `<dataDir>/sandboxes/<runId>/`, holding the checkout (`repo/`,
 * the workdir), a private HOME (`home/`) and a TMPDIR (`tmp/`); its processes run as the
 * Patchbay user, with a minimal environment that never includes Patchbay's own (API keys).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { createHostGit, validateRef, type GitRunner } from "../git/git.ts";
import { checkoutFromMirror, createMirrorCache, type MirrorCache } from "../git/mirror.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type {
  ExecOptions,
  ExecResult,
  ProcessHandle,
  Sandbox,
  SandboxCreateOptions,
  SandboxProvider,
} from "./sandbox.ts";
import { creationError } from "./sandbox.ts";
import { GroupProcess, Tail, killStrays, removeTree, writeStdin, freeLoopbackPort } from "./process.ts";

export interface LocalProviderOptions {
  /** Sandboxes live in `<dataDir>/sandboxes`, mirrors in `<dataDir>/mirrors`. */
  dataDir: string;
  log?: Logger;
  /** Runs git on the host. Default: `createHostGit` with HOME at `<dataDir>/git-home`. */
  gitRunner?: GitRunner;
  /** PATH given to commands in the sandbox. Default: the PATH Patchbay was started with. */
  path?: string;
  /** Grace period between SIGTERM and SIGKILL when a process is killed. Default 3 s. */
  killGraceMs?: number;
}

/** Output kept per stream by `exec`: the tail is what explains a failure. */
const OUTPUT_CAP = 1024 * 1024;
const RUN_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Create the `local` provider ("no isolation: for trusted repositories on your own machine"). */
export function createLocalProvider(opts: LocalProviderOptions): SandboxProvider {
  const log = opts.log ?? silentLogger;
  const dataDir = path.resolve(opts.dataDir);
  const sandboxesDir = path.join(dataDir, "sandboxes");
  const run = opts.gitRunner ?? createHostGit({ home: path.join(dataDir, "git-home") });
  const mirrors: MirrorCache = createMirrorCache({ dataDir, run, log });
  // Read once at creation: commands need to find their tools, and PATH holds no secret.
  const hostPath = opts.path ?? process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin";
  const killGraceMs = opts.killGraceMs ?? 3000;
  const live = new Map<string, LocalSandbox>();

  return {
    name: "local",

    async create(c: SandboxCreateOptions): Promise<Sandbox> {
      if (!RUN_ID.test(c.runId))
        throw new EngineError("sandbox_failed", `run id ${JSON.stringify(c.runId)} cannot name a sandbox`);
      // The engine validated the ref already; checking again here costs one tiny git call
      // and keeps hostile refs away from clone and checkout whoever calls the provider.
      if (c.ref !== undefined) await validateRef(run, c.ref);
      if (live.has(c.runId)) throw new EngineError("sandbox_failed", `a sandbox for run ${c.runId} already exists`);

      const root = path.join(sandboxesDir, c.runId);
      // A directory left by a crash belongs to no live sandbox (checked above): start afresh.
      await removeTree(root);
      const workdir = path.join(root, "repo");
      const home = path.join(root, "home");
      const tmp = path.join(root, "tmp");
      for (const dir of [
        home,
        path.join(home, ".config"),
        path.join(home, ".cache"),
        path.join(home, ".local", "share"),
        path.join(home, ".local", "state"),
        tmp,
      ]) {
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      }
      const slog = log.child({ sandbox: c.runId, repository: c.repository.fullName });
      try {
        const checkout = await mirrors.withMirror(
          {
            fullName: c.repository.fullName,
            cloneUrl: c.repository.cloneUrl,
            credential: c.credential,
            signal: c.signal,
          },
          (mirrorDir) =>
            checkoutFromMirror({
              run,
              mirrorDir,
              workdir,
              cloneUrl: c.repository.cloneUrl,
              fullName: c.repository.fullName,
              ref: c.ref,
              signal: c.signal,
            }),
        );
        if (c.signal?.aborted) throw new EngineError("cancelled", "sandbox creation was cancelled");
        const env = baseEnv(hostPath, home, tmp);
        const sandbox = new LocalSandbox({
          id: c.runId,
          root,
          workdir,
          env,
          baseSha: checkout.baseSha,
          baseRef: checkout.baseRef,
          killGraceMs,
          log: slog,
          onGone: () => live.delete(c.runId),
        });
        live.set(c.runId, sandbox);
        slog.info("sandbox created", { baseRef: checkout.baseRef, baseSha: checkout.baseSha });
        return sandbox;
      } catch (e) {
        await removeTree(root);
        throw creationError(e, c.signal);
      }
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
        killStrays(root, log);
        await removeTree(root);
        log.info("reaped sandbox", { sandbox: id });
      }
    },

    async close(): Promise<void> {
      await Promise.all([...live.values()].map((s) => s.kill()));
    },
  };
}

/** The whole environment of a sandboxed command: nothing is inherited from Patchbay. */
function baseEnv(hostPath: string, home: string, tmp: string): Record<string, string> {
  return {
    PATH: hostPath,
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, ".config"),
    XDG_CACHE_HOME: path.join(home, ".cache"),
    XDG_DATA_HOME: path.join(home, ".local", "share"),
    XDG_STATE_HOME: path.join(home, ".local", "state"),
    TMPDIR: tmp,
    LANG: "C.UTF-8",
    TERM: "dumb",
  };
}

interface LocalSandboxInit {
  id: string;
  root: string;
  workdir: string;
  env: Record<string, string>;
  baseSha: string;
  baseRef: string;
  killGraceMs: number;
  log: Logger;
  onGone: () => void;
}

class LocalSandbox implements Sandbox {
  readonly provider = "local" as const;
  readonly listenHost = "127.0.0.1";
  readonly id: string;
  readonly workdir: string;
  readonly baseSha: string;
  readonly baseRef: string;
  private readonly procs = new Set<GroupProcess>();
  private killing: Promise<void> | undefined;

  constructor(private readonly init: LocalSandboxInit) {
    this.id = init.id;
    this.workdir = init.workdir;
    this.baseSha = init.baseSha;
    this.baseRef = init.baseRef;
  }

  private alive(): void {
    if (this.killing) throw new EngineError("sandbox_failed", `sandbox ${this.id} has been killed`);
  }

  private start(argv: string[], opts: ExecOptions): ChildProcess {
    if (argv.length === 0 || !argv[0]) throw new EngineError("sandbox_failed", "no command given");
    try {
      // A process group of its own, so that killing it also stops everything it started.
      return spawn(argv[0], argv.slice(1), {
        cwd: opts.cwd ?? this.workdir,
        env: { ...this.init.env, ...opts.env },
        detached: true,
        stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      });
    } catch (e) {
      // Thrown synchronously only for malformed input (a NUL byte in an argument or value).
      throw new EngineError("sandbox_failed", `cannot start ${JSON.stringify(argv[0])}: ${(e as Error).message}`);
    }
  }

  async exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.alive();
    const child = this.start(argv, opts);
    const proc = new GroupProcess(child, this.init.killGraceMs, this.init.log);
    this.procs.add(proc);
    const stdout = new Tail(OUTPUT_CAP);
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
    writeStdin(child, opts.stdin, this.init.log);
    return proc.exited.then(({ code, signal }) => {
      if (timer) clearTimeout(timer);
      // A command run to completion leaves nothing behind: whatever it put in the
      // background would otherwise outlive the call, unseen and untracked.
      proc.signalGroup("SIGKILL");
      this.procs.delete(proc);
      const spawnError = proc.spawnError;
      return {
        exitCode: code ?? 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 0),
        stdout: stdout.text(),
        stderr: stderr.text() + (spawnError ? `${spawnError.message}\n` : ""),
        ...(timedOut ? { timedOut } : {}),
      };
    });
  }

  spawn(argv: string[], opts: ExecOptions = {}): ProcessHandle {
    this.alive();
    const child = this.start(argv, opts);
    const proc = new GroupProcess(child, this.init.killGraceMs, this.init.log);
    this.procs.add(proc);
    writeStdin(child, opts.stdin, this.init.log);
    if (opts.timeoutMs !== undefined) {
      const timer = setTimeout(() => void proc.kill(), opts.timeoutMs);
      void proc.exited.then(() => clearTimeout(timer));
    }
    return proc;
  }

  freePort(): Promise<number> {
    return freeLoopbackPort();
  }

  async endpoint(port: number): Promise<string> {
    return `http://127.0.0.1:${port}`;
  }

  engineUrl(port: number): string {
    return `http://127.0.0.1:${port}`;
  }

  pids(): number[] {
    return [...this.procs].filter((p) => p.running && p.pid !== undefined).map((p) => p.pid!);
  }

  kill(): Promise<void> {
    this.killing ??= (async () => {
      await Promise.all([...this.procs].map((p) => p.kill()));
      this.procs.clear();
      await removeTree(this.init.root);
      this.init.onGone();
      this.init.log.info("sandbox removed");
    })();
    return this.killing;
  }
}
