/**
 * Fencing: which runs this replica leased, and at which epoch. A run's `lease_epoch` grows each
 * time its lease changes hands (a take-over, a claim from the queue, a status change written by
 * a replica that did not hold it), so a replica that stalled past its lease finds, on waking,
 * that the epoch it was given is gone. Its writes for that run are then refused (`lease_lost`)
 * inside the write's own transaction (run-writes.ts, `checkLease`), and the engine is told once
 * so it stops the run's session here without writing anything more for it.
 */
import { EngineError } from "../../errors.ts";
import type { Queries } from "./db.ts";

interface Entry {
  epoch: number;
  lost: boolean;
}

export interface LeaseBook {
  /** The run is leased to this replica at `epoch` (created, claimed, taken over, or made running/idle here). */
  hold(runId: string, epoch: number): void;
  /** This replica let the run go itself (finished it, queued it for any replica, deleted it). */
  release(runId: string): void;
  /**
   * Another replica took the run: this replica's writes for it are refused from now on, and
   * the listeners are told (once). Ignored when the run has been leased here again since `epoch`.
   */
  lose(runId: string, epoch: number): void;
  /** What a write for the run must find: the epoch held, "lost", or undefined (not leased here: not fenced). */
  fence(runId: string): number | "lost" | undefined;
  /** Runs held, with their epochs (the heartbeat checks and extends them). */
  held(): { runId: string; epoch: number }[];
  /** Runs lost and not yet let go (the take-over loop leaves them alone until then). */
  lost(): string[];
  /** The run's session here is gone: forget that it was lost (later writes for it are not fenced). */
  forget(runId: string): void;
  onLost(listener: (runId: string) => void): () => void;
}

export function createLeaseBook(): LeaseBook {
  const entries = new Map<string, Entry>();
  const listeners = new Set<(runId: string) => void>();
  return {
    hold(runId, epoch) {
      entries.set(runId, { epoch, lost: false });
    },
    release(runId) {
      if (entries.get(runId)?.lost === false) entries.delete(runId);
    },
    lose(runId, epoch) {
      const e = entries.get(runId);
      if (!e || e.lost || e.epoch !== epoch) return;
      entries.set(runId, { epoch, lost: true });
      for (const l of listeners) l(runId);
    },
    fence(runId) {
      const e = entries.get(runId);
      return e ? (e.lost ? "lost" : e.epoch) : undefined;
    },
    held: () => [...entries].flatMap(([runId, e]) => (e.lost ? [] : [{ runId, epoch: e.epoch }])),
    lost: () => [...entries].flatMap(([runId, e]) => (e.lost ? [runId] : [])),
    forget(runId) {
      if (entries.get(runId)?.lost) entries.delete(runId);
    },
    onLost(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** The error a write gets when this replica no longer holds the run's lease. */
export function leaseLost(runId: string): EngineError {
  return new EngineError(
    "lease_lost",
    `this replica no longer holds run ${runId}: another replica took it over while this one did not answer; nothing was written`,
    { runId, retryAfterSeconds: 2 },
  );
}

/**
 * Throws `lease_lost` (and marks the run lost) when this replica leased the run and `found`,
 * the epoch on the run's row locked by the write's transaction, is not the one it was given.
 */
export function assertLease(book: LeaseBook, runId: string, found: number | undefined): void {
  const fence = book.fence(runId);
  if (fence === undefined || fence === found) return;
  if (fence !== "lost") book.lose(runId, fence);
  throw leaseLost(runId);
}

/**
 * At the start of a write's transaction: lock the run's row and check the lease (assertLease),
 * so the transaction rolls back whole when this replica lost the run.
 */
export async function checkLease(q: Queries, book: LeaseBook, runId: string): Promise<void> {
  const fence = book.fence(runId);
  if (fence === undefined) return;
  if (fence === "lost") throw leaseLost(runId);
  const [row] = await q.rows<{ lease_epoch: string }>("SELECT lease_epoch FROM runs WHERE id = $1 FOR SHARE", [runId]);
  assertLease(book, runId, row ? Number(row.lease_epoch) : undefined);
}
