/**
 * How a run's session ends: endSession or expiry (`completed`), cancel (`cancelled`), a
 * failed turn (`failed`). Ending kills the sandbox and every process in it and forgets the
 * run's secrets; the patch of the last turn stays.
 */
import type { ErrorCode } from "../errors.ts";
import type { RunParts } from "./parts.ts";
import { isTerminal, type RunRecord } from "./schema.ts";

/** How long cancel lets a turn unwind (computing the patch it had) before killing its session. */
const CANCEL_UNWIND_MS = 15_000;

export interface Endings {
  /** End the run's session and store the final status. */
  finish(
    run: RunRecord,
    status: "completed" | "failed" | "cancelled",
    error?: { code: ErrorCode; message: string },
  ): Promise<RunRecord>;
  /** End the session of an idle run at `expiresAt` unless a turn started meanwhile. */
  scheduleExpiry(runId: string, expiresAt: string): void;
  /** Stop the turn in flight (keeping its work) or the idle session, and end the run `cancelled`. */
  cancel(run: RunRecord): Promise<RunRecord>;
}

export function createEndings(
  deps: Pick<RunParts, "config" | "store" | "writer" | "sessions" | "environment" | "log" | "now" | "closing">,
): Endings {
  const { store, sessions, log } = deps;

  const endings: Endings = {
    async finish(run, status, error) {
      await sessions.end(run.id);
      await store.deleteSecrets(run.id);
      // Masked with the values still known; only then are they forgotten.
      const ended = await deps.writer.setStatus(run, status, error ? { error } : {});
      deps.environment.forget(run.id);
      return ended;
    },

    scheduleExpiry(runId, expiresAt) {
      sessions.armExpiry(runId, Date.parse(expiresAt) - deps.now().getTime(), () => {
        void sessions
          .track(expire(runId))
          .catch((e: unknown) => log.error("session expiry failed", { runId, error: e }));
      });
    },

    async cancel(run) {
      if (run.status === "idle") return endings.finish(run, "cancelled");
      // The turn sees its signal and unwinds; it leaves the final status to us.
      const turn = sessions.turn(run.id);
      turn?.abort.abort();
      try {
        await sessions.get(run.id)?.agent.abort();
      } catch (e) {
        log.warn("agent abort failed", { runId: run.id, error: e });
      }
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([turn?.done, new Promise((r) => (timer = setTimeout(r, CANCEL_UNWIND_MS)))]);
      clearTimeout(timer);
      const current = (await store.getRun(run.id))!;
      if (isTerminal(current.status)) {
        await sessions.end(run.id);
        return current;
      }
      return endings.finish(current, "cancelled", { code: "cancelled", message: "the run was cancelled" });
    },
  };

  async function expire(runId: string): Promise<void> {
    // Shutting down: close() hands the session over or ends it.
    if (deps.closing()) return;
    // A hibernation in progress holds the run: expiry comes after it, never instead of it.
    await sessions.settle(runId);
    const run = await store.getRun(runId);
    if (!run || run.status !== "idle" || sessions.isHeld(runId)) return;
    if (run.sessionExpiresAt && Date.parse(run.sessionExpiresAt) > deps.now().getTime()) {
      endings.scheduleExpiry(runId, run.sessionExpiresAt);
      return;
    }
    await endings.finish(run, "completed");
  }

  return endings;
}
