/**
 * A session on a started OpenCode server: turns run with `prompt_async` plus the event
 * stream (a synchronous prompt would hit Node's 300 s header timeout). Every OpenCode
 * server hands these out (per-run, warm, shared).
 *
 * A turn ends when OpenCode reports the session idle. A watchdog re-reads the session status
 * when the event stream goes silent (the SDK reconnects without replaying missed events),
 * and a turn timeout aborts the session and ends the turn as failed, never hung.
 */
import type { OpencodeClient } from "@opencode-ai/sdk/v2";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ProcessHandle } from "../sandbox/sandbox.ts";
import type { AgentSession, TurnOptions, TurnOutcome } from "./agent.ts";
import { PROVIDER_ID, turnTools } from "./opencode-config.ts";
import { createEventMapper, describeOpencodeError, OpencodeEvent } from "./opencode-events.ts";

/** Model failures OpenCode may retry before the turn fails with model_error. */
const MAX_MODEL_RETRIES = 2;

interface ActiveTurn {
  onEvent: TurnOptions["onEvent"];
  sawBusy: boolean;
  lastActivity: number;
  settle: (why: "idle" | "crashed" | "retries") => void;
  /** Last retry reason OpenCode reported (a failing model). */
  retryMessage?: string;
}

/**
 * How a session holds its OpenCode server: a process of its own (per-run and warm servers),
 * or its part of the shared server, which ends by releasing that part, never the process.
 */
export interface ServerHold {
  /** The server's pid, when it is the session's own (a remote one is known once it started). */
  readonly pid: number | undefined;
  /** Resolves when the server exits: a turn in progress crashes. */
  readonly exited: Promise<unknown>;
  /** End the session's hold: stop its own server, or release its part of a shared one. */
  release(): Promise<void>;
  /** Stop following and leave the server running (sandboxes that outlive Patchbay). */
  detach?(): Promise<void>;
}

/** The hold of a session on a server process of its own. */
export function ownServer(proc: ProcessHandle): ServerHold {
  return {
    get pid() {
      return proc.pid;
    },
    exited: proc.exited,
    release: () => proc.kill(),
    ...(proc.detach ? { detach: () => proc.detach!() } : {}),
  };
}

/** What {@link openSession} needs. */
interface OpenSessionInput {
  client: OpencodeClient;
  /** The session's server: its exit crashes the turn; `close()` ends the hold. */
  hold: ServerHold;
  workdir: string;
  modelId: string;
  watchdogMs: number;
  log: Logger;
  /** How the server is reached and what it calls, for `AgentSession.resume` (absent: the session cannot be taken over). */
  server?: { port: number; password: string; modelBaseUrl?: string };
  /** An existing session to continue (attach); a new one is created otherwise. */
  sessionId?: string;
  /**
   * Called with each other session created in the client's directory (the `task` tool's
   * subagents, `parentId` their parent's), whose model requests name their own session id.
   */
  onOtherSession?: (session: { id: string; parentId?: string }) => void;
}

/** Create a session in the client's directory; its id. */
export async function createSession(client: OpencodeClient, signal?: AbortSignal): Promise<string> {
  // A title up front spares a title-generation call to the model on the first prompt.
  const created = await client.session.create({ title: "Patchbay run" }, signal ? { signal } : {});
  if (!created.data)
    throw new EngineError("agent_failed", `could not create an OpenCode session: ${JSON.stringify(created.error)}`);
  return created.data.id;
}

/**
 * Follow a session on a started server and run turns on it: the `AgentSession` every
 * OpenCode driver hands out (per-run servers, warm ones, the shared one).
 */
export async function openSession(input: OpenSessionInput): Promise<AgentSession> {
  const { client, hold, log } = input;
  const sessionId = input.sessionId ?? (await createSession(client));
  const mapper = createEventMapper({ sessionId, workdir: input.workdir });

  /** The turn in progress, fed by the event loop. */
  const turnState: { active: ActiveTurn | null } = { active: null };
  let closed = false;
  let exited = false;

  const streamAbort = new AbortController();
  void hold.exited.then(() => {
    exited = true;
    turnState.active?.settle("crashed");
  });

  // One event subscription for the life of the server, shared by all turns.
  void (async () => {
    while (!closed && !exited) {
      try {
        const sub = await client.event.subscribe(undefined, { signal: streamAbort.signal, sseMaxRetryAttempts: 1 });
        for await (const raw of sub.stream) {
          const parsed = OpencodeEvent.safeParse(raw);
          if (parsed.success && parsed.data.type === "session.created" && input.onOtherSession) {
            const info = (parsed.data.properties as { info?: { id?: unknown; parentID?: unknown } }).info;
            if (typeof info?.id === "string" && info.id !== sessionId)
              input.onOtherSession({
                id: info.id,
                ...(typeof info.parentID === "string" ? { parentId: info.parentID } : {}),
              });
          }
          if (!parsed.success || !turnState.active) continue;
          const ev = parsed.data;
          turnState.active.lastActivity = Date.now();
          const sid = (ev.properties as { sessionID?: unknown }).sessionID;
          if (ev.type === "session.status" && sid === sessionId) {
            const status = (ev.properties as { status?: { type?: string; attempt?: number; message?: string } }).status;
            const type = status?.type;
            if (type === "busy" || type === "retry") turnState.active.sawBusy = true;
            // OpenCode retries a failing model with backoff for as long as it takes; a run
            // should fail with the model's message instead of waiting for the turn timeout.
            if (type === "retry") {
              turnState.active.retryMessage = status?.message ?? "the model keeps failing";
              if ((status?.attempt ?? 0) >= MAX_MODEL_RETRIES) turnState.active.settle("retries");
            }
            if (type === "idle" && turnState.active.sawBusy) turnState.active.settle("idle");
          } else if (ev.type === "session.idle" && sid === sessionId && turnState.active.sawBusy) {
            turnState.active.settle("idle");
          }
          for (const row of mapper.map(ev)) turnState.active?.onEvent(row);
        }
      } catch (e) {
        if (closed || exited) return;
        log.warn("opencode event stream broke; reconnecting", { error: e });
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  })();

  const pids = hold.pid ? [hold.pid] : [];

  const { server } = input;
  const session: AgentSession = {
    sessionId,
    pids,
    // Read when the engine stores it: a remote process's pid is known once it has started.
    get resume() {
      return server && hold.pid !== undefined ? { pid: hold.pid, ...server, sessionId } : undefined;
    },
    async runTurn(turn: TurnOptions): Promise<TurnOutcome> {
      if (turnState.active) throw new EngineError("session_busy", "a turn is already running on this session");
      if (exited) return { summary: "", error: { code: "agent_crashed", message: "the OpenCode server has exited" } };
      const startedAt = Date.now();
      let outcome: "idle" | "crashed" | "timeout" | "cancelled" | "retries" | undefined;
      let settle!: () => void;
      const finished = new Promise<void>((resolve) => (settle = resolve));
      const end = (why: NonNullable<typeof outcome>) => {
        outcome ??= why;
        settle();
      };
      turnState.active = { onEvent: turn.onEvent, sawBusy: false, lastActivity: Date.now(), settle: end };
      const timer = setTimeout(() => end("timeout"), turn.timeoutMs);
      const onAbort = () => end("cancelled");
      turn.signal?.addEventListener("abort", onAbort, { once: true });
      if (turn.signal?.aborted) end("cancelled");
      // Watchdog: when the event stream is silent, ask OpenCode for the status directly.
      const watchdog = setInterval(
        () => {
          const a = turnState.active;
          if (!a || Date.now() - a.lastActivity < input.watchdogMs) return;
          a.lastActivity = Date.now();
          void client.session.status().then(
            (res) => {
              const st = res.data?.[sessionId];
              if (!st || st.type === "idle") a.settle("idle");
            },
            (e: unknown) => log.warn("watchdog could not read session status", { error: e }),
          );
        },
        Math.max(100, Math.min(input.watchdogMs, 5000)),
      );
      const cleanup = () => {
        clearTimeout(timer);
        clearInterval(watchdog);
        turn.signal?.removeEventListener("abort", onAbort);
        turnState.active = null;
      };

      const sent = await client.session.promptAsync({
        sessionID: sessionId,
        parts: [
          { type: "text", text: turn.prompt },
          // Data URLs: the image travels with the prompt and never touches the workspace.
          ...(turn.images ?? []).map((img, i) => ({
            type: "file" as const,
            mime: img.mimeType,
            filename: `image-${i + 1}.${img.mimeType.slice("image/".length)}`,
            url: `data:${img.mimeType};base64,${img.data}`,
          })),
        ],
        model: { providerID: PROVIDER_ID, modelID: input.modelId },
        agent: turn.kind === "plan" ? "plan" : "build",
        tools: turnTools(turn.kind),
      });
      if (sent.error !== undefined || (sent.response && sent.response.status >= 300)) {
        cleanup();
        return {
          summary: "",
          error: { code: "agent_failed", message: `OpenCode refused the prompt: ${JSON.stringify(sent.error)}` },
        };
      }

      await finished;
      const retryMessage = turnState.active?.retryMessage;
      cleanup();

      if (outcome === "retries") {
        const message = retryMessage ?? "the model keeps failing";
        await abortQuietly(client, sessionId, log);
        return {
          summary: "",
          error: { code: "model_error", message: `the model failed ${MAX_MODEL_RETRIES} times: ${message}` },
        };
      }
      if (outcome === "crashed") {
        return { summary: "", error: { code: "agent_crashed", message: "the OpenCode server exited during the turn" } };
      }
      if (outcome === "timeout" || outcome === "cancelled") {
        await abortQuietly(client, sessionId, log);
        const summary = await lastAssistantText(client, sessionId, startedAt).then(
          (r) => r.summary,
          () => "",
        );
        return outcome === "timeout"
          ? { summary, error: { code: "turn_timeout", message: `the turn did not finish within ${turn.timeoutMs} ms` } }
          : { summary, error: { code: "cancelled", message: "the turn was cancelled" } };
      }
      const result = await lastAssistantText(client, sessionId, startedAt);
      if (result.error) return { summary: result.summary, error: { code: "model_error", message: result.error } };
      return { summary: result.summary };
    },
    async abort() {
      if (turnState.active) turnState.active.settle("idle");
      await abortQuietly(client, sessionId, log);
    },
    async close() {
      if (closed) return;
      closed = true;
      turnState.active?.settle("crashed");
      streamAbort.abort();
      await hold.release();
    },
    ...(hold.detach
      ? {
          async detach() {
            if (closed) return;
            closed = true;
            turnState.active?.settle("crashed");
            streamAbort.abort();
            await hold.detach!();
          },
        }
      : {}),
  };
  return session;
}

/** Abort the session's turn, if any; failures are logged, never thrown. */
export async function abortQuietly(
  client: OpencodeClient,
  sessionId: string,
  log: Logger,
  signal?: AbortSignal,
): Promise<void> {
  try {
    await client.session.abort({ sessionID: sessionId }, signal ? { signal } : {});
  } catch (e) {
    log.warn("could not abort the OpenCode session", { error: e });
  }
}

/** The final text of the turn's last assistant message, and its error if it failed. */
async function lastAssistantText(
  client: OpencodeClient,
  sessionId: string,
  since: number,
): Promise<{ summary: string; error?: string }> {
  const res = await client.session.messages({ sessionID: sessionId });
  const messages = res.data ?? [];
  const turnMessages = messages.filter((m) => m.info.role === "assistant" && m.info.time.created >= since - 1000);
  const last = turnMessages.at(-1);
  if (!last) return { summary: "", error: "the model produced no answer" };
  const summary = last.parts
    .filter((p) => p.type === "text" && !(p as { synthetic?: boolean }).synthetic)
    .map((p) => (p as { text: string }).text)
    .join("\n")
    .trim();
  const err = last.info.role === "assistant" ? last.info.error : undefined;
  if (err) {
    const { name, message } = describeOpencodeError(err);
    if (name !== "MessageAbortedError") return { summary, error: `${name}: ${message}` };
  }
  return { summary };
}
