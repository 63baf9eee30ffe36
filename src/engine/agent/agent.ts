/**
 * The agent port: one coding agent (an OpenCode server and session) working in a sandbox.
 * Nothing outside `engine/agent` speaks OpenCode's API.
 */
import * as z from "zod";
import type { BuilderEventData } from "../events/schema.ts";
import type { TaskKind, Usage } from "../run/schema.ts";
import type { Sandbox, WarmSandbox } from "../sandbox/sandbox.ts";

export interface AgentStartOptions {
  sandbox: Sandbox;
  /** OpenAI-compatible base URL the agent calls (the engine's model gateway), as reachable from inside the sandbox. */
  modelBaseUrl: string;
  /** Per-run gateway token the agent sends as its API key. Worthless outside Patchbay. */
  modelToken: string;
  modelId: string;
  /** Silence on the event stream after which the session status is re-read. */
  watchdogMs: number;
  signal?: AbortSignal;
  /** The run's secrets: the server's process environment (its shell commands inherit it), never its config. */
  env?: Record<string, string>;
  /**
   * The directory the agent works in when it is not `sandbox.workdir`'s current path: a warm
   * pool's repository entry keeps the path its OpenCode instance was built for (a renamed
   * local sandbox leaves a link there), so the instance is not built again.
   */
  directory?: string;
  /**
   * Continue this session, which an earlier server in the same sandbox left in the sandbox's
   * home (a hibernated run), instead of opening a new one (drivers with `continuesSessions`).
   */
  sessionId?: string;
}

/** An image sent with a prompt (checked by the engine: type, size, magic number). */
export interface AgentImage {
  mimeType: string;
  /** Base64, without a data: prefix. */
  data: string;
}

export interface TurnOptions {
  prompt: string;
  /** Images the model sees with the prompt. */
  images?: readonly AgentImage[];
  kind: TaskKind;
  timeoutMs: number;
  onEvent: (event: BuilderEventData) => void;
  signal?: AbortSignal;
}

export interface TurnOutcome {
  /** The agent's final text. */
  summary: string;
  /** Set when the turn failed (model error, timeout, crash). */
  error?: { code: "model_error" | "turn_timeout" | "agent_crashed" | "agent_failed" | "cancelled"; message: string };
  usage?: Usage;
}

/**
 * What a new Patchbay process needs to take a running agent over (sandboxes that outlive
 * the process, e2b). Holds the server's password: stored sealed, never shown.
 */
export const AgentResume = z.object({
  /** The server's process inside the sandbox. */
  pid: z.number(),
  port: z.number(),
  password: z.string(),
  sessionId: z.string(),
  /**
   * The model base URL the server was started with (its config holds it). Absent in records
   * made before it was kept: such a server is taken over as it is.
   */
  modelBaseUrl: z.string().optional(),
});
export type AgentResume = z.infer<typeof AgentResume>;

export interface AgentAttachOptions {
  sandbox: Sandbox;
  resume: AgentResume;
  modelId: string;
  watchdogMs: number;
  signal?: AbortSignal;
  /**
   * How this process starts the run's server (its gateway URL, the run's token and secrets).
   * A server that calls another gateway URL (a replica that took the run over reaches its own
   * gateway elsewhere) is stopped, and one started with these continues its session.
   */
  rebind?: AgentStartOptions;
}

/** A started agent: one OpenCode server and one session, reused across turns. */
export interface AgentSession {
  readonly sessionId: string;
  /** How to take this agent over after a restart. */
  readonly resume?: AgentResume;
  /** PIDs of the processes the agent holds (for cleanup after a crash). */
  readonly pids: number[];
  runTurn(opts: TurnOptions): Promise<TurnOutcome>;
  /** Stop the current turn, if any. */
  abort(): Promise<void>;
  /** Stop the OpenCode server. Idempotent. */
  close(): Promise<void>;
  /** Stop following the session and leave the server running (for `attach` by a later process). */
  detach?(): Promise<void>;
}

/** Where and how to start an agent server before its run is known (a warm pool). */
export interface AgentPrestartOptions {
  /** A sandbox whose workspace is still empty. */
  sandbox: WarmSandbox;
  /** As in {@link AgentStartOptions}; fixed when the server starts. */
  modelBaseUrl: string;
  signal?: AbortSignal;
}

/** An agent server started before its run: no token, no model yet. */
export interface PrestartedAgent {
  /** PIDs of the server's processes. */
  readonly pids: number[];
  /**
   * Bind the server to a run (gateway token, model) and open the run's session in
   * `opts.sandbox.workdir`, the adopted sandbox. On failure the server is stopped.
   */
  open(opts: Omit<AgentStartOptions, "modelBaseUrl">): Promise<AgentSession>;
  /** Stop the server (when it is never handed to a run). */
  close(): Promise<void>;
}

export interface AgentDriver {
  start(opts: AgentStartOptions): Promise<AgentSession>;
  /** True when `start` can continue a session an earlier server left (`AgentStartOptions.sessionId`). */
  readonly continuesSessions?: boolean;
  /** Take over a server and session an earlier Patchbay process started (drivers that can). */
  attach?(opts: AgentAttachOptions): Promise<AgentSession>;
  /** Start a server ahead of its run; {@link PrestartedAgent.open} binds it (drivers that can). */
  prestart?(opts: AgentPrestartOptions): Promise<PrestartedAgent>;
}
