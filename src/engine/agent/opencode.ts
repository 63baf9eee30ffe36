/**
 * The OpenCode agent driver: starts `opencode serve` inside a sandbox with a generated
 * password and config, creates one session, and runs turns on it with `prompt_async` plus
 * the event stream (a synchronous prompt would hit Node's 300 s header timeout).
 *
 * A turn ends when OpenCode reports the session idle. A watchdog re-reads the session status
 * when the event stream goes silent (the SDK reconnects without replaying missed events),
 * and a turn timeout aborts the session and ends the turn as failed, never hung.
 */
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { createOpencodeClient, type OpencodeClient } from "@opencode-ai/sdk/v2";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type { ProcessHandle, Sandbox, WarmSandbox } from "../sandbox/sandbox.ts";
import type {
  AgentAttachOptions,
  AgentDriver,
  AgentSession,
  AgentStartOptions,
  PrestartedAgent,
  TurnOptions,
  TurnOutcome,
} from "./agent.ts";
import { buildOpencodeConfig, opencodeEnv, PLAN_DISABLED_TOOLS, PROVIDER_ID } from "./opencode-config.ts";
import { createEventMapper, describeOpencodeError, OpencodeEvent } from "./opencode-events.ts";
import { skipPluginInstall } from "./opencode-home.ts";
import { warmUpOpencode, withWarmupModel } from "./opencode-warmup.ts";

/** Model failures OpenCode may retry before the turn fails with model_error. */
const MAX_MODEL_RETRIES = 2;

export interface OpencodeDriverOptions {
  /** Path of the `opencode` binary on the host; default: the one installed with Patchbay. */
  opencodeBin?: string;
  /** How long `opencode serve` may take to start listening. Default 60 s. */
  startTimeoutMs?: number;
  log?: Logger;
}

/** Path of the `opencode` binary that ships in the `opencode-ai` npm package. */
export function bundledOpencodeBin(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve("opencode-ai/package.json")), "bin", "opencode.exe");
}

/** The OpenCode driver: starts, takes over and prestarts servers. */
export type OpencodeDriver = Required<AgentDriver>;

/** A started `opencode serve`, listening, and how to reach it. */
export interface LaunchedServer {
  proc: ProcessHandle;
  port: number;
  password: string;
  baseUrl: string;
  headers: Record<string, string>;
}

/**
 * Start `opencode serve` in `sandbox` with `config` and a generated password, and wait until
 * it listens (the process is killed if it does not). Each driver's servers start here.
 */
export async function launchServer(
  sandbox: Sandbox | WarmSandbox,
  config: Record<string, unknown>,
  o: { opencodeBin: string | undefined; startTimeoutMs: number; log: Logger; signal?: AbortSignal },
): Promise<LaunchedServer> {
  const bin = sandbox.binaryPath?.("opencode") ?? o.opencodeBin ?? bundledOpencodeBin();
  const password = randomBytes(24).toString("base64url");
  // Spares the fresh home OpenCode's npm install of a plugin package nothing loads (see opencode-home.ts).
  const [port] = await Promise.all([sandbox.freePort(), skipPluginInstall(sandbox, o.log)]);
  const proc = sandbox.spawn([bin, "serve", `--hostname=${sandbox.listenHost ?? "127.0.0.1"}`, `--port=${port}`], {
    env: opencodeEnv(config, password),
  });
  try {
    await waitListening(proc, o.startTimeoutMs, o.signal);
    return { proc, port, password, baseUrl: await sandbox.endpoint(port), headers: basicAuth(password) };
  } catch (e) {
    await proc.kill();
    throw e;
  }
}

export function createOpencodeDriver(opts: OpencodeDriverOptions = {}): OpencodeDriver {
  const log = opts.log ?? silentLogger;
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  return {
    async attach(a: AgentAttachOptions): Promise<AgentSession> {
      const { sandbox, resume } = a;
      if (!sandbox.reconnect)
        throw new EngineError("agent_failed", `a ${sandbox.provider} sandbox cannot reconnect to its agent`);
      const proc = await sandbox.reconnect(resume.pid);
      const client = createOpencodeClient({
        baseUrl: await sandbox.endpoint(resume.port),
        directory: sandbox.workdir,
        headers: basicAuth(resume.password),
      });
      const signal = a.signal ?? AbortSignal.timeout(startTimeoutMs);
      // The server answers and still has the run's session (its history is the agent's memory).
      const found = await client.session.get({ sessionID: resume.sessionId }, { signal });
      if (!found.data)
        throw new EngineError(
          "agent_failed",
          `the OpenCode session ${resume.sessionId} is gone: ${JSON.stringify(found.error)}`,
        );
      // A turn the dead process was running has no one to report it: stop it.
      await abortQuietly(client, resume.sessionId, log, signal);
      return openSession({
        client,
        hold: ownServer(proc),
        workdir: sandbox.workdir,
        modelId: a.modelId,
        watchdogMs: a.watchdogMs,
        log: log.child({ sandbox: sandbox.id }),
        server: { port: resume.port, password: resume.password },
        sessionId: resume.sessionId,
      });
    },

    async prestart(pre): Promise<PrestartedAgent> {
      const { sandbox } = pre;
      const slog = log.child({ sandbox: sandbox.id });
      // The run's token and model are not known yet. OPENCODE_CONFIG_CONTENT wins over any
      // later config change, so they must be left out of it; `open` adds them through the
      // global config, which a directory's instance reads when it starts (measured with
      // opencode 1.18.33: an unknown model id fails, a model added this way works).
      const { server } = splitRunBinding(
        buildOpencodeConfig({ modelBaseUrl: pre.modelBaseUrl, modelToken: "unbound", modelId: "unbound" }),
      );
      const { proc, port, password, baseUrl, headers } = await launchServer(sandbox, withWarmupModel(server), {
        opencodeBin: opts.opencodeBin,
        startTimeoutMs,
        log: slog,
        ...(pre.signal ? { signal: pre.signal } : {}),
      });
      try {
        // The first prompt's lazy work, done here rather than after the run's POST. In the
        // sandbox's own workdir: the only directory every provider's sandbox has.
        await warmUpOpencode({
          client: createOpencodeClient({ baseUrl, headers }),
          directory: sandbox.workdir,
          log: slog,
          ...(pre.signal ? { signal: pre.signal } : {}),
        });
        if (pre.signal?.aborted) throw new EngineError("cancelled", "cancelled while the agent was starting");
      } catch (e) {
        await proc.kill();
        throw e;
      }
      return {
        pids: proc.pid ? [proc.pid] : [],
        async open(start): Promise<AgentSession> {
          const { binding } = splitRunBinding(
            buildOpencodeConfig({
              modelBaseUrl: pre.modelBaseUrl,
              modelToken: start.modelToken,
              modelId: start.modelId,
            }),
          );
          try {
            const updated = await createOpencodeClient({ baseUrl, headers }).global.config.update({
              config: binding as never,
            });
            if (updated.error !== undefined)
              throw new EngineError(
                "agent_failed",
                `OpenCode refused the run's model: ${JSON.stringify(updated.error)}`,
              );
            const client = createOpencodeClient({ baseUrl, directory: start.sandbox.workdir, headers });
            return await openSession({
              client,
              hold: ownServer(proc),
              workdir: start.sandbox.workdir,
              modelId: start.modelId,
              watchdogMs: start.watchdogMs,
              log: log.child({ sandbox: start.sandbox.id }),
              server: { port, password },
            });
          } catch (e) {
            await proc.kill();
            throw e;
          }
        },
        close: () => proc.kill(),
      };
    },

    async start(start: AgentStartOptions): Promise<AgentSession> {
      const { sandbox } = start;
      const alog = log.child({ sandbox: sandbox.id });
      const config = buildOpencodeConfig({
        modelBaseUrl: start.modelBaseUrl,
        modelToken: start.modelToken,
        modelId: start.modelId,
      });
      const { proc, port, password, baseUrl, headers } = await launchServer(sandbox, config, {
        opencodeBin: opts.opencodeBin,
        startTimeoutMs,
        log: alog,
        ...(start.signal ? { signal: start.signal } : {}),
      });
      const client = createOpencodeClient({ baseUrl, directory: sandbox.workdir, headers });
      try {
        return await openSession({
          client,
          hold: ownServer(proc),
          workdir: sandbox.workdir,
          modelId: start.modelId,
          watchdogMs: start.watchdogMs,
          log: alog,
          server: { port, password },
        });
      } catch (e) {
        await proc.kill();
        throw e;
      }
    },
  };
}

/**
 * Split a generated config into what a server can start with before its run is known and
 * the run's binding (token, model), which `PrestartedAgent.open` applies later.
 */
function splitRunBinding(full: Record<string, unknown>): {
  server: Record<string, unknown>;
  binding: Record<string, unknown>;
} {
  const { model, small_model, provider, ...rest } = full as {
    model: string;
    small_model: string;
    provider: Record<string, { options: Record<string, unknown>; models: Record<string, unknown> }>;
  };
  const own = provider[PROVIDER_ID]!;
  const { apiKey, ...options } = own.options;
  return {
    server: { ...rest, provider: { ...provider, [PROVIDER_ID]: { ...own, options, models: {} } } },
    binding: { model, small_model, provider: { [PROVIDER_ID]: { options: { apiKey }, models: own.models } } },
  };
}

/** Resolve when the server prints its "listening" line; fail on exit, timeout or abort. */
function waitListening(proc: ProcessHandle, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let output = "";
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onAbort = () => finish(new EngineError("cancelled", "cancelled while the agent was starting"));
    const timer = setTimeout(
      () =>
        finish(
          new EngineError(
            "agent_crashed",
            `opencode serve did not start within ${timeoutMs} ms: ${output.slice(-500)}`,
          ),
        ),
      timeoutMs,
    );
    signal?.addEventListener("abort", onAbort);
    proc.onOutput((chunk) => {
      output = (output + chunk).slice(-4000);
      if (/listening on https?:\/\//.test(output)) finish();
    });
    void proc.exited.then(({ code, signal: sig }) =>
      finish(
        new EngineError(
          "agent_crashed",
          `opencode serve exited (${code ?? sig}) before listening: ${output.slice(-500)}`,
        ),
      ),
    );
  });
}

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
  /** How the server is reached, for `AgentSession.resume` (absent: the session cannot be taken over). */
  server?: { port: number; password: string };
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

/** The Authorization header for a server started with `password`. */
function basicAuth(password: string): Record<string, string> {
  return { Authorization: `Basic ${Buffer.from(`opencode:${password}`).toString("base64")}` };
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
        parts: [{ type: "text", text: turn.prompt }],
        model: { providerID: PROVIDER_ID, modelID: input.modelId },
        agent: turn.kind === "plan" ? "plan" : "build",
        ...(turn.kind === "plan" ? { tools: PLAN_DISABLED_TOOLS } : {}),
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
