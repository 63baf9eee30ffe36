/**
 * The one `RunSession` every host hands out: a sandbox and the agent in it, closed together
 * (the agent first, then the sandbox with every process in it).
 */
import type { AgentSession } from "../agent/agent.ts";
import type { Logger } from "../log.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import type { HibernatedSession, PrepareWorkspace, RunSession } from "./host.ts";

export interface PairOptions {
  sandbox: Sandbox;
  agent: AgentSession;
  /** The run's gateway token, part of what a later process needs to take the session over. */
  token: string;
  /** Whether the host can take this session back after a restart (it then offers `resume`). */
  reattachable: boolean;
  log: Logger;
  /** Called once, when the session closes or hibernates (not when it is detached: Patchbay is shutting down). */
  onClose?: () => void;
  /** Whether the host can wake this session after `hibernate` (it then offers `hibernate`). */
  hibernatable?: boolean;
}

export function pairSession(o: PairOptions): RunSession {
  const { sandbox, agent, log } = o;
  let closing: Promise<void> | undefined;
  let hibernating: Promise<HibernatedSession> | undefined;
  const canDetach = o.reattachable && sandbox.detach !== undefined && agent.detach !== undefined;
  return {
    sandbox,
    agent,
    // Read when the engine stores it: a remote server's pid is known once it has started.
    get resume() {
      const sandboxResume = o.reattachable ? sandbox.resumeInfo?.() : undefined;
      const agentResume = agent.resume;
      return sandboxResume && agentResume ? { sandbox: sandboxResume, agent: agentResume, token: o.token } : undefined;
    },
    close() {
      return (closing ??= (async () => {
        o.onClose?.();
        try {
          await agent.close();
        } catch (e) {
          log.warn("agent did not close cleanly", { sandbox: sandbox.id, error: e });
        }
        try {
          await sandbox.kill();
        } catch (e) {
          log.warn("sandbox did not die cleanly", { sandbox: sandbox.id, error: e });
        }
      })());
    },
    ...(o.hibernatable && sandbox.hibernate
      ? {
          hibernate() {
            return (hibernating ??= (async () => {
              o.onClose?.();
              // A paused VM keeps the server in memory: let go of it and take it back on wake.
              // Otherwise the server stops; the next one reads the session from the sandbox's home.
              const server = sandbox.hibernation === "memory" && agent.detach ? agent.resume : undefined;
              if (server) await agent.detach!();
              else await agent.close();
              const kept = await sandbox.hibernate!();
              return { sandbox: kept, sessionId: agent.sessionId, ...(server ? { server } : {}), token: o.token };
            })());
          },
        }
      : {}),
    ...(canDetach
      ? {
          async detach() {
            await agent.detach!();
            await sandbox.detach!();
          },
        }
      : {}),
  };
}

/**
 * The agent `start` gives for a sandbox just made, with `prepare` (the run's setup) run on the
 * sandbox beside the agent's start: neither waits for the other, so a restored cache layer
 * or an install costs the run only what it takes beyond the agent's start. When either
 * fails, both are let finish, the agent is closed and the sandbox killed, and the failure is
 * thrown (prepare's first: a setup that failed says more than the agent it was waiting for).
 * A sandbox with snapshots runs prepare first: setup's snapshot must hold no agent.
 *
 * `gated` (an agent server already running, pooled): `start` opens the agent in the run's
 * directory, which makes OpenCode build its instance there (~1 s of CPU). Beside a restore
 * that unpacks thousands of files both slow down several-fold (bench/environment.ts), so
 * `start` waits until prepare says the workspace is ready (`workspaceReady`: after a
 * restore, before a setup's commands) or ends.
 */
export async function agentIn(
  sandbox: Sandbox,
  start: () => Promise<AgentSession>,
  prepare?: PrepareWorkspace,
  gated = false,
): Promise<AgentSession> {
  if (prepare && sandbox.snapshots) {
    // Setup's snapshot is taken before any agent runs in the sandbox: first prepare, then start.
    try {
      await prepare(sandbox, () => undefined);
    } catch (e) {
      await sandbox.kill().catch(() => undefined);
      throw e;
    }
    prepare = undefined;
  }
  let ready!: () => void;
  const workspaceReady = new Promise<void>((resolve) => (ready = resolve));
  const prepared = prepare ? prepare(sandbox, ready).finally(ready) : Promise.resolve();
  if (!prepare || !gated) ready();
  const [agent, done] = await Promise.allSettled([workspaceReady.then(start), prepared]);
  if (agent.status === "fulfilled" && done.status === "fulfilled") return agent.value;
  if (agent.status === "fulfilled") await agent.value.close().catch(() => undefined);
  await sandbox.kill().catch(() => undefined);
  throw done.status === "rejected" ? done.reason : (agent as PromiseRejectedResult).reason;
}
