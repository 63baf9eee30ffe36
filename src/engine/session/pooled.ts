/**
 * The pooled session host: sandboxes with an agent server already started and warmed (the
 * driver's `prestart` runs one throw-away prompt), handed to new runs and refilled in the
 * background, so a run skips the server's start-up and its first prompt's process-wide lazy
 * work (~2 s together, bench/startup.ts). What a warm run still waits for belongs to its own
 * directory: the checkout, the binding, and OpenCode's instance for that directory, built on
 * its first prompt. A run takes an entry when one is ready and opens cold otherwise; nothing
 * waits for the pool.
 *
 * An entry is a sandbox from `provider.prepare()` (an empty workspace; `adopt` checks the
 * run's repository out into it) with a server from `driver.prestart()` (the gateway URL but
 * no token and no model; `open` binds it to the run).
 */
import type { AgentDriver, AgentSession, PrestartedAgent } from "../agent/agent.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { creationError, type Sandbox, type SandboxProvider, type WarmSandbox } from "../sandbox/sandbox.ts";
import { createColdSessionHost, sandboxOptions } from "./cold.ts";
import type { SessionHost, SessionOpenOptions } from "./host.ts";
import { agentIn, pairSession } from "./run-session.ts";
import type { RepoEntry, WarmRepos } from "./warm-repos.ts";

/** Options for {@link createPooledSessionHost}. */
export interface PooledSessionHostOptions {
  provider: SandboxProvider;
  driver: AgentDriver;
  /** How many started sandboxes to keep ready. */
  size: number;
  /** Port of the model gateway on the engine's loopback (servers are started with its URL). */
  gatewayPort: number;
  log?: Logger;
  /** Wait after a failed fill before trying again. Default 5 s. */
  retryDelayMs?: number;
  /** Repository entries (`warm-repos.ts`): repositories checked out with their instance built. Host providers only. */
  repos?: WarmRepos;
}

/** The pool's state, for benchmarks and tests. */
export interface WarmPool {
  /** Entries ready to hand out now (repository entries included). */
  readonly available: number;
  /** Repositories with an entry ready now. */
  readonly repositories: readonly string[];
  /** Resolves once `size` entries are ready (or the pool closed). */
  ready(): Promise<void>;
}

export interface PooledSessionHost extends SessionHost {
  readonly warmPool: WarmPool;
}

interface Entry {
  sandbox: WarmSandbox;
  agent: PrestartedAgent;
}

export function createPooledSessionHost(o: PooledSessionHostOptions): PooledSessionHost {
  const log = (o.log ?? silentLogger).child({ component: "warm-pool" });
  const { provider, driver } = o;
  const cold = createColdSessionHost({ provider, driver, gatewayPort: o.gatewayPort, log: o.log });
  const reattachable = cold.reattach !== undefined;
  const retryDelayMs = o.retryDelayMs ?? 5000;
  const supported = provider.prepare !== undefined && driver.prestart !== undefined;
  const size = supported ? o.size : 0;
  if (!supported) log.warn("the warm pool is not available for this sandbox provider", { provider: provider.name });
  const idle: Entry[] = [];
  const repos = supported && provider.name !== "e2b" ? o.repos : undefined;
  const repoIdle = new Map<string, RepoEntry>();
  const repoFilling = new Set<string>();
  const entries = () => idle.length + filling + repoIdle.size + repoFilling.size;
  const inFlight = new Set<Promise<void>>();
  /** Runs that took an entry and whose first turn has not ended: the refill waits for it. */
  const refillAfterTurn = new Set<string>();
  const stop = new AbortController();
  let filling = 0;
  let started = false;
  const waiters: (() => void)[] = [];
  let retryTimer: NodeJS.Timeout | undefined;

  const notify = () => {
    if (idle.length + repoIdle.size < size) return;
    for (const f of waiters.splice(0)) f();
  };

  const makeEntry = async (): Promise<Entry> => {
    const sandbox = await provider.prepare!();
    try {
      const agent = await driver.prestart!({
        sandbox,
        modelBaseUrl: `${sandbox.engineUrl(o.gatewayPort)}/v1`,
        signal: stop.signal,
      });
      return { sandbox, agent };
    } catch (e) {
      await sandbox.kill();
      throw e;
    }
  };

  /** Count a making in flight until it settles; a failure retries later. */
  const track = (what: string, make: () => Promise<void>, done: () => void): void => {
    const t0 = Date.now();
    const p = make().then(
      () => log.info(`warm ${what} ready`, { ms: Date.now() - t0, available: idle.length + repoIdle.size }),
      (e: unknown) => {
        if (stop.signal.aborted) return;
        log.warn(`could not start a warm ${what}; retrying later`, { error: e });
        retryTimer ??= setTimeout(() => {
          retryTimer = undefined;
          fill();
        }, retryDelayMs);
        retryTimer.unref();
      },
    );
    const tracked = p.finally(() => {
      done();
      inFlight.delete(tracked);
      notify();
    });
    inFlight.add(tracked);
  };

  const fill = (): void => {
    if (!started || stop.signal.aborted) return;
    if (repos) {
      const wanted = repos.wanted();
      // A repository runs no longer come back to gives its slot up.
      for (const [name, entry] of repoIdle)
        if (!wanted.includes(name)) {
          repoIdle.delete(name);
          void repos.discard(entry);
        }
      for (const name of wanted) {
        if (repoIdle.has(name) || repoFilling.has(name) || entries() >= size) continue;
        repoFilling.add(name);
        track(
          `repository entry (${name})`,
          async () => {
            const entry = await repos.make(name, stop.signal);
            if (stop.signal.aborted) return repos.discard(entry);
            repoIdle.set(name, entry);
          },
          () => repoFilling.delete(name),
        );
      }
    }
    while (entries() < size) {
      filling++;
      track(
        "sandbox",
        async () => {
          const entry = await makeEntry();
          if (stop.signal.aborted) return entry.sandbox.kill();
          idle.push(entry);
        },
        () => filling--,
      );
    }
  };

  /** A run on a repository with an entry: its ref checked out there, its session on the built instance. */
  const openOnRepository = async (entry: RepoEntry, opts: SessionOpenOptions) => {
    opts.onLog?.(`preparing sandbox (${provider.name}) for ${entry.fullName}: already checked out`);
    let sandbox: Sandbox;
    try {
      sandbox = await entry.sandbox.adopt(sandboxOptions(opts));
    } catch (e) {
      await repos!.discard(entry).catch(() => undefined);
      fill();
      throw creationError(e, opts.signal);
    }
    log.debug("run took a repository entry", { runId: opts.runId, repository: entry.fullName, sandbox: sandbox.id });
    opts.onLog?.("starting agent");
    const start = { modelToken: opts.token, modelId: opts.modelId, watchdogMs: opts.watchdogMs, signal: opts.signal };
    const agent = await agentIn(sandbox, () => repos!.open(entry, sandbox, start), opts.prepare, true).catch(
      async (e: unknown) => {
        await entry.server.close().catch(() => undefined);
        fill();
        throw e;
      },
    );
    return pairTaken(sandbox, agent, opts);
  };

  /**
   * A run's session on a taken entry, refilled after the run's first turn: OpenCode builds the
   * run's directory on its first prompt (~1 s of CPU), and a server starting beside it would
   * slow exactly that. It hibernates like a cold one and wakes cold in its kept sandbox.
   */
  const pairTaken = (sandbox: Sandbox, agent: AgentSession, opts: SessionOpenOptions) => {
    refillAfterTurn.add(opts.runId);
    return pairSession({
      sandbox,
      agent,
      token: opts.token,
      reattachable,
      hibernatable: cold.hibernatable,
      log,
      onClose: () => refill(opts.runId),
    });
  };

  /** The run's refill, once: after its first turn, or when its session ends before one. */
  const refill = (runId: string): void => {
    if (refillAfterTurn.delete(runId)) fill();
  };

  return {
    provider: provider.name,

    async open(opts) {
      repos?.note(opts.repository, opts.credential);
      // A warm server started before its run: its environment holds no secrets and its
      // sandbox shares the host's network. Such runs open cold (a restart would cost what the
      // pool saves), and the entry stays for the next run.
      if (needsOwnServer(opts)) return cold.open(opts);
      const repoEntry = repos?.serves(opts.modelId) ? repoIdle.get(opts.repository.fullName) : undefined;
      if (repoEntry) {
        repoIdle.delete(repoEntry.fullName);
        return openOnRepository(repoEntry, opts);
      }
      const entry = idle.shift();
      if (!entry) {
        fill();
        return cold.open(opts);
      }
      opts.onLog?.(`preparing sandbox (${provider.name}) for ${opts.repository.fullName}`);
      let sandbox: Sandbox;
      try {
        sandbox = await entry.sandbox.adopt(sandboxOptions(opts));
      } catch (e) {
        // The workspace may be half made: the entry is spent.
        await entry.sandbox.kill().catch(() => undefined);
        fill();
        throw creationError(e, opts.signal);
      }
      log.debug("run took a warm sandbox", { runId: opts.runId });
      opts.onLog?.("starting agent");
      const agent = await agentIn(
        sandbox,
        () =>
          entry.agent.open({
            sandbox,
            modelToken: opts.token,
            modelId: opts.modelId,
            watchdogMs: opts.watchdogMs,
            signal: opts.signal,
          }),
        opts.prepare,
        true,
      ).catch((e: unknown) => {
        fill();
        throw e;
      });
      return pairTaken(sandbox, agent, opts);
    },

    ...(cold.reattach ? { reattach: cold.reattach } : {}),
    // A hibernated run wakes cold in its own kept sandbox: a pool entry has nothing it needs.
    ...(cold.wake ? { wake: cold.wake, discard: cold.discard, keeps: cold.keeps } : {}),

    turnEnded: refill,

    async start(liveRunIds) {
      // Reap first: it would take the pool's new sandboxes for orphans.
      await cold.start(liveRunIds);
      started = true;
      fill();
    },

    async close() {
      if (!stop.signal.aborted) {
        stop.abort();
        if (retryTimer) clearTimeout(retryTimer);
        await Promise.allSettled([...inFlight]);
        await Promise.allSettled(idle.splice(0).map((e) => e.sandbox.kill()));
        await Promise.allSettled([...repoIdle.values()].map((e) => repos!.discard(e)));
        repoIdle.clear();
        for (const f of waiters.splice(0)) f();
      }
      await cold.close();
    },

    warmPool: {
      get available() {
        return idle.length + repoIdle.size;
      },
      get repositories() {
        return [...repoIdle.keys()];
      },
      ready() {
        if (idle.length + repoIdle.size >= size || stop.signal.aborted) return Promise.resolve();
        return new Promise((resolve) => waiters.push(resolve));
      },
    },
  };
}

/** A run whose agent server must start with it: secrets in its environment, or a network of its own. */
export function needsOwnServer(opts: Pick<SessionOpenOptions, "env" | "network">): boolean {
  return Object.keys(opts.env ?? {}).length > 0 || (opts.network ?? "open") !== "open";
}
