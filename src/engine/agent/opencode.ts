/**
 * The OpenCode agent driver: starts `opencode serve` inside a sandbox with a generated
 * password and config (per run, or ahead of its run for a warm pool), or takes over one an
 * earlier process started; the session on it is `opencode-session.ts`.
 */
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { createOpencodeClient, type OpencodeClient } from "@opencode-ai/sdk/v2";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type { ProcessHandle, Sandbox, WarmSandbox } from "../sandbox/sandbox.ts";
import type { AgentAttachOptions, AgentDriver, AgentSession, AgentStartOptions, PrestartedAgent } from "./agent.ts";
import { buildOpencodeConfig, opencodeEnv, PROVIDER_ID } from "./opencode-config.ts";
import { skipPluginInstall } from "./opencode-home.ts";
import { abortQuietly, openSession, ownServer } from "./opencode-session.ts";
import { warmUpOpencode, withWarmupModel } from "./opencode-warmup.ts";

export interface OpencodeDriverOptions {
  /** Path of the `opencode` binary on the host; default: the one installed with Patchbay. */
  opencodeBin?: string;
  /** How long `opencode serve` may take to start listening. Default 60 s. */
  startTimeoutMs?: number;
  /** Models declared to OpenCode without image input (PATCHBAY_TEXT_ONLY_MODELS). */
  textOnlyModels?: readonly string[];
  log?: Logger;
}

/** Path of the `opencode` binary that ships in the `opencode-ai` npm package. */
export function bundledOpencodeBin(): string {
  const require = createRequire(import.meta.url);
  return path.join(path.dirname(require.resolve("opencode-ai/package.json")), "bin", "opencode.exe");
}

/** The OpenCode driver: starts, takes over and prestarts servers. */
export type OpencodeDriver = Required<AgentDriver>;

/** Fails with agent_failed unless the server holds `sessionId` (its history is the agent's memory). */
async function assertSession(client: OpencodeClient, sessionId: string, signal: AbortSignal): Promise<void> {
  const found = await client.session.get({ sessionID: sessionId }, { signal });
  if (!found.data)
    throw new EngineError("agent_failed", `the OpenCode session ${sessionId} is gone: ${JSON.stringify(found.error)}`);
}

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
  o: {
    opencodeBin: string | undefined;
    startTimeoutMs: number;
    log: Logger;
    signal?: AbortSignal;
    /** The run's secrets; OpenCode's own variables are set after them and win. */
    env?: Record<string, string>;
    /** The home an earlier server of this sandbox prepared (a woken session): nothing to do there. */
    homePrepared?: boolean;
  },
): Promise<LaunchedServer> {
  const bin = sandbox.binaryPath?.("opencode") ?? o.opencodeBin ?? bundledOpencodeBin();
  const password = randomBytes(24).toString("base64url");
  // Spares the fresh home OpenCode's npm install of a plugin package nothing loads (see opencode-home.ts).
  if (!o.homePrepared) await skipPluginInstall(sandbox, o.log);
  for (let attempt = 1; ; attempt++) {
    // A port free when asked may be taken by another process before OpenCode binds it (many
    // servers start at once on a busy host): OpenCode then exits with a ServeError; try another.
    const port = await sandbox.freePort();
    const proc = sandbox.spawn([bin, "serve", `--hostname=${sandbox.listenHost ?? "127.0.0.1"}`, `--port=${port}`], {
      env: { ...o.env, ...opencodeEnv(config, password) },
      ports: [port],
    });
    try {
      await waitListening(proc, o.startTimeoutMs, o.signal);
      return { proc, port, password, baseUrl: await sandbox.endpoint(port), headers: basicAuth(password) };
    } catch (e) {
      await proc.kill();
      const taken = e instanceof EngineError && /before listening: [\s\S]*ServeError/.test(e.message);
      if (!taken || attempt >= PORT_ATTEMPTS) throw e;
      o.log.warn("opencode serve could not bind its port; trying another", { port, attempt });
    }
  }
}

/** Starts of `opencode serve` tried when the port it was given is taken meanwhile. */
const PORT_ATTEMPTS = 3;

export function createOpencodeDriver(opts: OpencodeDriverOptions = {}): OpencodeDriver {
  const log = opts.log ?? silentLogger;
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  const textOnly = opts.textOnlyModels?.length ? { textOnlyModels: opts.textOnlyModels } : {};
  async function startAgent(start: AgentStartOptions): Promise<AgentSession> {
    const { sandbox } = start;
    const alog = log.child({ sandbox: sandbox.id });
    const config = buildOpencodeConfig({
      modelBaseUrl: start.modelBaseUrl,
      modelToken: start.modelToken,
      modelId: start.modelId,
      ...textOnly,
    });
    const { proc, port, password, baseUrl, headers } = await launchServer(sandbox, config, {
      opencodeBin: opts.opencodeBin,
      startTimeoutMs,
      log: alog,
      ...(start.signal ? { signal: start.signal } : {}),
      ...(start.env ? { env: start.env } : {}),
      // A session to continue lives in a home the server that began it prepared.
      ...(start.sessionId ? { homePrepared: true } : {}),
    });
    const client = createOpencodeClient({ baseUrl, directory: sandbox.workdir, headers });
    try {
      if (start.sessionId)
        await assertSession(client, start.sessionId, start.signal ?? AbortSignal.timeout(startTimeoutMs));
      return await openSession({
        client,
        hold: ownServer(proc),
        workdir: sandbox.workdir,
        modelId: start.modelId,
        watchdogMs: start.watchdogMs,
        log: alog,
        server: { port, password, modelBaseUrl: start.modelBaseUrl },
        ...(start.sessionId ? { sessionId: start.sessionId } : {}),
      });
    } catch (e) {
      await proc.kill();
      throw e;
    }
  }

  return {
    // A new server in the same home reads the session from OpenCode's store (opencode.db).
    continuesSessions: true,

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
      // The server answers and still has the run's session.
      await assertSession(client, resume.sessionId, signal);
      // A turn the dead process was running has no one to report it: stop it.
      await abortQuietly(client, resume.sessionId, log, signal);
      if (a.rebind && resume.modelBaseUrl !== undefined && resume.modelBaseUrl !== a.rebind.modelBaseUrl) {
        // Its config names a gateway this process does not serve (a dead replica's). A server
        // started here reads the session from OpenCode's store in the sandbox's home.
        await proc.kill();
        log.info("the agent's server called another gateway; started one that continues its session", {
          sandbox: sandbox.id,
          from: resume.modelBaseUrl,
          to: a.rebind.modelBaseUrl,
        });
        return startAgent({ ...a.rebind, sessionId: resume.sessionId });
      }
      return openSession({
        client,
        hold: ownServer(proc),
        workdir: sandbox.workdir,
        modelId: a.modelId,
        watchdogMs: a.watchdogMs,
        log: log.child({ sandbox: sandbox.id }),
        server: {
          port: resume.port,
          password: resume.password,
          ...(resume.modelBaseUrl !== undefined ? { modelBaseUrl: resume.modelBaseUrl } : {}),
        },
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
              ...textOnly,
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
              server: { port, password, modelBaseUrl: pre.modelBaseUrl },
            });
          } catch (e) {
            await proc.kill();
            throw e;
          }
        },
        close: () => proc.kill(),
      };
    },

    start: startAgent,
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

/** The Authorization header for a server started with `password`. */
function basicAuth(password: string): Record<string, string> {
  return { Authorization: `Basic ${Buffer.from(`opencode:${password}`).toString("base64")}` };
}
