/**
 * The shared OpenCode driver (PATCHBAY_SHARED_AGENT=1, `local` only): every run's agent is a
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
 *   - a run asking for a model the server does not list gets its own server (the per-run
 *     driver), as without this option.
 *
 * The server lives in a sandbox of its own made from the seed repository
 * (`<dataDir>/sandboxes/shared_<random>/`), where the provider's `reap` finds it after a
 * crash. It starts with the first run and starts again with the next run after it died.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { createOpencodeClient, type OpencodeClient } from "@opencode-ai/sdk/v2";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { killStrays } from "../sandbox/process.ts";
import type { ProcessHandle, Sandbox, SandboxProvider } from "../sandbox/sandbox.ts";
import { ensureSeedRepository, SEED_REPOSITORY } from "../sandbox/seed.ts";
import type { AgentDriver, AgentSession, AgentStartOptions } from "./agent.ts";
import { abortQuietly, createSession, launchServer, openSession } from "./opencode.ts";
import { buildOpencodeConfig } from "./opencode-config.ts";

/** What the driver needs from the model gateway (`ModelGateway` has it). */
export interface SessionGateway {
  readonly port: number;
  issueSharedToken(opts?: { parentOf?: (sessionId: string) => Promise<string | undefined> }): string;
  bindSession(sharedToken: string, sessionId: string, runToken: string): void;
  unbindSession(sharedToken: string, sessionId: string): void;
  revokeToken(token: string): void;
}

/** Options for {@link createSharedOpencodeDriver}. */
export interface SharedOpencodeDriverOptions {
  /** The `local` provider: makes the server's own sandbox. */
  provider: SandboxProvider;
  gateway: SessionGateway;
  /** Starts a server of its own for a run whose model the shared server does not list. */
  fallback: AgentDriver;
  /** Model ids the shared server lists; the first is its default. */
  models: readonly string[];
  /** Patchbay's data dir (the seed repository). */
  dataDir: string;
  /** Path of the `opencode` binary; default: the one installed with Patchbay. */
  opencodeBin?: string;
  /** How long `opencode serve` may take to start listening. Default 60 s. */
  startTimeoutMs?: number;
  /** Bound on each OpenCode call that ends a run's session. Default 5 s. */
  releaseTimeoutMs?: number;
  log?: Logger;
}

/** The shared driver: an `AgentDriver` plus the server it owns. */
export interface SharedOpencodeDriver extends AgentDriver {
  /** PID of the shared server while it runs (tests, benchmarks). */
  readonly serverPid: number | undefined;
  /** Stop the shared server and remove its sandbox. Sessions still open crash. */
  close(): Promise<void>;
}

interface SharedServer {
  proc: ProcessHandle;
  baseUrl: string;
  headers: Record<string, string>;
}

export function createSharedOpencodeDriver(opts: SharedOpencodeDriverOptions): SharedOpencodeDriver {
  const log = (opts.log ?? silentLogger).child({ component: "shared-agent" });
  const { provider, gateway, models } = opts;
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  const releaseTimeoutMs = opts.releaseTimeoutMs ?? 5000;
  if (models.length === 0) throw new TypeError("a shared agent server needs at least one model");
  let host: Promise<Sandbox> | undefined;
  let token: string | undefined;
  let current: SharedServer | undefined;
  let starting: Promise<SharedServer> | undefined;
  let closed = false;
  /** Runs on the server now: their client (bound to their directory), token and bound sessions. */
  const runs = new Set<{ client: OpencodeClient; runToken: string; bound: Set<string>; bind(id: string): void }>();

  /**
   * The parent of a session the gateway has not seen bound (a subagent whose first model
   * request outran the session.created event that binds it), asked of each run's directory.
   * The gateway binds the session when that parent is bound to a live run.
   */
  const parentOf = async (sessionId: string): Promise<string | undefined> => {
    for (const run of runs) {
      const found = await run.client.session
        .get({ sessionID: sessionId }, { signal: AbortSignal.timeout(releaseTimeoutMs) })
        .catch(() => undefined);
      if (found?.data) return found.data.parentID;
    }
    return undefined;
  };

  const hostSandbox = (): Promise<Sandbox> =>
    (host ??= (async () =>
      provider.create({
        runId: `shared_${randomBytes(6).toString("hex")}`,
        ownerId: "patchbay",
        repository: { fullName: SEED_REPOSITORY, cloneUrl: await ensureSeedRepository(opts.dataDir) },
      }))().catch((e: unknown) => {
      host = undefined;
      throw e;
    }));

  const startServer = async (): Promise<SharedServer> => {
    const sandbox = await hostSandbox();
    token ??= gateway.issueSharedToken({ parentOf });
    const config = buildOpencodeConfig({
      modelBaseUrl: `${sandbox.engineUrl(gateway.port)}/v1`,
      modelToken: token,
      modelId: models[0]!,
      extraModelIds: models.slice(1),
    });
    const t0 = Date.now();
    const { proc, baseUrl, headers } = await launchServer(sandbox, config, {
      opencodeBin: opts.opencodeBin,
      startTimeoutMs,
      log,
    });
    const server: SharedServer = { proc, baseUrl, headers };
    void proc.exited.then(({ code, signal }) => {
      if (current === server) current = undefined;
      if (!closed) log.warn("the shared agent server exited; the next run starts it again", { code, signal });
    });
    log.info("shared agent server started", { pid: proc.pid, ms: Date.now() - t0, models });
    return server;
  };

  /** The running server, started (or started again after it died) when there is none. */
  const server = (): Promise<SharedServer> => {
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

    async start(start: AgentStartOptions): Promise<AgentSession> {
      if (!models.includes(start.modelId) || start.sandbox.provider !== "local") {
        log.info("the shared agent server does not list this run's model; starting a server for the run", {
          sandbox: start.sandbox.id,
          model: start.modelId,
        });
        return opts.fallback.start(start);
      }
      // Other runs may wait for the same start: a run's cancel stops its wait, not the start.
      const srv = await abortable(server(), start.signal);
      const sharedToken = token!;
      const { sandbox } = start;
      const alog = log.child({ sandbox: sandbox.id });
      const client = createOpencodeClient({ baseUrl: srv.baseUrl, directory: sandbox.workdir, headers: srv.headers });
      const created = AbortSignal.timeout(startTimeoutMs);
      const sessionId = await createSession(client, start.signal ? AbortSignal.any([start.signal, created]) : created);
      const bound = new Set<string>();
      const bind = (id: string) => {
        try {
          gateway.bindSession(sharedToken, id, start.modelToken);
          bound.add(id);
        } catch (e) {
          // The run's token is gone: its session is ending, and its requests are refused.
          alog.warn("could not bind an agent session at the gateway", { error: e });
        }
      };
      bind(sessionId);
      const run = { client, runToken: start.modelToken, bound, bind };
      runs.add(run);
      let released: Promise<void> | undefined;
      // The session's view of the server: its exit crashes the run's turn, and "killing" it
      // ends only the run's part of it.
      const proc: ProcessHandle = {
        pid: undefined,
        exited: srv.proc.exited,
        onOutput() {},
        kill: () =>
          (released ??= release({
            client,
            sessionId,
            workdir: sandbox.workdir,
            unbind: () => {
              runs.delete(run);
              for (const id of bound) gateway.unbindSession(sharedToken, id);
              bound.clear();
            },
            timeoutMs: releaseTimeoutMs,
            log: alog,
          })),
      };
      try {
        return await openSession({
          client,
          proc,
          workdir: sandbox.workdir,
          modelId: start.modelId,
          watchdogMs: start.watchdogMs,
          log: alog,
          sessionId,
          // A subagent's session (and its own subagents') is the run's: its requests name it.
          onOtherSession: (other) => {
            if (other.parentId !== undefined && bound.has(other.parentId)) bind(other.id);
          },
        });
      } catch (e) {
        await proc.kill();
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
      const sandbox = await host?.catch(() => undefined);
      await sandbox?.kill();
    },
  };
}

interface ReleaseInput {
  client: OpencodeClient;
  sessionId: string;
  workdir: string;
  unbind: () => void;
  timeoutMs: number;
  log: Logger;
}

/**
 * End one run's part of the shared server: refuse its model requests, stop and delete its
 * session, drop its directory's instance (its memory, watchers, language servers), and kill
 * what its tools started in its sandbox. The server itself runs on. Never throws.
 */
async function release(r: ReleaseInput): Promise<void> {
  r.unbind();
  const signal = () => AbortSignal.timeout(r.timeoutMs);
  await abortQuietly(r.client, r.sessionId, r.log, signal());
  await r.client.session
    .delete({ sessionID: r.sessionId, directory: r.workdir }, { signal: signal() })
    .catch((e: unknown) => r.log.warn("could not delete the run's OpenCode session", { error: e }));
  await r.client.instance
    .dispose({ directory: r.workdir }, { signal: signal() })
    .catch((e: unknown) => r.log.warn("could not dispose the run's OpenCode instance", { error: e }));
  // The agent's bash commands are the server's children with their cwd in the run's
  // sandbox; the server's own cwd is in its sandbox, so it is never among them.
  killStrays(path.dirname(r.workdir), r.log);
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
