/**
 * The `e2b` sandbox provider: each run gets an E2B microVM (template `PATCHBAY_E2B_TEMPLATE`,
 * default `opencode`, see `e2b/README.md` for a faster template of our own).
 *
 *   - created with the run's metadata (`patchbayRunId`, `patchbayOwnerId`), so sandboxes a
 *     previous Patchbay process left can be found and killed (`reap`);
 *   - the repository is cloned inside the VM; the git credential comes from the engine for
 *     that one command (environment, never a file or a remote URL), so no long-lived token
 *     stays inside;
 *   - background processes (`opencode serve` on 0.0.0.0 with its generated password) run
 *     with `timeoutMs: 0`: the SDK's default of 60 s would silently kill the server;
 *   - the engine reaches a port through `getHost(port)` over HTTPS; the agent reaches the
 *     model gateway at PATCHBAY_PUBLIC_GATEWAY_URL (the gateway listens on the engine's
 *     loopback, so it needs a public route, e.g. a reverse proxy);
 *   - every command pushes the VM's timeout out to cover a whole turn plus the idle session
 *     TTL, so an idle session stays warm until its expiry and no longer; `kill` ends it at
 *     endSession, cancel and expiry;
 *   - a VM outlives the Patchbay process that made it: after a restart `connect` reaches it
 *     again by id (`Sandbox.connect`) and `reconnect` takes its OpenCode server's process
 *     back (`commands.connect`), so an idle run keeps its session;
 *   - a warm pool may keep VMs ready (`prepare`, opt-in: an idle VM is billed): made under
 *     a `warm_` id with an empty workspace, pushing their own end out while they wait, and
 *     given the run's repository by `adopt`.
 *
 * The SDK is reached through the small `E2bSdk` interface: the real one (`e2bSdk()`) or a
 * stand-in in tests, since E2B's cloud cannot be reached from CI.
 */
import { randomBytes } from "node:crypto";
import { EngineError, toEngineError } from "../errors.ts";
import { credentialEnv, validateRef, type GitRunner } from "../git/git.ts";
import { checkoutFromMirror } from "../git/mirror.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type {
  ExecOptions,
  ExecResult,
  ProcessHandle,
  Sandbox,
  SandboxCreateOptions,
  SandboxProvider,
  SandboxResume,
  WarmSandbox,
} from "./sandbox.ts";
import { creationError } from "./sandbox.ts";

/** What the provider uses of a live E2B sandbox (a subset of the SDK's `Sandbox`). */
export interface E2bSandboxHandle {
  readonly sandboxId: string;
  commands: {
    run(
      cmd: string,
      opts: {
        background?: boolean;
        cwd?: string;
        envs?: Record<string, string>;
        timeoutMs?: number;
        onStdout?: (data: string) => void;
        onStderr?: (data: string) => void;
      },
    ): Promise<unknown>;
    /** Attach to a background command by pid (one started by an earlier client). */
    connect(
      pid: number,
      opts: { timeoutMs?: number; onStdout?: (data: string) => void; onStderr?: (data: string) => void },
    ): Promise<E2bCommandHandle>;
  };
  getHost(port: number): string;
  setTimeout(timeoutMs: number): Promise<void>;
  kill(): Promise<unknown>;
}

/** A background command's handle (the SDK's `CommandHandle`). */
export interface E2bCommandHandle {
  readonly pid: number;
  wait(): Promise<{ exitCode: number }>;
  kill(): Promise<boolean>;
  /** Stop receiving the command's events; it keeps running. */
  disconnect(): Promise<void>;
}

/** What the provider uses of the SDK's static API. */
export interface E2bSdk {
  create(
    template: string,
    opts: { apiKey: string; metadata: Record<string, string>; timeoutMs: number },
  ): Promise<E2bSandboxHandle>;
  /** Reach a running (or paused: it resumes) sandbox by id. */
  connect(sandboxId: string, opts: { apiKey: string; timeoutMs: number }): Promise<E2bSandboxHandle>;
  /** Sandboxes (running or paused) whose metadata matches. */
  list(opts: {
    apiKey: string;
    metadata: Record<string, string>;
  }): Promise<{ sandboxId: string; metadata: Record<string, string> }[]>;
  kill(sandboxId: string, opts: { apiKey: string }): Promise<unknown>;
}

/** Options for {@link createE2bProvider}. */
export interface E2bProviderOptions {
  apiKey: string;
  /** Template name or id. Default `opencode`. */
  template?: string;
  /** Base URL (no trailing slash) under which the sandbox reaches the model gateway's `/v1`. */
  publicGatewayUrl: string;
  /** How long an idle session stays warm (PATCHBAY_SESSION_TTL_MS). */
  sessionTtlMs: number;
  /** Longest turn (PATCHBAY_TURN_TIMEOUT_MS). */
  turnTimeoutMs: number;
  /** The SDK; default the real `e2b` package. */
  sdk?: E2bSdk;
  log?: Logger;
}

/** Where things live inside the VM (E2B's default user is `user`). */
export const E2B_PATHS = { workdir: "/home/user/repo", mirror: "/home/user/.patchbay/mirror.git" } as const;
const METADATA_TAG = { patchbay: "1" };
/** Kept on top of the turn and idle time, so a slow last command never races the VM's end. */
const TIMEOUT_MARGIN_MS = 5 * 60_000;

/** The real SDK behind {@link E2bSdk}, loaded on first use. */
export function e2bSdk(): E2bSdk {
  const load = () => import("e2b");
  return {
    async create(template, opts) {
      const { Sandbox } = await load();
      return (await Sandbox.create(template, opts)) as unknown as E2bSandboxHandle;
    },
    async connect(sandboxId, opts) {
      const { Sandbox } = await load();
      // Bounded, so a restart with E2B unreachable ends the idle runs instead of hanging.
      return (await Sandbox.connect(sandboxId, { ...opts, requestTimeoutMs: 30_000 })) as unknown as E2bSandboxHandle;
    },
    async list(opts) {
      const { Sandbox } = await load();
      const pages = Sandbox.list({
        apiKey: opts.apiKey,
        query: { metadata: opts.metadata, state: ["running", "paused"] },
      });
      const out: { sandboxId: string; metadata: Record<string, string> }[] = [];
      while (pages.hasNext)
        for (const s of await pages.nextItems()) out.push({ sandboxId: s.sandboxId, metadata: s.metadata });
      return out;
    },
    async kill(id, opts) {
      const { Sandbox } = await load();
      return Sandbox.kill(id, opts);
    },
  };
}

/** Quote one argument for `bash -c` (E2B runs every command through a shell). */
export function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Create the `e2b` provider. */
export function createE2bProvider(opts: E2bProviderOptions): SandboxProvider {
  const log = opts.log ?? silentLogger;
  const sdk = opts.sdk ?? e2bSdk();
  const template = opts.template ?? "opencode";
  const keepAliveMs = Math.max(opts.turnTimeoutMs, opts.sessionTtlMs) + TIMEOUT_MARGIN_MS;
  const live = new Map<string, E2bSandbox>();
  const settings = {
    gatewayUrl: opts.publicGatewayUrl,
    keepAliveMs,
    log,
  };

  const newVm = async (id: string, ownerId: string): Promise<E2bSandbox> => {
    let handle: E2bSandboxHandle;
    try {
      handle = await sdk.create(template, {
        apiKey: opts.apiKey,
        metadata: { ...METADATA_TAG, patchbayRunId: id, patchbayOwnerId: ownerId },
        timeoutMs: keepAliveMs,
      });
    } catch (e) {
      throw new EngineError("sandbox_failed", `could not create an E2B sandbox: ${(e as Error).message}`);
    }
    const sandbox: E2bSandbox = new E2bSandbox(handle, id, settings, () => live.delete(sandbox.id));
    live.set(id, sandbox);
    return sandbox;
  };

  /** Clone the run's repository inside the VM and check the ref out. */
  const checkout = async (sandbox: E2bSandbox, c: SandboxCreateOptions): Promise<Sandbox> => {
    const git: GitRunner = (args, o = {}) =>
      sandbox.exec(["git", ...args], { ...o, ...(o.cwd ? { cwd: o.cwd } : { cwd: "/home/user" }) });
    if (c.ref !== undefined) await validateRef(git, c.ref);
    // The credential travels in this command's environment only.
    const fetched = await sandbox.exec(
      ["git", "clone", "--quiet", "--mirror", "--filter=blob:none", "--", c.repository.cloneUrl, E2B_PATHS.mirror],
      {
        cwd: "/home/user",
        env: { GIT_TERMINAL_PROMPT: "0", ...credentialEnv(c.credential, c.repository.cloneUrl) },
      },
    );
    if (fetched.exitCode !== 0) {
      const reason =
        fetched.stderr
          .split("\n")
          .filter((l) => /^(fatal|error):/.test(l))
          .join("; ") || `git exited ${fetched.exitCode}`;
      throw new EngineError("clone_failed", `could not clone ${c.repository.fullName}: ${reason}`);
    }
    const checkedOut = await checkoutFromMirror({
      run: git,
      mirrorDir: E2B_PATHS.mirror,
      workdir: E2B_PATHS.workdir,
      cloneUrl: c.repository.cloneUrl,
      fullName: c.repository.fullName,
      ref: c.ref,
      signal: c.signal,
    });
    if (c.signal?.aborted) throw new EngineError("cancelled", "sandbox creation was cancelled");
    sandbox.setBase(checkedOut.baseSha, checkedOut.baseRef);
    log.info("e2b sandbox created", { runId: c.runId, sandboxId: sandbox.sandboxId });
    return sandbox;
  };

  return {
    name: "e2b",

    async create(c: SandboxCreateOptions): Promise<Sandbox> {
      if (c.signal?.aborted) throw new EngineError("cancelled", "sandbox creation was cancelled");
      const sandbox = await newVm(c.runId, c.ownerId);
      try {
        return await checkout(sandbox, c);
      } catch (e) {
        await sandbox.kill();
        throw creationError(e, c.signal);
      }
    },

    /**
     * A VM with OpenCode's binary ready and no repository yet, for a warm pool (opt-in:
     * PATCHBAY_WARM_POOL_SIZE; an idle VM is billed). While it waits, it keeps pushing its
     * own end out; if this process dies it ends at that timeout, or the next start reaps it.
     */
    async prepare(): Promise<WarmSandbox> {
      const sandbox = await newVm(`warm_${randomBytes(6).toString("hex")}`, "patchbay");
      try {
        // OpenCode starts in the workspace before the repository lands (git clones into an empty directory).
        const made = await sandbox.exec(["mkdir", "-p", E2B_PATHS.workdir], { cwd: "/home/user" });
        if (made.exitCode !== 0)
          throw new EngineError("sandbox_failed", `could not make the workspace: ${made.stderr}`);
      } catch (e) {
        await sandbox.kill();
        throw toEngineError(e, "sandbox_failed");
      }
      sandbox.keepWarm();
      return Object.assign(sandbox, {
        adopt: async (c: SandboxCreateOptions): Promise<Sandbox> => {
          try {
            live.delete(sandbox.id);
            sandbox.becomes(c.runId);
            live.set(c.runId, sandbox);
            return await checkout(sandbox, c);
          } catch (e) {
            await sandbox.kill();
            throw creationError(e, c.signal);
          }
        },
      });
    },

    async connect(runId: string, resume: SandboxResume): Promise<Sandbox> {
      let handle: E2bSandboxHandle;
      try {
        // Connecting pushes the VM's end out as a command would (the session is in use again).
        handle = await sdk.connect(resume.sandboxId, { apiKey: opts.apiKey, timeoutMs: keepAliveMs });
      } catch (e) {
        throw new EngineError(
          "sandbox_failed",
          `could not reach E2B sandbox ${resume.sandboxId}: ${(e as Error).message}`,
        );
      }
      const sandbox: E2bSandbox = new E2bSandbox(handle, runId, settings, () => live.delete(sandbox.id));
      sandbox.setBase(resume.baseSha, resume.baseRef);
      live.set(runId, sandbox);
      log.info("e2b sandbox reattached", { runId, sandboxId: resume.sandboxId });
      return sandbox;
    },

    async reap(liveRunIds: ReadonlySet<string>): Promise<void> {
      // A warm VM keeps the metadata it was made with: ours are known by VM id as well.
      const ours = new Set([...live.values()].map((s) => s.sandboxId));
      for (const s of await sdk.list({ apiKey: opts.apiKey, metadata: METADATA_TAG })) {
        const runId = s.metadata.patchbayRunId ?? "";
        if (liveRunIds.has(runId) || live.has(runId) || ours.has(s.sandboxId)) continue;
        try {
          await sdk.kill(s.sandboxId, { apiKey: opts.apiKey });
          log.info("reaped e2b sandbox", { sandboxId: s.sandboxId, runId });
        } catch (e) {
          log.warn("could not kill an orphaned e2b sandbox", { sandboxId: s.sandboxId, error: e });
        }
      }
    },

    async close(): Promise<void> {
      await Promise.all([...live.values()].map((s) => s.kill()));
    },
  };
}

class E2bSandbox implements Sandbox {
  readonly provider = "e2b" as const;
  private warmTimer: NodeJS.Timeout | undefined;
  readonly listenHost = "0.0.0.0";
  readonly workdir = E2B_PATHS.workdir;
  baseSha = "";
  baseRef = "";
  private killing: Promise<void> | undefined;
  private readonly procs = new Set<E2bProcess>();

  private readonly log: Logger;

  constructor(
    private readonly handle: E2bSandboxHandle,
    public id: string,
    private readonly settings: { gatewayUrl: string; keepAliveMs: number; log: Logger },
    private readonly onGone: () => void,
  ) {
    this.log = settings.log;
  }

  get sandboxId(): string {
    return this.handle.sandboxId;
  }

  setBase(sha: string, ref: string): void {
    this.baseSha = sha;
    this.baseRef = ref;
  }

  /** A warm VM waiting for a run: keep pushing its end out (no command does it meanwhile). */
  keepWarm(): void {
    this.warmTimer = setInterval(
      () => this.touch(),
      Math.max(1000, Math.min(this.settings.keepAliveMs / 3, 5 * 60_000)),
    );
    this.warmTimer.unref();
  }

  /** A warm VM becomes a run's: from now on its commands keep it alive. */
  becomes(runId: string): void {
    clearInterval(this.warmTimer);
    this.id = runId;
  }

  private detached = false;

  private alive(): void {
    if (this.killing) throw new EngineError("sandbox_failed", `sandbox ${this.id} has been killed`);
    if (this.detached) throw new EngineError("sandbox_failed", `sandbox ${this.id} was handed on`);
  }

  async detach(): Promise<void> {
    if (this.killing || this.detached) return;
    this.detached = true;
    clearInterval(this.warmTimer);
    await Promise.allSettled([...this.procs].map((p) => p.detach()));
    this.onGone();
    this.log.info("e2b sandbox left running for the next start", { sandboxId: this.handle.sandboxId });
  }

  /** Push the VM's end out: a command means the session is in use. */
  private touch(): void {
    this.handle
      .setTimeout(this.settings.keepAliveMs)
      .catch((e: unknown) => this.log.warn("could not extend the e2b sandbox", { error: e }));
  }

  private command(argv: string[], opts: ExecOptions): string {
    if (argv.length === 0 || !argv[0]) throw new EngineError("sandbox_failed", "no command given");
    const cmd = argv.map(shellQuote).join(" ");
    return opts.stdin === undefined ? cmd : `printf %s ${shellQuote(opts.stdin)} | ${cmd}`;
  }

  async exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.alive();
    this.touch();
    try {
      const res = (await this.handle.commands.run(this.command(argv, opts), {
        cwd: opts.cwd ?? this.workdir,
        envs: opts.env ?? {},
        timeoutMs: opts.timeoutMs ?? 10 * 60_000,
      })) as { exitCode: number; stdout: string; stderr: string };
      return { exitCode: res.exitCode, stdout: res.stdout, stderr: res.stderr };
    } catch (e) {
      // The SDK throws for a non-zero exit; that is a result here, like the other providers.
      const r = e as { exitCode?: unknown; stdout?: unknown; stderr?: unknown; name?: string };
      if (typeof r.exitCode === "number")
        return { exitCode: r.exitCode, stdout: String(r.stdout ?? ""), stderr: String(r.stderr ?? "") };
      if (r.name === "TimeoutError")
        return { exitCode: 137, stdout: "", stderr: String((e as Error).message), timedOut: true };
      throw new EngineError("sandbox_failed", `e2b command failed: ${(e as Error).message}`);
    }
  }

  spawn(argv: string[], opts: ExecOptions = {}): ProcessHandle {
    this.alive();
    this.touch();
    const proc = new E2bProcess(this.log);
    this.procs.add(proc);
    void proc.exited.then(() => this.procs.delete(proc));
    // No timeout for a background command: the SDK's default (60 s) would end the server.
    const started = this.handle.commands.run(this.command(argv, opts), {
      background: true,
      cwd: opts.cwd ?? this.workdir,
      envs: opts.env ?? {},
      timeoutMs: opts.timeoutMs ?? 0,
      onStdout: (d) => proc.emit(d, "stdout"),
      onStderr: (d) => proc.emit(d, "stderr"),
    }) as Promise<E2bCommandHandle>;
    proc.attach(started);
    return proc;
  }

  async freePort(): Promise<number> {
    // A VM of its own: nothing else listens there.
    return 4096;
  }

  async endpoint(port: number): Promise<string> {
    const host = this.handle.getHost(port);
    // E2B's debug mode (a local envd) answers `localhost:PORT`, over plain HTTP like the SDK.
    return `${/^(localhost|127\.0\.0\.1)(:|$)/.test(host) ? "http" : "https"}://${host}`;
  }

  engineUrl(_port: number): string {
    // The gateway's loopback port means nothing from the cloud: its public URL stands in.
    return this.settings.gatewayUrl;
  }

  resumeInfo(): SandboxResume {
    return { provider: "e2b", sandboxId: this.handle.sandboxId, baseSha: this.baseSha, baseRef: this.baseRef };
  }

  async reconnect(pid: number): Promise<ProcessHandle> {
    this.alive();
    const proc = new E2bProcess(this.log);
    this.procs.add(proc);
    void proc.exited.then(() => this.procs.delete(proc));
    proc.attach(
      this.handle.commands.connect(pid, {
        timeoutMs: 0,
        onStdout: (d) => proc.emit(d, "stdout"),
        onStderr: (d) => proc.emit(d, "stderr"),
      }),
    );
    // A process that is gone fails the connect: the caller learns it here, not at the first turn.
    await proc.started();
    return proc;
  }

  binaryPath(name: "opencode"): string | undefined {
    // The template puts opencode on PATH.
    return name === "opencode" ? "opencode" : undefined;
  }

  kill(): Promise<void> {
    clearInterval(this.warmTimer);
    this.killing ??= (async () => {
      await Promise.allSettled([...this.procs].map((p) => p.kill()));
      try {
        await this.handle.kill();
      } catch (e) {
        this.log.warn("could not kill the e2b sandbox", { sandboxId: this.handle.sandboxId, error: e });
      }
      this.onGone();
    })();
    return this.killing;
  }
}

/** A background command in the VM, as a ProcessHandle. */
class E2bProcess implements ProcessHandle {
  pid: number | undefined;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private resolveExit!: (v: { code: number | null; signal: string | null }) => void;
  private handle: Promise<E2bCommandHandle | undefined> = Promise.resolve(undefined);
  private readonly listeners: ((chunk: string, stream: "stdout" | "stderr") => void)[] = [];
  private failure = "";

  constructor(private readonly log: Logger) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  attach(started: Promise<E2bCommandHandle>): void {
    this.handle = started.then(
      (h) => {
        this.pid = h.pid;
        h.wait().then(
          (r) => this.resolveExit({ code: r.exitCode, signal: null }),
          (e: { exitCode?: number }) =>
            this.resolveExit({
              code: typeof e.exitCode === "number" ? e.exitCode : null,
              signal: typeof e.exitCode === "number" ? null : "SIGKILL",
            }),
        );
        return h;
      },
      (e: unknown) => {
        this.failure = (e as Error).message;
        this.emit(`${(e as Error).message}\n`, "stderr");
        this.resolveExit({ code: 127, signal: null });
        return undefined;
      },
    );
  }

  /** Resolves once the command runs; throws sandbox_failed if it could not start (or be reached). */
  async started(): Promise<void> {
    if ((await this.handle) === undefined) {
      throw new EngineError("sandbox_failed", `could not reach the process in the e2b sandbox: ${this.failure}`);
    }
  }

  emit(chunk: string, stream: "stdout" | "stderr"): void {
    for (const l of this.listeners) l(chunk, stream);
  }

  onOutput(listener: (chunk: string, stream: "stdout" | "stderr") => void): void {
    this.listeners.push(listener);
  }

  private detaching: Promise<void> | undefined;

  /** Stop following the command (idempotent: the agent and its sandbox both let go of it). */
  detach(): Promise<void> {
    return (this.detaching ??= this.disconnect());
  }

  private async disconnect(): Promise<void> {
    const h = await this.handle;
    try {
      await h?.disconnect();
    } catch (e) {
      this.log.warn("could not disconnect from an e2b command", { pid: h?.pid, error: e });
    }
  }

  async kill(): Promise<void> {
    const h = await this.handle;
    if (h) {
      try {
        await h.kill();
      } catch (e) {
        this.log.warn("could not kill an e2b command", { pid: h.pid, error: e });
      }
    }
    this.resolveExit({ code: null, signal: "SIGKILL" });
    await this.exited;
  }
}
