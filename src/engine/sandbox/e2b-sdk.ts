/**
 * The seam between the `e2b` provider and E2B's SDK: the small part of the SDK the provider
 * uses, as interfaces, and the real SDK behind them (`e2bSdk()`). Tests put a stand-in
 * behind the same interfaces, since E2B's cloud cannot be reached from CI.
 */

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
  /** The VM's filesystem (files the engine moves in and out: setup's cache layers). */
  files: {
    read(path: string, opts: { format: "stream" }): Promise<ReadableStream<Uint8Array>>;
    write(path: string, data: Blob): Promise<unknown>;
  };
  getHost(port: number): string;
  /** Replace the VM's egress rules (E2B's network controls); the SDK's `updateNetwork`. */
  updateNetwork?(network: E2bNetworkRules): Promise<void>;
  setTimeout(timeoutMs: number): Promise<void>;
  /** Pause the VM keeping its memory and files (E2B persistence); `E2bSdk.connect` resumes it. */
  pause(): Promise<unknown>;
  kill(): Promise<unknown>;
}

/** Egress rules of a VM: hosts or CIDRs let out, and what is refused (`0.0.0.0/0`: everything else). */
export interface E2bNetworkRules {
  allowOut?: string[];
  denyOut?: string[];
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
  /** Snapshot a running sandbox (it is paused for a moment and goes on); `create(snapshotId)` starts from it. */
  createSnapshot(sandboxId: string, opts: { apiKey: string }): Promise<{ snapshotId: string }>;
  /** Delete a snapshot. */
  deleteSnapshot(snapshotId: string, opts: { apiKey: string }): Promise<unknown>;
}

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
    async createSnapshot(id, opts) {
      const { Sandbox } = await load();
      const { snapshotId } = await Sandbox.createSnapshot(id, opts);
      return { snapshotId };
    },
    async deleteSnapshot(snapshotId, opts) {
      const { Sandbox } = await load();
      return Sandbox.deleteSnapshot(snapshotId, opts);
    },
  };
}
