/**
 * The engine's public face: `openPatchbay(config)` composes the store, secrets, model
 * gateway, sandbox provider and agent driver into a running engine. Fronts (HTTP, MCP, CLI)
 * import from here only.
 */
import type { Config } from "../config.ts";
import { createOpencodeDriver } from "./agent/opencode.ts";
import { createSharedOpencodeDriver, type SharedOpencodeDriver } from "./agent/opencode-shared.ts";
import type { AgentDriver } from "./agent/agent.ts";
import { createModelGateway } from "./gateway/http.ts";
import type { ModelGateway } from "./gateway/gateway.ts";
import { createKeyService, type KeyService } from "./keys/keys.ts";
import { createLogger, type Logger } from "./log.ts";
import { createEngine, type Engine } from "./run/engine.ts";
import { createWarmPool, type WarmPool } from "./sandbox/pool.ts";
import { createSandboxProvider } from "./sandbox/providers.ts";
import type { SandboxProvider } from "./sandbox/sandbox.ts";
import { createSecretBox, loadOrCreateSecretKey } from "./secrets/secrets.ts";
import { createLowdbStore } from "./store/lowdb.ts";
import type { RunStore } from "./store/store.ts";

export { EngineError, isEngineError, type ErrorCode } from "./errors.ts";
export { describeEvent, describeStep } from "./events/describe.ts";
export type { Engine, GetRunOptions, ModelCatalog } from "./run/engine.ts";
export type { FollowOptions, FollowUntil, RunFollow } from "./run/follow.ts";
export type { RunView } from "./run/view.ts";
export type { KeyService } from "./keys/keys.ts";
export type { Logger } from "./log.ts";
export { createLogger } from "./log.ts";

export interface Patchbay {
  config: Config;
  engine: Engine;
  keys: KeyService;
  store: RunStore;
  gateway: ModelGateway;
  log: Logger;
  /** The warm pool, when PATCHBAY_WARM_POOL_SIZE > 0 (benchmarks wait on `ready()`). */
  warmPool?: WarmPool;
  /** The shared agent driver, when PATCHBAY_SHARED_AGENT=1 (tests and benchmarks read its server's pid). */
  sharedAgent?: SharedOpencodeDriver;
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
  const store = await createLowdbStore({ dataDir: config.dataDir, log });
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
      log,
    });
    cleanups.unshift(() => gateway.close());
    let sandboxes = opts.sandboxes ?? (await createSandboxProvider(config, log));
    const driver = createOpencodeDriver({ ...(config.opencodeBin ? { opencodeBin: config.opencodeBin } : {}), log });
    let agents: AgentDriver = opts.agents ?? driver;
    // One OpenCode server for every run (sandbox providers other than local refused it already).
    const sharedAgent =
      config.sharedAgent && !opts.agents
        ? createSharedOpencodeDriver({
            provider: sandboxes,
            gateway,
            fallback: driver,
            models: config.models.length ? config.models : [config.defaultModel],
            dataDir: config.dataDir,
            ...(config.opencodeBin ? { opencodeBin: config.opencodeBin } : {}),
            log,
          })
        : undefined;
    if (sharedAgent) agents = sharedAgent;
    // The warm pool wraps the real provider and driver only: replaced parts (tests) run cold.
    // A shared server needs none: it is started once and serves each run at once.
    const requestedPool = config.warmPoolSize ?? opts.defaultWarmPoolSize ?? 0;
    const poolSize = sharedAgent ? 0 : requestedPool;
    if (sharedAgent && config.warmPoolSize)
      log.info("PATCHBAY_WARM_POOL_SIZE is ignored with PATCHBAY_SHARED_AGENT=1: runs share one agent server");
    const warmPool =
      poolSize > 0 && !opts.agents
        ? createWarmPool({
            provider: sandboxes,
            driver,
            size: poolSize,
            gatewayPort: gateway.port,
            dataDir: config.dataDir,
            log,
          })
        : undefined;
    if (warmPool) ({ sandboxes, agents } = warmPool);
    const provider = sandboxes;
    if (provider.close) cleanups.unshift(() => provider.close!());
    // After the engine ended every run's session, before the provider removes the server's sandbox.
    if (sharedAgent) cleanups.unshift(() => sharedAgent.close());
    const engine = await createEngine({ config, store, sandboxes, agents, gateway, secrets, log });
    // After the engine reaped what a previous process left, which would include pool sandboxes.
    warmPool?.start();
    cleanups.unshift(() => engine.close());
    const keys = createKeyService({ store });
    let closed: Promise<void> | undefined;
    return {
      config,
      engine,
      keys,
      store,
      gateway,
      log,
      ...(warmPool ? { warmPool } : {}),
      ...(sharedAgent ? { sharedAgent } : {}),
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
