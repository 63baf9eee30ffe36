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
import type { AgentDriver, PrestartedAgent } from "../agent/agent.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { creationError, type Sandbox, type SandboxProvider, type WarmSandbox } from "../sandbox/sandbox.ts";
import { createColdSessionHost, sandboxOptions } from "./cold.ts";
import type { SessionHost, SessionOpenOptions } from "./host.ts";
import { agentIn, pairSession } from "./run-session.ts";

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
}

/** The pool's state, for benchmarks and tests. */
export interface WarmPool {
  /** Entries ready to hand out now. */
  readonly available: number;
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
  const inFlight = new Set<Promise<void>>();
  /** Runs that took an entry and whose first turn has not ended: the refill waits for it. */
  const refillAfterTurn = new Set<string>();
  const stop = new AbortController();
  let filling = 0;
  let started = false;
  const waiters: (() => void)[] = [];
  let retryTimer: NodeJS.Timeout | undefined;

  const notify = () => {
    if (idle.length < size) return;
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

  const fill = (): void => {
    if (!started || stop.signal.aborted) return;
    while (idle.length + filling < size) {
      filling++;
      const t0 = Date.now();
      const p = makeEntry().then(
        async (entry) => {
          if (stop.signal.aborted) return entry.sandbox.kill();
          idle.push(entry);
          log.info("warm sandbox ready", { ms: Date.now() - t0, available: idle.length });
        },
        (e: unknown) => {
          if (stop.signal.aborted) return;
          log.warn("could not start a warm sandbox; retrying later", { error: e });
          retryTimer ??= setTimeout(() => {
            retryTimer = undefined;
            fill();
          }, retryDelayMs);
          retryTimer.unref();
        },
      );
      const tracked = p.finally(() => {
        filling--;
        inFlight.delete(tracked);
        notify();
      });
      inFlight.add(tracked);
    }
  };

  /** The run's refill, once: after its first turn, or when its session ends before one. */
  const refill = (runId: string): void => {
    if (refillAfterTurn.delete(runId)) fill();
  };

  return {
    provider: provider.name,

    async open(opts) {
      // A warm server started before its run: its environment holds no secrets and its
      // sandbox shares the host's network. Such runs open cold (a restart would cost what the
      // pool saves), and the entry stays for the next run.
      if (needsOwnServer(opts)) return cold.open(opts);
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
      ).catch((e: unknown) => {
        fill();
        throw e;
      });
      // Refilled after the run's first turn: OpenCode builds the run's directory on its first
      // prompt (~1 s of CPU), and a server starting beside it would slow exactly that.
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
    },

    ...(cold.reattach ? { reattach: cold.reattach } : {}),
    // A hibernated run wakes cold in its own kept sandbox: a pool entry has nothing it needs.
    ...(cold.wake ? { wake: cold.wake, discard: cold.discard } : {}),

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
        for (const f of waiters.splice(0)) f();
      }
      await cold.close();
    },

    warmPool: {
      get available() {
        return idle.length;
      },
      ready() {
        if (idle.length >= size || stop.signal.aborted) return Promise.resolve();
        return new Promise((resolve) => waiters.push(resolve));
      },
    },
  };
}

/** A run whose agent server must start with it: secrets in its environment, or a network of its own. */
export function needsOwnServer(opts: Pick<SessionOpenOptions, "env" | "network">): boolean {
  return Object.keys(opts.env ?? {}).length > 0 || (opts.network ?? "open") !== "open";
}
