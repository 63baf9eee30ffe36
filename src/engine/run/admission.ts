/**
 * Admission of new runs: one owner's creations run one after another, and each is refused
 * past the active-run cap (PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY) — for every front alike, since
 * the check lives here and not in REST. Serialising the check with the creation means two
 * concurrent requests cannot both take the last slot, nor two requests with one
 * Idempotency-Key both create a run.
 */
import { EngineError } from "../errors.ts";
import { createSerialQueues } from "../serial.ts";
import type { RunStore } from "../store/store.ts";

/** A run takes seconds to minutes; suggest a retry well before a session would expire. */
const ACTIVE_RETRY_AFTER_S = 30;

export interface Admission {
  /** Run `create` after the owner's earlier admissions, whatever their outcome. */
  serial<T>(ownerId: string, create: () => Promise<T>): Promise<T>;
  /** Throws too_many_active_runs when the owner is at the cap. Call inside `serial`. */
  assertBelowCap(ownerId: string): Promise<void>;
}

export function createAdmission(deps: { store: RunStore; maxActive: number }): Admission {
  const queues = createSerialQueues();
  return {
    serial: (ownerId, create) => queues(ownerId, create),
    async assertBelowCap(ownerId) {
      const active = await deps.store.countActiveRuns(ownerId);
      if (active >= deps.maxActive) {
        throw new EngineError(
          "too_many_active_runs",
          `this API key's owner already has ${active} active runs (at most ${deps.maxActive}); end a session (endSession) or wait for a run to finish`,
          { active, limit: deps.maxActive, retryAfterSeconds: ACTIVE_RETRY_AFTER_S },
        );
      }
    },
  };
}
