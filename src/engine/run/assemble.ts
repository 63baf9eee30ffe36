/**
 * The run engine's parts, made and wired together once: the event bus and writer, the live
 * sessions, setup and its cache, creation, turns, endings, admission, budgets, messages and
 * groups of attempts. The
 * facade (engine.ts) only calls them; a new part is wired here.
 */
import type { Config } from "../../config.ts";
import { createEnvironmentCache, type EnvironmentCache } from "../environment/cache.ts";
import { createRunSecrets } from "../environment/secrets.ts";
import { createSetups } from "../environment/setup.ts";
import { createEventBus } from "../events/bus.ts";
import { relayRemoteEvents, type EventSource } from "../events/relay.ts";
import type { ModelGateway } from "../gateway/gateway.ts";
import { createRepositoryAccess, type RepositoryAccess } from "../github/access.ts";
import type { Logger } from "../log.ts";
import type { PatchbayMetrics } from "../metrics/metrics.ts";
import { observeRuns } from "../metrics/runs.ts";
import { createPublisher, type Publisher } from "../publish/publish.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { SessionHost } from "../session/host.ts";
import type { ReplicaRegistry } from "../store/pg/replicas.ts";
import type { RunStore } from "../store/store.ts";
import { createWebhooks } from "../webhooks/webhooks.ts";
import { createAdmission } from "./admission.ts";
import { createBudgets } from "./budget.ts";
import { createRunFactory } from "./create.ts";
import { createEndings } from "./end.ts";
import { createHibernation } from "./hibernation.ts";
import { createGrants } from "./grant.ts";
import { createGroups } from "./groups.ts";
import { createMessages } from "./message.ts";
import { createOutputSchemas } from "./output.ts";
import type { RunParts } from "./parts.ts";
import { createRunPublishing } from "./publishing.ts";
import { createLiveSessions } from "./sessions.ts";
import { createTurns } from "./turn.ts";
import { createRunWriter } from "./writer.ts";

export interface EngineDeps {
  config: Config;
  store: RunStore;
  /** Opens each run's sandbox and agent (cold, pooled or shared). */
  host: SessionHost;
  gateway: ModelGateway;
  secrets: SecretBox;
  log: Logger;
  /** Injectable clock (tests). */
  now?: () => Date;
  /** Repository resolution and GitHub credentials. Default: from the config (App, token or public). */
  repositories?: RepositoryAccess;
  /** Commits, pushes and opens draft PRs after turns of `publish.mode: draft_pr` runs. Default: from the config. */
  publisher?: Publisher;
  /** Setup's cache of layers. Default: `<dataDir>/cache/env`, bounded by PATCHBAY_ENV_CACHE_MAX_BYTES. */
  envCache?: EnvironmentCache;
  /** The instance's metrics: runs, turns and webhook deliveries are counted into them. */
  metrics?: PatchbayMetrics;
  /** Leases and the run queue when replicas share the store (Postgres); absent: one process. */
  registry?: ReplicaRegistry;
}

/** Every part of the engine, wired from its deps. */
export function assembleParts(deps: EngineDeps) {
  const { config, store, log } = deps;
  const now = deps.now ?? (() => new Date());
  const bus = createEventBus({ onListenerError: (error) => log.warn("an event listener failed", { error }) });
  const environment = createRunSecrets({ store, box: deps.secrets, log });
  const { metrics } = deps;
  // Subscribed before any part can change a status (recovery's changes are delivered too).
  const webhooks = createWebhooks({
    config,
    store,
    bus,
    box: deps.secrets,
    log,
    now,
    ...(metrics ? { onAttempt: metrics.webhookAttempt } : {}),
  });
  if (metrics) observeRuns(bus, metrics);
  const writer = createRunWriter({ store, bus, log, now, mask: environment.maskDeep });
  // A store shared by replicas tells of their appends: followers here hear them live.
  const source = store as Partial<EventSource>;
  const stopRelay = source.watchEvents
    ? relayRemoteEvents({ source: source as EventSource, store, bus, log })
    : () => undefined;
  const sessions = createLiveSessions({ gateway: deps.gateway, host: deps.host, log });
  metrics?.setSources({
    liveSessions: () => sessions.runIds().filter((id) => !sessions.hibernated(id)).length,
    hibernatedSessions: () => sessions.runIds().filter((id) => sessions.hibernated(id)).length,
  });
  const state = { closing: false, draining: false };
  const closing = () => state.closing;
  const repositories = deps.repositories ?? createRepositoryAccess(config, store, { log });
  const publisher = deps.publisher ?? createPublisher({ access: repositories, config, log });
  const budgets = createBudgets({ config, store, log, now });
  const grants = createGrants({ config, store, secrets: deps.secrets, budgets });
  const { host, gateway, secrets } = deps;
  const envCache =
    deps.envCache ??
    createEnvironmentCache({
      dataDir: config.dataDir,
      maxBytes: config.envCacheMaxBytes,
      maxSnapshots: config.envCacheMaxSnapshots,
      ...(host.dropSnapshot ? { dropSnapshot: (id: string) => host.dropSnapshot!(id) } : {}),
      log,
    });
  const parts: RunParts = {
    config,
    store,
    writer,
    sessions,
    host,
    gateway,
    grants,
    secrets,
    environment,
    log,
    now,
    closing,
  };
  const endings = createEndings(parts);
  const hibernation = createHibernation({ ...parts, endings });
  const setups = createSetups({ config, store, writer, cache: envCache, environment, log });
  const outputs = createOutputSchemas();
  const turns = createTurns({ ...parts, setups, repositories, publisher, endings, hibernation, budgets, outputs });
  const runs = createRunFactory({
    config,
    store,
    secrets: deps.secrets,
    environment,
    sandbox: host.provider,
    repositories,
    publisher,
    writer,
    webhooks,
    now,
  });
  const admission = createAdmission({ store, maxActive: config.maxActiveRunsPerKey });
  const messages = createMessages({ store, sessions, now, turns, runs, endings, publisher, admission });
  const publishing = createRunPublishing({ store, publisher, log });
  const groups = createGroups({ store, bus, runs, turns, sessions, endings, publishing, writer, log, now });
  return {
    ...parts,
    bus,
    stopRelay,
    state,
    parts,
    endings,
    hibernation,
    turns,
    runs,
    admission,
    messages,
    groups,
    envCache,
    webhooks,
    budgets,
    outputs,
  };
}
