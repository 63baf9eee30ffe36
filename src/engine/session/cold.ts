/**
 * The cold session host: each run's sandbox is made when the run opens (`provider.create`)
 * and its own agent server started in it (`driver.start`). The base the other hosts build
 * on: the pooled one falls back to it when no warm entry is ready, the shared one opens
 * its sandboxes through it.
 */
import type { AgentDriver, AgentSession, AgentStartOptions } from "../agent/agent.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type { NetworkPolicy } from "../environment/schema.ts";
import type { Sandbox, SandboxCreateOptions, SandboxNetwork, SandboxProvider } from "../sandbox/sandbox.ts";
import type { RunSession, SessionHost, SessionOpenOptions } from "./host.ts";
import { agentIn, pairSession } from "./run-session.ts";

/** Options for {@link createColdSessionHost}. */
export interface ColdSessionHostOptions {
  provider: SandboxProvider;
  driver: AgentDriver;
  /** Port of the model gateway on the engine's loopback. */
  gatewayPort: number;
  log?: Logger;
  /** Offer hibernation (default true, where the provider and driver can). A shared server's runs cannot. */
  hibernate?: boolean;
}

/** A cold host, plus what the hosts built on it reuse. */
export interface ColdSessionHost extends SessionHost {
  /** Open a session whose sandbox is made cold and whose agent `start` gives. */
  openWith(opts: SessionOpenOptions, start: (sandbox: Sandbox) => Promise<AgentSession>): Promise<RunSession>;
  /** Start options for the run's agent in `sandbox`. */
  agentOptions(sandbox: Sandbox, opts: AgentOptionsInput): AgentStartOptions;
  /** Whether its sessions hibernate (the pooled host pairs its own with the same answer). */
  readonly hibernatable: boolean;
}

type AgentOptionsInput = Pick<SessionOpenOptions, "token" | "modelId" | "watchdogMs" | "signal" | "env">;

/** The provider's options for the run's sandbox. */
export function sandboxOptions(opts: SessionOpenOptions): SandboxCreateOptions {
  return {
    runId: opts.runId,
    ownerId: opts.ownerId,
    repository: opts.repository,
    ...(opts.ref !== undefined ? { ref: opts.ref } : {}),
    ...(opts.credential ? { credential: opts.credential } : {}),
    ...(opts.fromSnapshot ? { fromSnapshot: opts.fromSnapshot } : {}),
    signal: opts.signal,
  };
}

export function createColdSessionHost(o: ColdSessionHostOptions): ColdSessionHost {
  const { provider, driver } = o;
  const log = o.log ?? silentLogger;
  // Sessions are worth taking back only where both halves can be reached again.
  const reattachable = provider.connect !== undefined && driver.attach !== undefined;
  // A hibernated session wakes in its kept sandbox with a server that continues its session.
  const hibernatable = o.hibernate !== false && provider.wake !== undefined && driver.continuesSessions === true;
  const pair = (sandbox: Sandbox, agent: AgentSession, token: string) =>
    pairSession({ sandbox, agent, token, reattachable, hibernatable, log });
  const networkFor = (policy: NetworkPolicy | undefined): { network?: SandboxNetwork } =>
    policy === "model-only" ? { network: { policy: "model-only", gatewayPort: o.gatewayPort } } : {};

  const host: ColdSessionHost = {
    provider: provider.name,
    hibernatable,

    agentOptions: (sandbox, opts) => ({
      sandbox,
      modelBaseUrl: `${sandbox.engineUrl(o.gatewayPort)}/v1`,
      modelToken: opts.token,
      modelId: opts.modelId,
      watchdogMs: opts.watchdogMs,
      signal: opts.signal,
      ...(opts.env ? { env: opts.env } : {}),
    }),

    async openWith(opts, start) {
      opts.onLog?.(`preparing sandbox (${provider.name}) for ${opts.repository.fullName}`);
      const sandbox = await provider.create({ ...sandboxOptions(opts), ...networkFor(opts.network) });
      opts.onLog?.("starting agent");
      const agent = await agentIn(sandbox, () => start(sandbox), opts.prepare);
      return pair(sandbox, agent, opts.token);
    },

    open: (opts) => host.openWith(opts, (sandbox) => driver.start(host.agentOptions(sandbox, opts))),

    ...(reattachable
      ? {
          async reattach(runId, resume, r) {
            const sandbox = await provider.connect!(runId, resume.sandbox, networkFor(r.network));
            const agent = await agentIn(sandbox, () =>
              driver.attach!({
                sandbox,
                resume: resume.agent,
                modelId: r.modelId,
                watchdogMs: r.watchdogMs,
                signal: r.signal,
                // Taken over by a replica whose gateway is reached at another URL: a server of its own.
                rebind: host.agentOptions(sandbox, { ...r, token: resume.token }),
              }),
            );
            return pair(sandbox, agent, resume.token);
          },
        }
      : {}),

    ...(hibernatable
      ? {
          async wake(runId, h, w) {
            const sandbox = await provider.wake!(runId, h.sandbox, networkFor(w.network));
            const here = host.agentOptions(sandbox, { ...w, token: h.token });
            const agent = await agentIn(sandbox, () =>
              h.server && driver.attach
                ? driver.attach({
                    sandbox,
                    resume: h.server,
                    modelId: w.modelId,
                    watchdogMs: w.watchdogMs,
                    signal: w.signal,
                    // Paused by a replica whose gateway is reached at another URL: a server of its own.
                    rebind: here,
                  })
                : driver.start({ ...here, sessionId: h.sessionId }),
            );
            return pair(sandbox, agent, h.token);
          },
          keeps: (runId, h) => provider.keeps?.(runId, h.sandbox) ?? true,
          async discard(runId, h) {
            try {
              await provider.discard?.(runId, h.sandbox);
            } catch (e) {
              log.warn("could not delete a hibernated sandbox", { runId, error: e });
            }
          },
        }
      : {}),

    async start(liveRunIds) {
      // Sandboxes (and their agents) a killed predecessor left belong to no run now. A failure
      // here (E2B's API down for a moment) must not fail the start: that would close the
      // provider and kill the sandboxes just reattached. Orphans wait for the next start.
      try {
        await provider.reap?.(liveRunIds);
      } catch (e) {
        log.warn("could not reap sandboxes a previous process left; the next start tries again", { error: e });
      }
    },

    async close() {
      await provider.close?.();
    },
  };
  return host;
}
