/**
 * One run's E2B microVM, as a {@link Sandbox}. Every command goes through the VM's shell
 * (argv quoted) and pushes the VM's end out to a whole turn plus the idle TTL; background
 * commands run with `timeoutMs: 0`, since the SDK's default of 60 s would silently kill the
 * OpenCode server. The engine reaches a port through `getHost(port)` over HTTPS; the agent
 * reaches the model gateway at its public URL. `detach` lets go of a VM and leaves it
 * running, for the next Patchbay process to `connect` to and take its OpenCode server back
 * by pid (`reconnect`).
 */
import fs from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { E2bProcess } from "./e2b-process.ts";
import type { E2bCommandHandle, E2bSandboxHandle } from "./e2b-sdk.ts";
import {
  checkScratchName,
  type ExecOptions,
  type ExecResult,
  type KeptSandbox,
  type ProcessHandle,
  type Sandbox,
  type SandboxResume,
  type SandboxSnapshots,
} from "./sandbox.ts";

/** Where things live inside the VM (E2B's default user is `user`). */
export const E2B_PATHS = {
  workdir: "/home/user/repo",
  mirror: "/home/user/.patchbay/mirror.git",
  scratch: "/home/user/.patchbay/scratch",
} as const;

/** What every sandbox of one provider shares. */
export interface E2bSandboxSettings {
  /** Base URL under which the VM reaches the model gateway (PATCHBAY_PUBLIC_GATEWAY_URL). */
  gatewayUrl: string;
  /** How far each command pushes the VM's end out. */
  keepAliveMs: number;
  log: Logger;
}

/** Quote one argument for `bash -c` (E2B runs every command through a shell). */
export function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * A run's VM (or a warm one, until `becomes`). `onGone` tells the provider it is no longer
 * ours: killed, or detached for the next start.
 */
export class E2bSandbox implements Sandbox {
  readonly provider = "e2b" as const;
  private warmTimer: NodeJS.Timeout | undefined;
  readonly listenHost = "0.0.0.0";
  readonly workdir = E2B_PATHS.workdir;
  readonly scratchDir = E2B_PATHS.scratch;
  baseSha = "";
  baseRef = "";
  private killing: Promise<void> | undefined;
  private readonly procs = new Set<E2bProcess>();
  /** Set by the provider on a VM made for its run (not a warm one): see `Sandbox.snapshots`. */
  snapshots: SandboxSnapshots | undefined;
  /** Made for a model-only run: `restrictNetwork` closes its egress to all but the gateway. */
  private modelOnly = false;

  private readonly log: Logger;

  constructor(
    private readonly handle: E2bSandboxHandle,
    public id: string,
    private readonly settings: E2bSandboxSettings,
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

  readonly hibernation = "memory" as const;

  /**
   * Pause the VM (E2B persistence: memory and files kept, billing stops) and let go of it;
   * its processes are detached, not killed, and run on where they were once it resumes
   * (`Sandbox.connect`, the provider's `wake`).
   */
  async hibernate(): Promise<KeptSandbox> {
    this.alive();
    this.detached = true;
    clearInterval(this.warmTimer);
    await Promise.allSettled([...this.procs].map((p) => p.detach()));
    try {
      await this.handle.pause();
    } finally {
      this.onGone();
    }
    this.log.info("e2b sandbox paused", { sandboxId: this.handle.sandboxId });
    return this.resumeInfo();
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

  /** Hold a background command until it exits, so `kill` and `detach` reach it. */
  private track(proc: E2bProcess): E2bProcess {
    this.procs.add(proc);
    void proc.exited.then(() => this.procs.delete(proc));
    return proc;
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
    const proc = this.track(new E2bProcess(this.log));
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

  /** Called by the provider for a sandbox made with `network` (the VM stays open until setup is over). */
  holdToModelOnly(): void {
    this.modelOnly = true;
  }

  /**
   * E2B's own egress rules, for the whole VM: the gateway's host let out, everything else
   * refused. Setup ran before with the VM's network open; the engine reaches OpenCode through
   * E2B's ingress (`getHost`), which egress rules do not touch.
   */
  async restrictNetwork(): Promise<void> {
    this.alive();
    if (!this.modelOnly)
      throw new EngineError("unsupported_network_policy", `sandbox ${this.id} was not made with network model-only`);
    if (!this.handle.updateNetwork)
      throw new EngineError("unsupported_network_policy", "this E2B SDK cannot change a sandbox's network");
    const gateway = new URL(this.settings.gatewayUrl).hostname;
    try {
      await this.handle.updateNetwork({ allowOut: [gateway], denyOut: ["0.0.0.0/0"] });
    } catch (e) {
      throw new EngineError("sandbox_failed", `could not close the E2B sandbox's network: ${(e as Error).message}`);
    }
    this.log.info("e2b sandbox network restricted to the model gateway", { sandboxId: this.sandboxId, gateway });
  }

  resumeInfo(): SandboxResume {
    return { provider: "e2b", sandboxId: this.handle.sandboxId, baseSha: this.baseSha, baseRef: this.baseRef };
  }

  async reconnect(pid: number): Promise<ProcessHandle> {
    this.alive();
    const proc = this.track(new E2bProcess(this.log));
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

  async copyOut(name: string, hostFile: string): Promise<void> {
    this.alive();
    checkScratchName(name);
    this.touch();
    try {
      const stream = await this.handle.files.read(`${this.scratchDir}/${name}`, { format: "stream" });
      await pipeline(
        Readable.fromWeb(stream as NodeReadableStream<Uint8Array>),
        fs.createWriteStream(hostFile, { flags: "wx", mode: 0o600 }),
      );
    } catch (e) {
      throw new EngineError("sandbox_failed", `cannot read ${name} from the e2b sandbox: ${(e as Error).message}`);
    }
  }

  async copyIn(hostFile: string, name: string): Promise<void> {
    this.alive();
    checkScratchName(name);
    this.touch();
    try {
      // A Blob backed by the file: the SDK streams it, never holding a layer in memory.
      await this.handle.files.write(`${this.scratchDir}/${name}`, await fs.openAsBlob(hostFile));
    } catch (e) {
      throw new EngineError("sandbox_failed", `cannot write ${name} into the e2b sandbox: ${(e as Error).message}`);
    }
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
