/**
 * Hibernation: an idle session that nobody has messaged for `PATCHBAY_HIBERNATE_AFTER_MS`
 * stops running (the host's `hibernate`: its agent server stopped with the sandbox's files and
 * OpenCode's session store kept, or its VM paused) and stays `idle` with `sessionActive`; a
 * message wakes it and the same agent session continues. What it kept is sealed with the
 * run, so a restarted Patchbay keeps hibernated sessions for every provider. A hibernation
 * holds the run like a turn; messages and endings that arrive meanwhile wait for it
 * (`LiveSessions.settle`) instead of being refused.
 */
import { HibernatedSession, type RunSession } from "../session/host.ts";
import type { Endings } from "./end.ts";
import type { RunParts } from "./parts.ts";
import type { RunRecord } from "./schema.ts";
import { sealResume } from "./turn.ts";

/** The sealed secret that holds what a hibernated session kept (its gateway token among it). */
export const HIBERNATION_SECRET = "hibernation";

export interface Hibernation {
  /** The run just went idle: hibernate its session after the configured idle time, unless a turn starts first. */
  schedule(runId: string): void;
  /** Hibernate now if the run is idle and its session can (the idle timer; benchmarks and tests). */
  hibernate(runId: string): Promise<void>;
  /** The run's hibernated session running again, for a message's turn; logs `session.resumed`. */
  wake(run: RunRecord, signal: AbortSignal): Promise<RunSession>;
  /** At start: keep a hibernated run's session as it is (nothing runs). False when there is none to keep. */
  restore(run: RunRecord): Promise<boolean>;
}

export function createHibernation(deps: RunParts & { endings: Endings }): Hibernation {
  const { config, store, sessions, host, writer, log } = deps;
  const live = (run: RunRecord | undefined): run is RunRecord =>
    run?.status === "idle" && !!run.sessionExpiresAt && Date.parse(run.sessionExpiresAt) > deps.now().getTime();

  /** Hibernate the held run's session; the run to end when that failed half way. */
  async function attempt(runId: string, idleSince: number): Promise<RunRecord | undefined> {
    const session = sessions.get(runId);
    const run = await store.getRun(runId);
    if (!session?.hibernate || !live(run) || deps.closing()) return undefined;
    try {
      const kept = await session.hibernate();
      // Sealed like the model key: it holds the gateway token.
      await store.putSecret(deps.secrets.seal(runId, HIBERNATION_SECRET, JSON.stringify(kept)));
      sessions.keepHibernated(runId, kept, kept.token);
      await store.updateRun(runId, { hibernated: true });
      await writer.emit(runId, {
        type: "builder.event",
        turn: run.turnCount,
        data: { kind: "session.hibernated", idleMs: Date.now() - idleSince },
      });
      log.info("session hibernated", { runId });
      return undefined;
    } catch (e) {
      log.warn("hibernation failed; ending the session", { runId, error: e });
      return run;
    }
  }

  const hibernation: Hibernation = {
    schedule(runId) {
      if (config.hibernateAfterMs <= 0 || !host.wake) return;
      const idleSince = Date.now();
      sessions.armHibernation(runId, config.hibernateAfterMs, () => {
        void hibernate(runId, idleSince).catch((e: unknown) => log.error("hibernation failed", { runId, error: e }));
      });
    },

    hibernate: (runId) => hibernate(runId, Date.now()),

    async wake(run, signal) {
      const kept = sessions.hibernated(run.id)!;
      const started = Date.now();
      const env = await deps.environment.env(run);
      const session = await host.wake!(run.id, kept, {
        modelId: run.modelId,
        ...(Object.keys(env).length ? { env } : {}),
        network: run.environment?.network ?? "open",
        watchdogMs: config.watchdogMs,
        signal,
      });
      sessions.bind(run.id, session, kept.token);
      // Its server may be a new one (it called another replica's gateway): reached differently.
      await sealResume(deps, run.id, session);
      await store.updateRun(run.id, { hibernated: false });
      await writer.emit(run.id, {
        type: "builder.event",
        turn: run.turnCount,
        data: { kind: "session.resumed", wakeMs: Date.now() - started },
      });
      return session;
    },

    async restore(run) {
      if (!run.hibernated || !host.wake || !live(run)) return false;
      const sealed = await store.getSecret(run.id, HIBERNATION_SECRET);
      if (!sealed) return false;
      try {
        const kept = HibernatedSession.parse(JSON.parse(deps.secrets.open(sealed)) as unknown);
        // A host sandbox kept on another replica's machine (that replica died): ended as a restart ends it.
        if (host.keeps && !host.keeps(run.id, kept)) {
          log.info("a hibernated session's sandbox is not on this machine; ending the run", { runId: run.id });
          return false;
        }
        // The woken agent still has the run's secrets: what it reports is masked as before.
        await deps.environment.env(run);
        deps.gateway.restoreToken(kept.token, deps.grants.grantFor(run));
        sessions.keepHibernated(run.id, kept, kept.token);
        deps.endings.scheduleExpiry(run.id, run.sessionExpiresAt!);
        log.info("kept a hibernated session across the restart", { runId: run.id });
        return true;
      } catch (e) {
        log.warn("could not keep a hibernated session; ending it", { runId: run.id, error: e });
        return false;
      }
    },
  };

  /** Under a hold, like a turn: what arrives meanwhile waits for it (`sessions.settle`). */
  async function hibernate(runId: string, idleSince: number): Promise<void> {
    if (!sessions.get(runId)?.hibernate || sessions.isHeld(runId)) return;
    const hold = sessions.acquire(runId);
    const done = attempt(runId, idleSince).finally(() => hold.release());
    sessions.hibernating(
      runId,
      done.then(() => undefined),
    );
    const failed = await sessions.track(done);
    // Half stopped is not a session a message can continue: it ends as an expiry would.
    if (failed) await sessions.track(deps.endings.finish(failed, "completed"));
  }

  return hibernation;
}
