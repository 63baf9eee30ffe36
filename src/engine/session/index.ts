/** Picks the session host the config asks for: shared, pooled or cold. */
import type { Config } from "../../config.ts";
import type { AgentDriver } from "../agent/agent.ts";
import { createOpencodeDriver } from "../agent/opencode.ts";
import type { SharedGateway } from "../agent/opencode-shared.ts";
import type { Logger } from "../log.ts";
import { createSandboxProvider } from "../sandbox/providers.ts";
import type { SandboxProvider } from "../sandbox/sandbox.ts";
import type { RunStore } from "../store/store.ts";
import { createColdSessionHost } from "./cold.ts";
import type { SessionHost } from "./host.ts";
import { createPooledSessionHost, type WarmPool } from "./pooled.ts";
import { createSharedSessionHost } from "./shared.ts";
import { createWarmRepos } from "./warm-repos.ts";

export type { RunSession, SessionHost, SessionOpenOptions } from "./host.ts";
export { HibernatedSession, SessionResume } from "./host.ts";
export type { WarmPool } from "./pooled.ts";

export interface SessionHostDeps {
  /** The model gateway: its port, and shared tokens for a shared agent server. */
  gateway: SharedGateway;
  log: Logger;
  /** Not read yet; hosts that keep state across restarts will. */
  store?: RunStore;
  /** Replace the sandbox provider (tests). Default: the one PATCHBAY_SANDBOX names. */
  sandboxes?: SandboxProvider;
  /** Replace the agent driver (tests, benchmarks); replaced drivers always run cold. */
  agents?: AgentDriver;
  /** Warm pool size when PATCHBAY_WARM_POOL_SIZE is unset (a long-running server wants one). */
  defaultWarmPoolSize?: number;
}

/** A session host, with the handles of the one that runs (benchmarks and tests read them). */
export interface PatchbaySessions extends SessionHost {
  /** The warm pool, when PATCHBAY_WARM_POOL_SIZE > 0 (benchmarks wait on `ready()`). */
  readonly warmPool?: WarmPool;
  /** The shared agent server, when PATCHBAY_SHARED_AGENT=1. */
  readonly sharedAgent?: { readonly serverPid: number | undefined };
}

export async function createSessionHost(config: Config, deps: SessionHostDeps): Promise<PatchbaySessions> {
  const provider = deps.sandboxes ?? (await createSandboxProvider(config, deps.log));
  const host = await pickHost(config, deps, provider);
  // Setup's cache drops the snapshots it no longer keeps, whichever host made them.
  return provider.dropSnapshot
    ? Object.assign(host, { dropSnapshot: (id: string) => provider.dropSnapshot!(id) })
    : host;
}

async function pickHost(config: Config, deps: SessionHostDeps, provider: SandboxProvider): Promise<PatchbaySessions> {
  const { gateway, log } = deps;
  const opencodeBin = config.opencodeBin ? { opencodeBin: config.opencodeBin } : {};
  const textOnlyModels = config.textOnlyModels;
  const driver = deps.agents ?? createOpencodeDriver({ ...opencodeBin, textOnlyModels, log });
  const base = { provider, driver, gatewayPort: gateway.port, log };
  // Only the OpenCode driver can share a server or start one ahead of its run.
  if (deps.agents) return createColdSessionHost(base);
  if (config.sharedAgent) {
    // A shared server needs no pool: it is started once and serves each run at once.
    if (config.warmPoolSize)
      log.info("PATCHBAY_WARM_POOL_SIZE is ignored with PATCHBAY_SHARED_AGENT=1: runs share one agent server");
    return createSharedSessionHost({
      provider,
      driver,
      gateway,
      models: config.models.length ? config.models : [config.defaultModel],
      textOnlyModels,
      dataDir: config.dataDir,
      ...opencodeBin,
      log,
    });
  }
  const poolSize = config.warmPoolSize ?? deps.defaultWarmPoolSize ?? 0;
  if (poolSize > 0) {
    const repos = createWarmRepos({
      provider,
      gateway,
      models: config.models.length ? config.models : [config.defaultModel],
      textOnlyModels,
      ...opencodeBin,
      pinned: config.warmRepos,
      size: poolSize,
      cloneUrlOf: (fullName) => `${config.gitBaseUrl}/${fullName}.git`,
      log,
    });
    return createPooledSessionHost({ ...base, size: poolSize, repos });
  }
  return createColdSessionHost(base);
}
