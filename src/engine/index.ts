/**
 * The engine's public face: `openPatchbay(config)` composes the store, secrets, model
 * gateway and session host (sandboxes and agents) into a running engine. Fronts (HTTP, MCP,
 * CLI) import from here only.
 */
import type { Config } from "../config.ts";
import type { AgentDriver } from "./agent/agent.ts";
import { createModelGateway } from "./gateway/server.ts";
import type { ModelGateway } from "./gateway/gateway.ts";
import { createKeyService, type KeyService } from "./keys/keys.ts";
import { createLogger, type Logger } from "./log.ts";
import { createMetrics, type PatchbayMetrics } from "./metrics/metrics.ts";
import { createEngine, type Engine } from "./run/engine.ts";
import type { SandboxProvider } from "./sandbox/sandbox.ts";
import { createSessionHost, type PatchbaySessions } from "./session/index.ts";
import { createSecretBox, loadOrCreateSecretKey } from "./secrets/secrets.ts";
import type { WindowCounters } from "./store/pg/counters.ts";
import { createSharedDocuments, type SharedDocuments } from "./store/pg/documents.ts";
import { createSharedMcpEvents, type SharedMcpEvents } from "./store/pg/mcp-events.ts";
import { createPostgresStore, isPostgresStore } from "./store/pg/postgres.ts";
import { createSqliteStore } from "./store/sqlite.ts";
import type { RunStore } from "./store/store.ts";

export { EngineError, isEngineError, type ErrorCode } from "./errors.ts";
export { describeEvent, describeStep } from "./events/describe.ts";
export type { Engine, GetRunOptions } from "./run/engine.ts";
export { ModelCatalog } from "./run/schema.ts";
export type { FollowOptions, FollowUntil, RunFollow } from "./run/follow.ts";
export type { RunView } from "./run/view.ts";
export type { KeyService } from "./keys/keys.ts";
export type { Logger } from "./log.ts";
export type { PatchbayMetrics } from "./metrics/metrics.ts";
export type { WindowCounters } from "./store/pg/counters.ts";
export type { SharedDocuments } from "./store/pg/documents.ts";
export type { SharedMcpEvents, StreamWait } from "./store/pg/mcp-events.ts";
export { HANDOFF_HEADER, HANDOFF_PATH } from "./run/replicas.ts";
export { createLogger } from "./log.ts";

export interface Patchbay {
  config: Config;
  engine: Engine;
  keys: KeyService;
  store: RunStore;
  gateway: ModelGateway;
  log: Logger;
  /** Prometheus metrics of this instance (its own registry), served at `/metrics`. */
  metrics: PatchbayMetrics;
  /** Runs' sandboxes and agents: `warmPool` and `sharedAgent` when they run (benchmarks, tests). */
  sessions: PatchbaySessions;
  /** Request-rate counters every replica shares (with PATCHBAY_DATABASE_URL). */
  counters?: WindowCounters;
  /** MCP session records every replica shares (with PATCHBAY_DATABASE_URL). */
  mcpSessions?: SharedDocuments;
  /** The MCP event log (stream resumption) every replica shares (with PATCHBAY_DATABASE_URL). */
  mcpEvents?: SharedMcpEvents;
  /** Whether the store answers; the reason when it does not (`/readyz`). */
  storeReady(): Promise<{ ok: true } | { ok: false; reason: string }>;
  /** Stop every session and process, flush and unlock the store. */
  close(): Promise<void>;
}

export interface OpenOptions {
  log?: Logger;
  /** Replace parts (tests, benchmarks). */
  sandboxes?: SandboxProvider;
  agents?: AgentDriver;
  /** Warm pool size when PATCHBAY_WARM_POOL_SIZE is unset (a long-running server wants one). */
  defaultWarmPoolSize?: number;
}

export async function openPatchbay(config: Config, opts: OpenOptions = {}): Promise<Patchbay> {
  const log = opts.log ?? createLogger({ level: config.logLevel ?? "info" });
  log.redact(config.openrouterApiKey);
  log.redact(config.githubToken);
  log.redact(config.githubAppPrivateKey);
  log.redact(config.e2bApiKey);
  log.redact(config.databaseUrl ? passwordOf(config.databaseUrl) : undefined);
  const store = config.databaseUrl
    ? await createPostgresStore({ url: config.databaseUrl, log, leaseMs: config.leaseMs })
    : await createSqliteStore({ dataDir: config.dataDir, log });
  const metrics = createMetrics();
  const cleanups: (() => Promise<void>)[] = [() => store.close()];
  try {
    const secrets = createSecretBox(
      await loadOrCreateSecretKey({
        dataDir: config.dataDir,
        ...(config.secretKey ? { secretKey: config.secretKey } : {}),
      }),
    );
    const gateway = await createModelGateway({
      upstreamBaseUrl: config.openrouterBaseUrl,
      port: config.gatewayPort,
      maxBodyBytes: config.gatewayMaxBodyBytes,
      bodyTimeoutMs: config.gatewayBodyTimeoutMs,
      maxInFlightPerToken: config.gatewayMaxInFlight,
      maxTokens: config.gatewayMaxTokens,
      observer: metrics.gateway,
      log,
    });
    cleanups.unshift(() => gateway.close());
    const sessions = await createSessionHost(config, {
      store,
      gateway,
      log,
      sandboxes: opts.sandboxes,
      agents: opts.agents,
      defaultWarmPoolSize: opts.defaultWarmPoolSize,
    });
    cleanups.unshift(() => sessions.close());
    const engine = createEngine({
      config,
      store,
      host: sessions,
      gateway,
      secrets,
      log,
      metrics,
      ...(isPostgresStore(store) ? { registry: store.replicas } : {}),
    });
    metrics.setSources({
      activeRuns: async () => {
        const counts: Record<string, number> = {};
        for (const run of await store.runsByStatus(["queued", "running", "idle"]))
          counts[run.status] = (counts[run.status] ?? 0) + 1;
        return counts;
      },
      warmPool: () => sessions.warmPool?.available ?? 0,
    });
    cleanups.unshift(() => engine.close());
    // Before serving: settle what a previous process left, then start the host (reap, pool fill).
    await engine.recover();
    const keys = createKeyService({ store, defaultOwnerId: config.localOwner });
    const shared = isPostgresStore(store)
      ? {
          counters: store.counters,
          mcpSessions: createSharedDocuments(store.db, "mcp_sessions"),
          mcpEvents: createSharedMcpEvents({
            db: store.db,
            url: config.databaseUrl!,
            replicaId: store.replicaId,
            leaseMs: store.replicas.leaseMs,
            log,
          }),
        }
      : {};
    if (shared.mcpEvents) cleanups.unshift(() => shared.mcpEvents.close());
    let closed: Promise<void> | undefined;
    return {
      config,
      engine,
      keys,
      store,
      gateway,
      log,
      metrics,
      sessions,
      ...shared,
      storeReady: async () => (isPostgresStore(store) ? store.ping() : { ok: true }),
      close: () =>
        (closed ??= (async () => {
          for (const c of cleanups) await c();
        })()),
    };
  } catch (e) {
    for (const c of cleanups) await c().catch(() => undefined);
    throw e;
  }
}

/** The password in a database URL, so the logger never prints it. */
function passwordOf(url: string): string | undefined {
  try {
    return decodeURIComponent(new URL(url).password) || undefined;
  } catch {
    return undefined;
  }
}
