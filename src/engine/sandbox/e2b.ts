/**
 * The `e2b` sandbox provider: each run gets an E2B microVM (template `PATCHBAY_E2B_TEMPLATE`,
 * default `opencode`, see `e2b/README.md` for a faster template of our own).
 *
 *   - created with the run's metadata (`patchbayRunId`, `patchbayOwnerId`), so sandboxes a
 *     previous Patchbay process left can be found and killed (`reap`);
 *   - the repository is cloned inside the VM; the git credential comes from the engine for
 *     that one command (environment, never a file or a remote URL), so no long-lived token
 *     stays inside;
 *   - a VM lives a whole turn plus the idle session TTL past its last command, so an idle
 *     session stays warm until its expiry and no longer; `kill` ends it at endSession,
 *     cancel and expiry;
 *   - a VM outlives the Patchbay process that made it: after a restart, or on the replica that
 *     takes its run over, `connect` reaches it again by id (`Sandbox.connect`), so the run
 *     keeps its session;
 *   - a warm pool may keep VMs ready (`prepare`, opt-in: an idle VM is billed): made under
 *     a `warm_` id with an empty workspace, pushing their own end out while they wait, and
 *     given the run's repository by `adopt`.
 *
 * The VM itself is an `E2bSandbox` (`e2b-sandbox.ts`); the SDK is reached through the small
 * `E2bSdk` interface (`e2b-sdk.ts`).
 */
import { randomBytes } from "node:crypto";
import { EngineError, toEngineError } from "../errors.ts";
import { credentialEnv, validateRef, type GitRunner } from "../git/git.ts";
import { checkoutFromMirror } from "../git/mirror.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { E2B_PATHS, E2bSandbox } from "./e2b-sandbox.ts";
import { e2bSdk, type E2bSandboxHandle, type E2bSdk } from "./e2b-sdk.ts";
import {
  fillOrKill,
  type KeptSandbox,
  type Sandbox,
  type SandboxCreateOptions,
  type SandboxNetwork,
  type SandboxProvider,
  type SandboxResume,
  type WarmSandbox,
} from "./sandbox.ts";

// The SDK seam's types, for stand-ins in tests.
export type { E2bCommandHandle, E2bSandboxHandle, E2bSdk } from "./e2b-sdk.ts";

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

const METADATA_TAG = { patchbay: "1" };
/** Kept on top of the turn and idle time, so a slow last command never races the VM's end. */
const TIMEOUT_MARGIN_MS = 5 * 60_000;

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

  const newVm = async (id: string, ownerId: string, from = template): Promise<E2bSandbox> => {
    let handle: E2bSandboxHandle;
    try {
      handle = await sdk.create(from, {
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

  /**
   * A run's VM, from the snapshot asked for when it can be had (else from the template): the
   * snapshot's own workspace and mirror go, what setup's cache kept there stays.
   */
  const runVm = async (c: SandboxCreateOptions): Promise<E2bSandbox> => {
    let from: string | undefined;
    let sandbox: E2bSandbox | undefined;
    if (c.fromSnapshot) {
      try {
        sandbox = await newVm(c.runId, c.ownerId, c.fromSnapshot);
        from = c.fromSnapshot;
        const cleared = await sandbox.exec(
          ["rm", "-rf", "--", E2B_PATHS.workdir, E2B_PATHS.mirror, E2B_PATHS.scratch],
          {
            cwd: "/home/user",
          },
        );
        if (cleared.exitCode !== 0) throw new Error(cleared.stderr.trim());
      } catch (e) {
        // Deleted behind our back, or not usable: the template serves, and setup runs.
        log.warn("could not start from the setup snapshot; starting from the template", {
          runId: c.runId,
          snapshotId: c.fromSnapshot,
          error: e,
        });
        await sandbox?.kill();
        sandbox = undefined;
        from = undefined;
      }
    }
    sandbox ??= await newVm(c.runId, c.ownerId);
    const vm = sandbox;
    vm.snapshots = {
      from,
      take: async () => (await sdk.createSnapshot(vm.sandboxId, { apiKey: opts.apiKey })).snapshotId,
    };
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

  const provider: SandboxProvider = {
    name: "e2b",

    async create(c: SandboxCreateOptions): Promise<Sandbox> {
      if (c.signal?.aborted) throw new EngineError("cancelled", "sandbox creation was cancelled");
      const sandbox = await runVm(c);
      if (c.network) sandbox.holdToModelOnly();
      return fillOrKill(sandbox, () => checkout(sandbox, c), c.signal);
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
        adopt: (c: SandboxCreateOptions): Promise<Sandbox> =>
          fillOrKill(
            sandbox,
            async () => {
              live.delete(sandbox.id);
              sandbox.becomes(c.runId);
              live.set(c.runId, sandbox);
              if (c.network) sandbox.holdToModelOnly();
              return checkout(sandbox, c);
            },
            c.signal,
          ),
      });
    },

    async connect(runId: string, resume: SandboxResume, o: { network?: SandboxNetwork } = {}): Promise<Sandbox> {
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
      if (o.network) {
        // The VM's egress named the gateway of the process that made it; this one's may be elsewhere.
        sandbox.holdToModelOnly();
        try {
          await sandbox.restrictNetwork();
        } catch (e) {
          await sandbox.kill();
          throw e;
        }
      }
      log.info("e2b sandbox reattached", { runId, sandboxId: resume.sandboxId });
      return sandbox;
    },

    // Connecting to a paused VM resumes it, memory and all: its OpenCode server runs on.
    wake(runId: string, kept: KeptSandbox, o?: { network?: SandboxNetwork }): Promise<Sandbox> {
      if (kept.provider !== "e2b") throw new EngineError("sandbox_failed", `run ${runId} was not hibernated on e2b`);
      return provider.connect!(runId, kept, o);
    },

    async discard(runId: string, kept: KeptSandbox): Promise<void> {
      if (kept.provider !== "e2b") return;
      try {
        await sdk.kill(kept.sandboxId, { apiKey: opts.apiKey });
      } catch (e) {
        if (!/not.?found|404/i.test((e as Error).message)) throw e;
      }
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

    async dropSnapshot(snapshotId: string): Promise<void> {
      try {
        await sdk.deleteSnapshot(snapshotId, { apiKey: opts.apiKey });
      } catch (e) {
        if (!/not.?found|404/i.test((e as Error).message)) throw e;
      }
    },

    async close(): Promise<void> {
      await Promise.all([...live.values()].map((s) => s.kill()));
    },
  };
  return provider;
}
