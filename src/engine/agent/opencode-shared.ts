/**
 * The shared OpenCode server (PATCHBAY_SHARED_AGENT=1, `local` only): every run's agent is a
 * session on ONE `opencode serve` process, which serves each run's workspace as its own
 * directory (`x-opencode-directory`), instead of one server (~600 MB) per run. An extra
 * directory costs OpenCode an instance (~80 MB measured with opencode 1.18.33), not a process.
 *
 * What it trades: the runs' agents share a process, its HOME and its environment. Under
 * `local` they could already read each other's workspaces and processes; nothing else is lost.
 *
 * How runs stay apart without touching the server's config (any config change disposes
 * every instance, cutting the other runs' turns):
 *   - the server's config carries one gateway token, issued with `issueSharedToken`, and
 *     lists the models it serves (the default model plus PATCHBAY_MODELS);
 *   - OpenCode names the session in every model request (`X-Session-Id`); each run's session
 *     is bound at the gateway to the run's own token (`bindSession`), so the run's grant
 *     (models, key, metering) applies and revoking the run's token refuses its session;
 *   - a run asking for a model the server does not list gets its own server (the session
 *     host asks {@link SharedOpencodeServer.serves}), as without this option.
 *
 * The server lives in a sandbox the session host gives it (where the provider's `reap` finds
 * it after a crash). It starts with the first run and starts again with the next run after
 * it died.
 */
import path from "node:path";
import { createOpencodeClient, type OpencodeClient } from "@opencode-ai/sdk/v2";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { killStrays } from "../sandbox/process.ts";
import type { ProcessHandle, Sandbox } from "../sandbox/sandbox.ts";
import type { AgentSession, AgentStartOptions } from "./agent.ts";
import { launchServer } from "./opencode.ts";
import { abortQuietly, createSession, openSession } from "./opencode-session.ts";
import { buildOpencodeConfig } from "./opencode-config.ts";
import { warmUpOpencode, withWarmupModel } from "./opencode-warmup.ts";

/** What the shared server needs from the model gateway (`ModelGateway` has it). */
export interface SharedGateway {
  readonly port: number;
  /** `parentOf` answers a session's parent session id; the gateway binds a child to its parent's run. */
  issueSharedToken(opts?: { parentOf?: (sessionId: string) => Promise<string | undefined> }): string;
  bindSession(sharedToken: string, sessionId: string, runToken: string): void;
  unbindSession(sharedToken: string, sessionId: string): void;
  revokeToken(token: string): void;
}

/** Options for {@link createSharedOpencodeServer}. */
export interface SharedOpencodeServerOptions {
  /** The sandbox the server runs in (asked again when the server must start again). */
  sandbox: () => Promise<Sandbox>;
  gateway: SharedGateway;
  /** Model ids the server lists; the first is its default. */
  models: readonly string[];
  /** Models declared without image input (PATCHBAY_TEXT_ONLY_MODELS). */
  textOnlyModels?: readonly string[];
  /** Path of the `opencode` binary; default: the one installed with Patchbay. */
  opencodeBin?: string;
  /** How long `opencode serve` may take to start listening. Default 60 s. */
  startTimeoutMs?: number;
  /** Bound on each OpenCode call that ends a run's session. Default 5 s. */
  releaseTimeoutMs?: number;
  /** List the warm-up model too, for {@link SharedOpencodeServer.prebuild}. */
  warmable?: boolean;
  /**
   * The server serves one run and stops with it (a warm pool's repository entry): releasing
   * the run's part stops its turn but keeps its session in the sandbox's home (a hibernated
   * run continues it) and leaves the instance and processes to the server's and sandbox's end.
   */
  dedicated?: boolean;
  log?: Logger;
}

/** One `opencode serve` whose sessions are runs' agents. */
export interface SharedOpencodeServer {
  /** PID of the server while it runs (tests, benchmarks). */
  readonly serverPid: number | undefined;
  /** Whether the server lists `modelId`; a run with another model needs a server of its own. */
  serves(modelId: string): boolean;
  /**
   * Open a run's session in `opts.sandbox.workdir`, starting the server first when it is not
   * running. The session's `close()` releases the run's part; the server runs on.
   */
  open(opts: Omit<AgentStartOptions, "modelBaseUrl">): Promise<AgentSession>;
  /**
   * Start the server (when it is not running) and build OpenCode's instance for `directory`
   * ahead of its run, with the first prompt's lazy work done (a throw-away prompt; needs
   * `warmable`). Never throws for the warm-up itself; throws when the server cannot start.
   */
  prebuild(directory: string, signal?: AbortSignal): Promise<void>;
  /** Stop the server and revoke its token. Sessions still open crash. */
  close(): Promise<void>;
}

interface RunningServer {
  proc: ProcessHandle;
  baseUrl: string;
  headers: Record<string, string>;
}

interface RunPartInit {
  /** A client bound to the run's directory. */
  client: OpencodeClient;
  sessionId: string;
  workdir: string;
  runToken: string;
  sharedToken: string;
  gateway: SharedGateway;
  onReleased: () => void;
  /** Bound on each OpenCode call of `release`. */
  timeoutMs: number;
  /** See {@link SharedOpencodeServerOptions.dedicated}. */
  dedicated: boolean;
  log: Logger;
}

/** One run's part of the server: its directory's client and the sessions bound to its token. */
class RunPart {
  private readonly bound = new Set<string>();
  private released: Promise<void> | undefined;
  readonly client: OpencodeClient;
  constructor(private readonly o: RunPartInit) {
    this.client = o.client;
  }

  /** Count the session's model requests as the run's at the gateway. */
  bind(id: string): void {
    if (this.released) return;
    try {
      this.o.gateway.bindSession(this.o.sharedToken, id, this.o.runToken);
      this.bound.add(id);
    } catch (e) {
      // The run's token is gone: its session is ending, and its requests are refused.
      this.o.log.warn("could not bind an agent session at the gateway", { error: e });
    }
  }

  has(id: string): boolean {
    return this.bound.has(id);
  }

  /**
   * End the run's part: refuse its model requests, stop and delete its session, drop its
   * directory's instance (its memory, watchers, language servers), and kill what its tools
   * started in its sandbox. The server runs on. Idempotent; never throws.
   */
  release(): Promise<void> {
    return (this.released ??= (async () => {
      const { client, sessionId, workdir, log } = this.o;
      this.o.onReleased();
      for (const id of this.bound) this.o.gateway.unbindSession(this.o.sharedToken, id);
      this.bound.clear();
      const signal = () => AbortSignal.timeout(this.o.timeoutMs);
      await abortQuietly(client, sessionId, log, signal());
      if (this.o.dedicated) return;
      await client.session
        .delete({ sessionID: sessionId, directory: workdir }, { signal: signal() })
        .catch((e: unknown) => log.warn("could not delete the run's OpenCode session", { error: e }));
      await client.instance
        .dispose({ directory: workdir }, { signal: signal() })
        .catch((e: unknown) => log.warn("could not dispose the run's OpenCode instance", { error: e }));
      // The agent's bash commands are the server's children with their cwd in the run's
      // sandbox; the server's own cwd is in its sandbox, so it is never among them.
      killStrays(path.dirname(workdir), log);
    })());
  }
}

export function createSharedOpencodeServer(opts: SharedOpencodeServerOptions): SharedOpencodeServer {
  const log = (opts.log ?? silentLogger).child({ component: "shared-agent" });
  const { gateway, models } = opts;
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  const releaseTimeoutMs = opts.releaseTimeoutMs ?? 5000;
  if (models.length === 0) throw new TypeError("a shared agent server needs at least one model");
  let token: string | undefined;
  let current: RunningServer | undefined;
  let starting: Promise<RunningServer> | undefined;
  let closed = false;
  const parts = new Set<RunPart>();

  /**
   * The parent of a session the gateway has not seen bound (a subagent whose first model
   * request outran the session.created event that binds it), asked of the runs' directories.
   */
  const parentOf = async (sessionId: string): Promise<string | undefined> => {
    for (const part of parts) {
      const found = await part.client.session
        .get({ sessionID: sessionId }, { signal: AbortSignal.timeout(releaseTimeoutMs) })
        .catch(() => undefined);
      if (found?.data) return found.data.parentID;
    }
    return undefined;
  };

  const startServer = async (): Promise<RunningServer> => {
    const sandbox = await opts.sandbox();
    token ??= gateway.issueSharedToken({ parentOf });
    const listed = buildOpencodeConfig({
      modelBaseUrl: `${sandbox.engineUrl(gateway.port)}/v1`,
      modelToken: token,
      modelId: models[0]!,
      extraModelIds: models.slice(1),
      ...(opts.textOnlyModels?.length ? { textOnlyModels: opts.textOnlyModels } : {}),
    });
    const config = opts.warmable ? withWarmupModel(listed) : listed;
    const t0 = Date.now();
    const { proc, baseUrl, headers } = await launchServer(sandbox, config, {
      opencodeBin: opts.opencodeBin,
      startTimeoutMs,
      log,
    });
    const server: RunningServer = { proc, baseUrl, headers };
    void proc.exited.then(({ code, signal }) => {
      if (current === server) current = undefined;
      if (!closed) log.warn("the shared agent server exited; the next run starts it again", { code, signal });
    });
    log.info("shared agent server started", { pid: proc.pid, ms: Date.now() - t0, models });
    return server;
  };

  /** The running server, started (or started again after it died) when there is none. */
  const server = (): Promise<RunningServer> => {
    if (closed) return Promise.reject(new EngineError("shutting_down", "the shared agent server is closed"));
    if (current) return Promise.resolve(current);
    starting ??= startServer().then(
      (s) => {
        starting = undefined;
        if (closed) {
          void s.proc.kill();
          throw new EngineError("shutting_down", "the shared agent server is closed");
        }
        return (current = s);
      },
      (e: unknown) => {
        starting = undefined;
        throw e;
      },
    );
    return starting;
  };

  return {
    get serverPid() {
      return current?.proc.pid;
    },

    serves: (modelId) => models.includes(modelId),

    async prebuild(directory, signal) {
      const srv = await abortable(server(), signal);
      await warmUpOpencode({
        client: createOpencodeClient({ baseUrl: srv.baseUrl, headers: srv.headers }),
        directory,
        keepInstance: true,
        log,
        ...(signal ? { signal } : {}),
      });
    },

    async open(start): Promise<AgentSession> {
      // Other runs may wait for the same start: a run's cancel stops its wait, not the start.
      const srv = await abortable(server(), start.signal);
      const { sandbox } = start;
      const workdir = start.directory ?? sandbox.workdir;
      const alog = log.child({ sandbox: sandbox.id });
      const client = createOpencodeClient({ baseUrl: srv.baseUrl, directory: workdir, headers: srv.headers });
      const created = AbortSignal.timeout(startTimeoutMs);
      const sessionId = await createSession(client, start.signal ? AbortSignal.any([start.signal, created]) : created);
      const part: RunPart = new RunPart({
        client,
        sessionId,
        workdir,
        runToken: start.modelToken,
        sharedToken: token!,
        gateway,
        onReleased: () => parts.delete(part),
        timeoutMs: releaseTimeoutMs,
        dedicated: opts.dedicated === true,
        log: alog,
      });
      part.bind(sessionId);
      parts.add(part);
      try {
        return await openSession({
          client,
          // The server's exit crashes the run's turn; closing the session releases only its part.
          hold: { pid: undefined, exited: srv.proc.exited, release: () => part.release() },
          workdir,
          modelId: start.modelId,
          watchdogMs: start.watchdogMs,
          log: alog,
          sessionId,
          // A subagent's session (and its own subagents') is the run's: its requests name it.
          onOtherSession: (other) => {
            if (other.parentId !== undefined && part.has(other.parentId)) part.bind(other.id);
          },
        });
      } catch (e) {
        await part.release();
        throw e;
      }
    },

    async close() {
      if (closed) return;
      closed = true;
      const s = current ?? (await starting?.catch(() => undefined));
      current = undefined;
      await s?.proc.kill();
      if (token) gateway.revokeToken(token);
    },
  };
}

/** `p`, or a rejection with EngineError("cancelled") as soon as `signal` aborts. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(new EngineError("cancelled", "cancelled while the agent was starting"));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new EngineError("cancelled", "cancelled while the agent was starting"));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
