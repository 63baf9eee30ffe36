/**
 * Admission of new runs: one owner's creations run one after another, and each is refused
 * past the active-run cap (PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY) — for every front alike, since
 * the check lives here and not in REST. Serialising the check with the creation means two
 * concurrent requests cannot both take the last slot, nor two requests with one
 * Idempotency-Key both create a run. With a store shared by replicas (Postgres), the order
 * holds across them: each admission also takes the owner's advisory lock.
 */
import { EngineError } from "../errors.ts";
import { createSerialQueues } from "../serial.ts";
import type { RunStore } from "../store/store.ts";

/** A run takes seconds to minutes; suggest a retry well before a session would expire. */
const ACTIVE_RETRY_AFTER_S = 30;

export interface Admission {
  /** Run `create` after the owner's earlier admissions, whatever their outcome. */
  serial<T>(ownerId: string, create: () => Promise<T>): Promise<T>;
  /**
   * Throws too_many_active_runs unless `count` more runs (default 1: a group of attempts asks
   * for all its siblings at once) fit under the owner's cap. Call inside `serial`.
   */
  assertBelowCap(ownerId: string, count?: number): Promise<void>;
}

/** A store shared by replicas serialises an owner's admissions across them too. */
interface ExclusiveStore {
  exclusive<T>(key: string, work: () => Promise<T>): Promise<T>;
}

export function createAdmission(deps: { store: RunStore; maxActive: number }): Admission {
  const queues = createSerialQueues();
  const shared = (deps.store as Partial<ExclusiveStore>).exclusive ? (deps.store as unknown as ExclusiveStore) : null;
  return {
    serial: (ownerId, create) =>
      queues(ownerId, shared ? () => shared.exclusive(`admission:${ownerId}`, create) : create),
    async assertBelowCap(ownerId, count = 1) {
      const active = await deps.store.countActiveRuns(ownerId);
      if (active + count > deps.maxActive) {
        const asked = count > 1 ? ` and asked for ${count} more` : "";
        throw new EngineError(
          "too_many_active_runs",
          `this API key's owner already has ${active} active runs${asked} (at most ${deps.maxActive}); end a session (endSession) or wait for a run to finish`,
          { active, limit: deps.maxActive, requested: count, retryAfterSeconds: ACTIVE_RETRY_AFTER_S },
        );
      }
    },
  };
}
