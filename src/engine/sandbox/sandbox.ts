/**
 * The sandbox port. A sandbox holds one run's repository checkout and the processes that
 * work on it (the OpenCode server, validation commands). Providers: `local` (no isolation),
 * `bwrap` (Linux namespaces), `e2b` (remote microVM). Nothing outside `engine/sandbox`
 * knows which provider runs.
 */
import * as z from "zod";
import { EngineError, toEngineError } from "../errors.ts";

/**
 * What a failed sandbox creation throws: `cancelled` when the run was cancelled meanwhile
 * (whatever step noticed first), the step's own error otherwise. Shared by the providers.
 */
export function creationError(e: unknown, signal?: AbortSignal): EngineError {
  return signal?.aborted && !(e instanceof EngineError && e.code === "cancelled")
    ? new EngineError("cancelled", "sandbox creation was cancelled")
    : toEngineError(e, "sandbox_failed");
}

/**
 * Fill a sandbox just made for a run (check its repository out); when that fails, kill the
 * sandbox and throw what a failed creation throws ({@link creationError}).
 */
export async function fillOrKill(
  sandbox: { kill(): Promise<void> },
  fill: () => Promise<Sandbox>,
  signal: AbortSignal | undefined,
): Promise<Sandbox> {
  try {
    return await fill();
  } catch (e) {
    await sandbox.kill();
    throw creationError(e, signal);
  }
}

/** A file name {@link Sandbox.copyIn} and {@link Sandbox.copyOut} accept: one plain name, no path. */
export const SCRATCH_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function checkScratchName(name: string): void {
  if (!SCRATCH_NAME.test(name))
    throw new EngineError("sandbox_failed", `${JSON.stringify(name)} is not a scratch file name`);
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** True when the command was killed for running past `timeoutMs`. */
  timedOut?: boolean;
}

export interface ExecOptions {
  /** Working directory inside the sandbox; defaults to the workdir. */
  cwd?: string;
  /** Extra environment. The sandbox never inherits Patchbay's own environment. */
  env?: Record<string, string>;
  timeoutMs?: number;
  /** Output kept per stream (the last bytes win); default 1 MB. */
  maxOutputBytes?: number;
  stdin?: string;
  /**
   * Stops the command (and everything it started) when aborted; the result then reads as
   * killed. Providers that can (local, bwrap); others let the command run to its end.
   */
  signal?: AbortSignal;
  /**
   * TCP ports a spawned server listens on inside the sandbox that the engine reaches with
   * `endpoint` (needed where the sandbox has a network of its own: bwrap model-only).
   */
  ports?: number[];
}

/** A long-running process inside the sandbox. */
export interface ProcessHandle {
  readonly pid: number | undefined;
  /** Resolves when the process exits. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** Called with each chunk of stdout/stderr text. */
  onOutput(listener: (chunk: string, stream: "stdout" | "stderr") => void): void;
  /** Kill the process and everything it started; resolves when it is gone. */
  kill(): Promise<void>;
  /** Stop following the process and leave it running (sandboxes that outlive Patchbay). */
  detach?(): Promise<void>;
}

/** Credentials for git over HTTP, applied per command from the engine side, never stored in the workspace. */
export interface GitCredential {
  /** Value of an `Authorization` header (e.g. `Basic base64(x-access-token:TOKEN)`). */
  authorizationHeader: string;
}

export interface SandboxCreateOptions {
  runId: string;
  ownerId: string;
  repository: {
    fullName: string;
    /** `${PATCHBAY_GIT_BASE_URL}/owner/name.git` */
    cloneUrl: string;
  };
  /** Branch, tag or sha to check out; the default branch when unset. Already validated. */
  ref?: string;
  credential?: GitCredential;
  signal?: AbortSignal;
  /** Make the sandbox able to hold its run to `model-only` ({@link Sandbox.restrictNetwork}). */
  network?: SandboxNetwork;
  /**
   * Start from this snapshot (one {@link SandboxSnapshots.take} made) instead of the bare
   * image, where the provider has snapshots; the repository is still checked out afresh.
   */
  fromSnapshot?: string;
}

/**
 * A sandbox whose whole state can be kept and later sandboxes started in it (E2B's
 * snapshots): setup's cache on such a provider keeps a snapshot instead of an archive.
 */
export interface SandboxSnapshots {
  /** The snapshot this sandbox was started from, if any. */
  readonly from: string | undefined;
  /** Snapshot the sandbox as it is now (it keeps running); the snapshot's id. */
  take(): Promise<string>;
}

/** A sandbox whose agent reaches the model gateway and nothing else. */
export interface SandboxNetwork {
  policy: "model-only";
  /** The gateway's port on the engine's loopback: the one thing its servers reach. */
  gatewayPort: number;
}

/**
 * How a new Patchbay process reaches a sandbox again, for providers whose sandboxes outlive
 * the process that made them (e2b). The engine stores it sealed with the run: it leads to
 * the run's workspace.
 */
export const SandboxResume = z.object({
  provider: z.literal("e2b"),
  /** The provider's own id of the sandbox. */
  sandboxId: z.string(),
  baseSha: z.string(),
  baseRef: z.string(),
});
export type SandboxResume = z.infer<typeof SandboxResume>;

/**
 * What a hibernated sandbox keeps and how it is reached again ({@link SandboxProvider.wake}):
 * a host sandbox's directory (its processes stopped), or a paused e2b VM (memory and files).
 * Stored sealed with the run, so any later process can wake or discard it.
 */
export const KeptSandbox = z.discriminatedUnion("provider", [
  SandboxResume,
  z.object({
    provider: z.enum(["local", "bwrap"]),
    baseSha: z.string(),
    baseRef: z.string(),
    /** Made with `network: model-only`: woken with only the gateway bridged in again. */
    modelOnly: z.boolean().optional(),
  }),
]);
export type KeptSandbox = z.infer<typeof KeptSandbox>;

export interface Sandbox {
  readonly id: string;
  readonly provider: "local" | "bwrap" | "e2b";
  /** Absolute path of the repository checkout, as seen inside the sandbox. */
  readonly workdir: string;
  /** The commit checked out at creation. */
  readonly baseSha: string;
  /** The ref that was checked out (the default branch name when none was asked). */
  readonly baseRef: string;
  /** Run a command (argument array, never a shell string) inside the sandbox. */
  exec(argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Start a long-running process inside the sandbox. */
  spawn(argv: string[], opts?: ExecOptions): ProcessHandle;
  /** A free TCP port inside the sandbox. */
  freePort(): Promise<number>;
  /** Base URL (no trailing slash) at which the engine reaches `port` inside the sandbox. */
  endpoint(port: number): Promise<string>;
  /** Base URL at which code inside the sandbox reaches `port` on the engine's loopback. */
  engineUrl(port: number): string;
  /** Address servers inside the sandbox listen on to be reachable by the engine (default 127.0.0.1). */
  readonly listenHost?: string;
  /**
   * A directory inside the sandbox, as its commands see it, through which the engine moves
   * files in and out (setup's cache layers). The sandbox's user can write it.
   */
  readonly scratchDir: string;
  /**
   * Copy the regular file `name` in {@link scratchDir} to `hostFile` on Patchbay's host. A
   * link, a directory or a missing file fails with sandbox_failed: nothing outside the file
   * the sandbox made is ever read.
   */
  copyOut(name: string, hostFile: string): Promise<void>;
  /** Copy `hostFile` into {@link scratchDir} as the new file `name`, readable by the sandbox's commands. */
  copyIn(hostFile: string, name: string): Promise<void>;
  /** Path of a tool's binary inside the sandbox, when the provider ships its own (e.g. an E2B template). */
  binaryPath?(name: "opencode"): string | undefined;
  /** PIDs of host processes this sandbox holds (for cleanup after a crash). */
  pids?(): number[];
  /** What {@link SandboxProvider.connect} needs to reach this sandbox again (providers that can). */
  resumeInfo?(): SandboxResume;
  /** A handle on a process an earlier Patchbay process started here (after `connect`). */
  reconnect?(pid: number): Promise<ProcessHandle>;
  /**
   * Let go of the sandbox and leave it running, for the next Patchbay process to `connect`
   * to (a graceful restart with idle sessions). Providers whose sandboxes outlive us only.
   */
  detach?(): Promise<void>;
  /**
   * From now on the sandbox's processes reach the model gateway and nothing else (sandboxes
   * made with `network`). Called once, after setup (which has network) and before the
   * agent's first prompt. Providers that can isolate only.
   */
  restrictNetwork?(): Promise<void>;
  /**
   * Snapshots of the sandbox (providers that have them), offered only by a sandbox made for
   * its run (`create`), where nothing but setup has run before its agent starts.
   */
  readonly snapshots?: SandboxSnapshots;
  /**
   * What {@link hibernate} keeps: `memory` (the VM is paused, its processes resume as they
   * were: e2b) or `files` (its processes stop: host sandboxes). Absent: it cannot hibernate.
   */
  readonly hibernation?: "memory" | "files";
  /**
   * Stop the sandbox and keep it on the provider's side (a host sandbox's directory, a paused
   * VM), letting go of it in this process; {@link SandboxProvider.wake} reaches it again.
   */
  hibernate?(): Promise<KeptSandbox>;
  /** Stop every process and delete the sandbox. Idempotent. */
  kill(): Promise<void>;
}

/**
 * A sandbox made before its run is known (a warm pool): its processes can run (an agent
 * server can start), its workspace is still empty.
 */
export interface WarmSandbox extends Omit<Sandbox, "baseSha" | "baseRef"> {
  /**
   * Check the run's repository out into the empty workspace; the sandbox then belongs to
   * `opts.runId` and is returned as a full Sandbox. Throws like `SandboxProvider.create`.
   * Host providers (`local`, `bwrap`) may be asked again: a sandbox adopted under its own id
   * (a warm pool's repository entry) is then renamed after the run and brought to its ref
   * (fetched from the mirror; only what differs moves); another repository is refused.
   */
  adopt(opts: SandboxCreateOptions): Promise<Sandbox>;
}

export interface SandboxProvider {
  readonly name: "local" | "bwrap" | "e2b";
  /** Create a sandbox with the repository checked out at the ref. Throws EngineError (clone_failed, invalid_ref, sandbox_failed). */
  create(opts: SandboxCreateOptions): Promise<Sandbox>;
  /** Make a sandbox with an empty workspace for a warm pool (providers that can). */
  prepare?(): Promise<WarmSandbox>;
  /**
   * Reach a live sandbox an earlier Patchbay process made for `runId` (after a restart, or on
   * another replica). With `network`, its egress is held to this process's gateway again.
   * Throws EngineError sandbox_failed when it is gone.
   */
  connect?(runId: string, resume: SandboxResume, opts?: { network?: SandboxNetwork }): Promise<Sandbox>;
  /** A hibernated sandbox again, running (providers whose sandboxes hibernate); sandbox_failed when it is gone. */
  wake?(runId: string, kept: KeptSandbox, opts?: { network?: SandboxNetwork }): Promise<Sandbox>;
  /** Delete a hibernated sandbox (one already gone is not an error). */
  discard?(runId: string, kept: KeptSandbox): Promise<void>;
  /**
   * Whether `wake` can reach this hibernated sandbox from here: a host sandbox lives in the
   * data dir of the replica that made it, not on another replica's machine. Absent: it can.
   */
  keeps?(runId: string, kept: KeptSandbox): boolean;
  /** Kill sandboxes no live run owns (after a restart). */
  reap?(liveRunIds: ReadonlySet<string>): Promise<void>;
  /** Delete a snapshot a sandbox of this provider took (one already gone is not an error). */
  dropSnapshot?(snapshotId: string): Promise<void>;
  close?(): Promise<void>;
}
