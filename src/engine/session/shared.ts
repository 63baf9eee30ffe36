/**
 * The shared session host (PATCHBAY_SHARED_AGENT=1, `local` only): each run's sandbox is
 * made cold, and its agent is a session on one OpenCode server that serves every run's
 * workspace (`agent/opencode-shared.ts`). A run whose model that server does not list gets
 * a server of its own, as with the cold host.
 *
 * The server lives in a sandbox of its own made from the seed repository
 * (`<dataDir>/sandboxes/shared_<random>/`), so a crashed Patchbay's `reap` kills it like any
 * orphan, and it is never among a run's processes.
 */
import { randomBytes } from "node:crypto";
import type { AgentDriver } from "../agent/agent.ts";
import { createSharedOpencodeServer, type SharedGateway } from "../agent/opencode-shared.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type { Sandbox, SandboxProvider } from "../sandbox/sandbox.ts";
import { ensureSeedRepository, SEED_REPOSITORY } from "../sandbox/seed.ts";
import { createColdSessionHost } from "./cold.ts";
import { needsOwnServer } from "./pooled.ts";
import type { SessionHost } from "./host.ts";

/** Options for {@link createSharedSessionHost}. */
export interface SharedSessionHostOptions {
  /** The `local` provider: makes the runs' sandboxes and the server's own. */
  provider: SandboxProvider;
  /** Starts a server of its own for a run whose model the shared server does not list. */
  driver: AgentDriver;
  gateway: SharedGateway;
  /** Model ids the shared server lists; the first is its default. */
  models: readonly string[];
  /** Models declared without image input (PATCHBAY_TEXT_ONLY_MODELS). */
  textOnlyModels?: readonly string[];
  /** Patchbay's data dir (the seed repository). */
  dataDir: string;
  /** Path of the `opencode` binary; default: the one installed with Patchbay. */
  opencodeBin?: string;
  log?: Logger;
}

export interface SharedSessionHost extends SessionHost {
  /** The shared server (tests and benchmarks read its pid). */
  readonly sharedAgent: { readonly serverPid: number | undefined };
}

export function createSharedSessionHost(o: SharedSessionHostOptions): SharedSessionHost {
  const log = o.log ?? silentLogger;
  const { provider, driver } = o;
  // Runs on the shared server do not hibernate: its memory is every run's (docs/ARCHITECTURE.md).
  const cold = createColdSessionHost({ provider, driver, gatewayPort: o.gateway.port, log, hibernate: false });
  let home: Promise<Sandbox> | undefined;
  /** The server's sandbox: made once, made again after a failed attempt. */
  const serverSandbox = (): Promise<Sandbox> =>
    (home ??= (async () =>
      provider.create({
        runId: `shared_${randomBytes(6).toString("hex")}`,
        ownerId: "patchbay",
        repository: { fullName: SEED_REPOSITORY, cloneUrl: await ensureSeedRepository(o.dataDir) },
      }))().catch((e: unknown) => {
      home = undefined;
      throw e;
    }));
  const server = createSharedOpencodeServer({
    sandbox: serverSandbox,
    gateway: o.gateway,
    models: o.models,
    ...(o.textOnlyModels ? { textOnlyModels: o.textOnlyModels } : {}),
    ...(o.opencodeBin ? { opencodeBin: o.opencodeBin } : {}),
    log,
  });

  return {
    provider: provider.name,
    sharedAgent: server,

    open: (opts) =>
      cold.openWith(opts, (sandbox) => {
        // One server's environment is every run's: a run with secrets gets a server of its own.
        if (server.serves(opts.modelId) && !needsOwnServer(opts))
          return server.open({
            sandbox,
            modelToken: opts.token,
            modelId: opts.modelId,
            watchdogMs: opts.watchdogMs,
            signal: opts.signal,
          });
        log.info(
          needsOwnServer(opts)
            ? "this run has secrets, which one server's environment cannot keep from other runs; starting a server for the run"
            : "the shared agent server does not list this run's model; starting a server for the run",
          { sandbox: sandbox.id, model: opts.modelId },
        );
        return driver.start(cold.agentOptions(sandbox, opts));
      }),

    ...(cold.reattach ? { reattach: cold.reattach } : {}),

    start: (liveRunIds) => cold.start(liveRunIds),

    async close() {
      // After the engine ended every run's session, before the provider removes what is left.
      await server.close();
      const sandbox = await home?.catch(() => undefined);
      await sandbox?.kill();
      await cold.close();
    },
  };
}
