/**
 * The session host port: what a run gets to work in, its sandbox and its agent, opened
 * together and ended together. The engine calls only this port, never a sandbox provider or
 * an agent driver. Implementations side by side: `cold.ts` (a sandbox and an agent server
 * per run, made when the run asks), `pooled.ts` (taken from a warm pool), `shared.ts` (one
 * agent server whose sessions are the runs' agents); `index.ts` picks one from the config.
 */
import * as z from "zod";
import { AgentResume, type AgentSession } from "../agent/agent.ts";
import type { NetworkPolicy } from "../environment/schema.ts";
import { KeptSandbox, SandboxResume, type GitCredential, type Sandbox } from "../sandbox/sandbox.ts";

/**
 * What a later Patchbay process needs to take a session over (hosts whose sandboxes outlive
 * this process: e2b). Holds the agent's password and the gateway token: stored sealed.
 */
export const SessionResume = z.object({ sandbox: SandboxResume, agent: AgentResume, token: z.string() });
export type SessionResume = z.infer<typeof SessionResume>;

/**
 * A hibernated session: nothing of it runs, everything it needs to continue is kept (the
 * sandbox's files with OpenCode's session store, or a paused VM with its server in memory).
 * Stored sealed with the run (the gateway token), so a restarted Patchbay keeps it too.
 */
export const HibernatedSession = z.object({
  sandbox: KeptSandbox,
  /** The OpenCode session the next server continues. */
  sessionId: z.string(),
  /** The server itself, when the sandbox kept it in memory (a paused VM): taken back as after a restart. */
  server: AgentResume.optional(),
  token: z.string(),
});
export type HibernatedSession = z.infer<typeof HibernatedSession>;

export interface SessionWakeOptions {
  modelId: string;
  /** The run's secrets, for a new agent server's environment (as at `open`). */
  env?: Record<string, string>;
  network?: NetworkPolicy;
  watchdogMs: number;
  signal: AbortSignal;
}

export interface SessionOpenOptions {
  runId: string;
  ownerId: string;
  repository: { fullName: string; cloneUrl: string };
  /** Branch, tag or sha to check out; the default branch when unset. Already validated. */
  ref?: string;
  /** Used per git command, never stored. */
  credential?: GitCredential;
  modelId: string;
  /** The run's gateway token, issued by the engine before `open`. */
  token: string;
  /**
   * The run's secrets, for the agent's own shell commands: they go into the agent server's
   * process environment (which OpenCode's bash tool inherits), never into its config. A host
   * whose servers start before their run (pooled) or serve many runs (shared) opens such a
   * run with a server of its own.
   */
  env?: Record<string, string>;
  /** `model-only`: the sandbox is made with its network closed to all but the gateway (default open). */
  network?: NetworkPolicy;
  /** Silence on the agent's event stream after which its status is re-read. */
  watchdogMs: number;
  signal: AbortSignal;
  /** A snapshot to start the sandbox from (setup's cache on providers with snapshots); hosts that make sandboxes per run. */
  fromSnapshot?: string;
  /** Progress lines for the run's event log ("preparing sandbox", "starting agent"). */
  onLog?: (message: string) => void;
  /**
   * Work on the new sandbox the agent does not need in order to start (the run's setup), run
   * beside the agent's start; `open` resolves when both are done and fails when either does
   * (the session is then closed). Never called for a session taken back after a restart.
   */
  prepare?: PrepareWorkspace;
}

/**
 * The run's setup on its new sandbox. It calls `workspaceReady` once the workspace holds what
 * the agent should find from its start (a restored layer), or before work the agent can run
 * beside (a setup's commands); a host whose agent server is already running opens the agent
 * in the run's directory only then (session/run-session.ts `agentIn`).
 */
export type PrepareWorkspace = (sandbox: Sandbox, workspaceReady: () => void) => Promise<void>;

/** A run's sandbox and agent, opened together and ended together. */
export interface RunSession {
  readonly sandbox: Sandbox;
  readonly agent: AgentSession;
  /** What a later process needs to take this session over (hosts whose sandboxes outlive us: e2b). */
  readonly resume?: SessionResume;
  /** Stop the agent and kill the sandbox, every process with it. Idempotent; never throws. */
  close(): Promise<void>;
  /** Leave it running for a later process to reattach (e2b only). */
  detach?(): Promise<void>;
  /**
   * Stop it and keep what it needs to continue (hosts that can; {@link SessionHost.wake}).
   * The session is then over in this process, as after `close`, but nothing is deleted.
   */
  hibernate?(): Promise<HibernatedSession>;
}

export interface SessionReattachOptions {
  modelId: string;
  /** The run's secrets, for an agent server started anew (one that called another replica's gateway). */
  env?: Record<string, string>;
  /** `model-only`: the sandbox's egress is held to this process's gateway again. */
  network?: NetworkPolicy;
  watchdogMs: number;
  signal: AbortSignal;
}

export interface SessionHost {
  readonly provider: "local" | "bwrap" | "e2b";
  /** Open a run's session. Throws EngineError (clone_failed, invalid_ref, sandbox_failed, cancelled, agent_*). */
  open(opts: SessionOpenOptions): Promise<RunSession>;
  /** Take back a session an earlier process left (throws when it cannot). Hosts that can only. */
  reattach?(runId: string, resume: SessionResume, opts: SessionReattachOptions): Promise<RunSession>;
  /** A hibernated session running again, the same agent session continued (hosts whose sessions hibernate). */
  wake?(runId: string, hibernated: HibernatedSession, opts: SessionWakeOptions): Promise<RunSession>;
  /** Delete what a hibernated session kept (its sandbox). Never throws. */
  discard?(runId: string, hibernated: HibernatedSession): Promise<void>;
  /** Whether `wake` can reach what it kept from this process (not another replica's machine). */
  keeps?(runId: string, hibernated: HibernatedSession): boolean;
  /** After a turn of a run ends (the machine is quieter): a pooled host refills here. */
  turnEnded?(runId: string): void;
  /** Kill sandboxes no live run owns (after a restart), then start background work (pool fill). */
  start(liveRunIds: ReadonlySet<string>): Promise<void>;
  /** Delete a snapshot one of its sandboxes took (setup's cache, providers with snapshots). */
  dropSnapshot?(snapshotId: string): Promise<void>;
  /** Stop background work, kill what no run was given, close the provider. */
  close(): Promise<void>;
}
