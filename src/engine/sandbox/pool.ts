/**
 * The warm pool: sandboxes with an OpenCode server already started and warmed (the driver's
 * `prestart` runs one throw-away prompt), handed to new runs and refilled in the background,
 * so a run skips the server's start-up and its first prompt's process-wide lazy work (~2 s
 * together, measured in bench/startup.ts). What a warm run still waits for belongs to its
 * own directory: the checkout, the binding, and OpenCode's instance for that directory,
 * built on the first prompt (~0.75 s of the ~1 s to the first model request, 2 cores). A run
 * takes an entry when one is ready and falls back to a cold start otherwise; nothing waits
 * for the pool.
 *
 * The pool decorates both ports the engine already uses, so the engine does not know it
 * exists: `sandboxes.create` adopts a warm sandbox (checks the run's repository out into
 * it) and remembers its server; `agents.start` for that sandbox binds the server to the run
 * (token, model) instead of starting one.
 *
 * How a provider makes a warm sandbox:
 *   - one with `prepare()` (bwrap, e2b): an empty sandbox whose workspace is filled by `adopt`;
 *   - `local`: a sandbox holding a tiny seed repository hosts the server, and the run's own
 *     sandbox is created cold (a local clone from the mirror, ~0.1 s). The server serves the
 *     run's workspace as one of its directories (OpenCode's `x-opencode-directory`); its
 *     directory is moved under the run's sandbox, so the run owns every process it holds.
 *   - others: not pooled; the pool logs that once and hands every run a cold start.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { AgentDriver, AgentSession, AgentStartOptions } from "../agent/agent.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type {
  ExecOptions,
  ExecResult,
  ProcessHandle,
  Sandbox,
  SandboxCreateOptions,
  SandboxProvider,
  WarmSandbox,
} from "./sandbox.ts";
import { ensureSeedRepository, SEED_REPOSITORY } from "./seed.ts";

/** An agent server started ahead of its run (see `WarmAgentDriver` in engine/agent). */
export interface PooledAgent {
  readonly pids: number[];
  open(opts: Omit<AgentStartOptions, "modelBaseUrl">): Promise<AgentSession>;
  close(): Promise<void>;
}

/** What the pool needs from the agent driver: a way to start a server before its run. */
export interface PrestartingDriver extends AgentDriver {
  prestart(opts: { sandbox: Sandbox | WarmSandbox; modelBaseUrl: string; signal?: AbortSignal }): Promise<PooledAgent>;
}

/** Options for {@link createWarmPool}. */
export interface WarmPoolOptions {
  provider: SandboxProvider;
  driver: PrestartingDriver;
  /** How many started sandboxes to keep ready. 0 turns the pool off. */
  size: number;
  /** Port of the model gateway on the engine's loopback (agents are configured with it at start). */
  gatewayPort: number;
  /** Patchbay's data dir; the local provider's seed repository lives in `<dataDir>/pool-seed`. */
  dataDir: string;
  log?: Logger;
  /** Wait after a failed fill before trying again. Default 5 s. */
  retryDelayMs?: number;
}

/** A running warm pool. */
export interface WarmPool {
  /** The provider to give the engine: takes warm sandboxes first. */
  readonly sandboxes: SandboxProvider;
  /** The driver to give the engine: binds a warm sandbox's server instead of starting one. */
  readonly agents: AgentDriver;
  /** Entries ready to hand out now. */
  readonly available: number;
  /** Start filling (call after the engine reaped old sandboxes, which would take pool ones for orphans). */
  start(): void;
  /** Resolves once `size` entries are ready (benchmarks, tests). */
  ready(): Promise<void>;
  /** Stop filling and kill every entry not handed out. */
  close(): Promise<void>;
}

interface Entry {
  agent: PooledAgent;
  /** Make the entry the run's sandbox. On failure the entry is either back in the pool or gone. */
  adopt(c: SandboxCreateOptions): Promise<Sandbox>;
  kill(): Promise<void>;
}

/** Create a warm pool over `provider` and `driver`. Nothing starts before `start()`. */
export function createWarmPool(opts: WarmPoolOptions): WarmPool {
  const log = (opts.log ?? silentLogger).child({ component: "warm-pool" });
  const { provider, driver } = opts;
  const retryDelayMs = opts.retryDelayMs ?? 5000;
  const idle: Entry[] = [];
  const handed = new WeakMap<Sandbox, PooledAgent>();
  const inFlight = new Set<Promise<void>>();
  const stop = new AbortController();
  let filling = 0;
  let started = false;
  let waiters: (() => void)[] = [];
  let retryTimer: NodeJS.Timeout | undefined;
  const supported = typeof provider.prepare === "function" || provider.name === "local";
  const size = supported ? opts.size : 0;
  if (opts.size > 0 && !supported)
    log.warn("the warm pool is not available for this sandbox provider", { provider: provider.name });

  const notify = () => {
    if (idle.length < size) return;
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };

  let seed: Promise<string> | undefined;
  const seedUrl = (): Promise<string> => (seed ??= ensureSeedRepository(opts.dataDir));

  const makeEntry = async (): Promise<Entry> => {
    if (provider.prepare) {
      const warm = await provider.prepare();
      try {
        const agent = await driver.prestart({
          sandbox: warm,
          modelBaseUrl: `${warm.engineUrl(opts.gatewayPort)}/v1`,
          signal: stop.signal,
        });
        return {
          agent,
          kill: () => warm.kill(),
          async adopt(c) {
            try {
              return await warm.adopt(c);
            } catch (e) {
              // The workspace may be half made: this entry is spent.
              await warm.kill();
              throw e;
            }
          },
        };
      } catch (e) {
        await warm.kill();
        throw e;
      }
    }
    // local: the server lives in a seed sandbox and serves the run's own sandbox.
    const host = await provider.create({
      runId: `warm_${randomBytes(6).toString("hex")}`,
      ownerId: "patchbay",
      repository: { fullName: SEED_REPOSITORY, cloneUrl: await seedUrl() },
    });
    try {
      const agent = await driver.prestart({
        sandbox: host,
        modelBaseUrl: `${host.engineUrl(opts.gatewayPort)}/v1`,
        signal: stop.signal,
      });
      const entry: Entry = {
        agent,
        kill: () => host.kill(),
        async adopt(c) {
          let run: Sandbox;
          try {
            run = await provider.create(c);
          } catch (e) {
            // Nothing of the entry was used: it goes back for the next run.
            idle.unshift(entry);
            throw e;
          }
          moveUnder(host, run, log);
          return new HostedSandbox(run, host);
        },
      };
      return entry;
    } catch (e) {
      await host.kill();
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
          if (stop.signal.aborted) return entry.kill();
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

  const sandboxes: SandboxProvider = {
    name: provider.name,
    async create(c) {
      const entry = idle.shift();
      if (!entry) {
        fill();
        return provider.create(c);
      }
      // Refilled once the run's first turn is done (below): a refill started now would
      // compete for the CPU with the very start-up the pool is there to cut.
      let sandbox: Sandbox;
      try {
        sandbox = await entry.adopt(c);
      } catch (e) {
        fill();
        throw e;
      }
      handed.set(sandbox, entry.agent);
      log.debug("run took a warm sandbox", { runId: c.runId });
      return sandbox;
    },
    ...(provider.reap ? { reap: (ids: ReadonlySet<string>) => provider.reap!(ids) } : {}),
    ...(provider.connect ? { connect: (id, resume) => provider.connect!(id, resume) } : {}),
    async close() {
      await pool.close();
      await provider.close?.();
    },
  };

  const agents: AgentDriver = {
    ...(driver.attach ? { attach: (o) => driver.attach!(o) } : {}),
    start(o) {
      const warm = handed.get(o.sandbox);
      if (!warm) return driver.start(o);
      handed.delete(o.sandbox);
      // Refill after the run's first turn: OpenCode bootstraps the run's directory on the
      // first prompt (~1 s of CPU), and a server starting beside it would slow exactly that.
      return warm.open(o).then(
        (session): AgentSession => {
          let refilled = false;
          return {
            get sessionId() {
              return session.sessionId;
            },
            get pids() {
              return session.pids;
            },
            get resume() {
              return session.resume;
            },
            runTurn: (turn) =>
              session.runTurn(turn).finally(() => {
                if (!refilled) fill();
                refilled = true;
              }),
            abort: () => session.abort(),
            close: () => session.close(),
            ...(session.detach ? { detach: () => session.detach!() } : {}),
          };
        },
        (e: unknown) => {
          fill();
          throw e;
        },
      );
    },
  };

  const pool: WarmPool = {
    sandboxes,
    agents,
    get available() {
      return idle.length;
    },
    start() {
      started = true;
      fill();
    },
    ready() {
      if (idle.length >= size) return Promise.resolve();
      return new Promise((resolve) => waiters.push(resolve));
    },
    async close() {
      if (stop.signal.aborted) return;
      stop.abort();
      if (retryTimer) clearTimeout(retryTimer);
      await Promise.allSettled([...inFlight]);
      await Promise.allSettled(idle.splice(0).map((e) => e.kill()));
      for (const f of waiters.splice(0)) f();
    },
  };
  return pool;
}

/**
 * Move the local server's sandbox directory under the run's (`<run>/agent-server`), leaving
 * a link at the old path for the server's HOME. Its processes' working directories follow
 * the move: whoever looks for the run's processes by directory finds the server too.
 */
function moveUnder(host: Sandbox, run: Sandbox, log: Logger): void {
  const from = path.dirname(host.workdir);
  const to = path.join(path.dirname(run.workdir), "agent-server");
  try {
    fs.renameSync(from, to);
    fs.symlinkSync(to, from);
  } catch (e) {
    // Only bookkeeping: the server works where it is, and both sandboxes are killed together.
    log.warn("could not move the warm server under its run", { error: e });
  }
}

/**
 * A run's local sandbox plus the warm server's sandbox that serves it: commands run in the
 * run's sandbox; killing it stops both.
 */
class HostedSandbox implements Sandbox {
  readonly provider: Sandbox["provider"];
  readonly listenHost: string | undefined;
  constructor(
    private readonly run: Sandbox,
    private readonly host: Sandbox,
  ) {
    this.provider = run.provider;
    this.listenHost = run.listenHost;
  }
  get id(): string {
    return this.run.id;
  }
  get workdir(): string {
    return this.run.workdir;
  }
  get baseSha(): string {
    return this.run.baseSha;
  }
  get baseRef(): string {
    return this.run.baseRef;
  }
  exec(argv: string[], opts?: ExecOptions): Promise<ExecResult> {
    return this.run.exec(argv, opts);
  }
  spawn(argv: string[], opts?: ExecOptions): ProcessHandle {
    return this.run.spawn(argv, opts);
  }
  freePort(): Promise<number> {
    return this.run.freePort();
  }
  endpoint(port: number): Promise<string> {
    return this.run.endpoint(port);
  }
  engineUrl(port: number): string {
    return this.run.engineUrl(port);
  }
  binaryPath(name: "opencode"): string | undefined {
    return this.run.binaryPath?.(name);
  }
  pids(): number[] {
    return [...(this.run.pids?.() ?? []), ...(this.host.pids?.() ?? [])];
  }
  async kill(): Promise<void> {
    // The server first: it holds the run's workspace open.
    await this.host.kill();
    await this.run.kill();
  }
}
