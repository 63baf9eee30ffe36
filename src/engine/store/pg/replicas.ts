/**
 * The replicas' shared state in Postgres: who is alive and where to reach it (`replicas`),
 * which replica runs each run's session and until when (`runs.lease_owner/lease_until`), and
 * the queue of runs waiting for a replica with room (`run_queue`, taken with SKIP LOCKED so
 * two replicas never take the same run and neither waits for the other).
 */
import type { Db } from "./db.ts";

/** A replica another one can hand a run's request to. */
export interface Peer {
  id: string;
  url: string;
}

export interface ReplicaRegistry {
  readonly replicaId: string;
  /** How long a lease lasts without a heartbeat. */
  readonly leaseMs: number;
  /** Announce this replica at `url` (how the others reach it). */
  register(url: string): Promise<void>;
  /** Extend this replica's leases and take those of `held` (runs whose sessions it has). */
  heartbeat(held: readonly string[]): Promise<void>;
  /** The live replica other than this one that holds the run's session, if any. */
  ownerElsewhere(runId: string): Promise<Peer | undefined>;
  /** Queue a created run's first turn until a replica has room. */
  enqueue(runId: string, input: unknown): Promise<void>;
  /** Take up to `limit` queued runs, oldest first, leased to this replica. */
  claimQueued(limit: number): Promise<{ runId: string; input: unknown }[]>;
  /**
   * Take over the active runs of replicas that stopped answering (no heartbeat for a lease
   * period; never this replica's own, however late its heartbeat) or that no replica leases;
   * queued runs still in the queue stay there. Returns their ids, now leased to this replica.
   */
  takeOrphans(): Promise<string[]>;
  /** Leave the registry (clean shutdown): the leases go with it. */
  leave(): Promise<void>;
}

export function createReplicaRegistry(db: Db, replicaId: string, leaseMs: number): ReplicaRegistry {
  const lease = `${leaseMs} milliseconds`;
  return {
    replicaId,
    leaseMs,
    async register(url) {
      await db.count(
        `INSERT INTO replicas (id, url) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, heartbeat_at = now()`,
        [replicaId, url],
      );
    },
    async heartbeat(held) {
      await db.count("UPDATE replicas SET heartbeat_at = now() WHERE id = $1", [replicaId]);
      await db.count(
        `UPDATE runs SET lease_owner = $1, lease_until = now() + $3::interval
          WHERE (lease_owner = $1 OR id = ANY($2)) AND status IN ('queued', 'running', 'idle')`,
        [replicaId, [...held], lease],
      );
    },
    async ownerElsewhere(runId) {
      const [row] = await db.rows<Peer>(
        `SELECT p.id, p.url FROM runs r JOIN replicas p ON p.id = r.lease_owner
          WHERE r.id = $1 AND r.lease_owner <> $2 AND p.heartbeat_at > now() - $3::interval`,
        [runId, replicaId, lease],
      );
      return row;
    },
    async enqueue(runId, input) {
      await db.count("INSERT INTO run_queue (run_id, input) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
        runId,
        JSON.stringify(input),
      ]);
    },
    async claimQueued(limit) {
      if (limit <= 0) return [];
      return db.tx(async (q) => {
        const rows = await q.rows<{ run_id: string; input: unknown }>(
          `DELETE FROM run_queue WHERE run_id IN (
             SELECT run_id FROM run_queue ORDER BY queued_at, run_id FOR UPDATE SKIP LOCKED LIMIT $1)
           RETURNING run_id, input`,
          [limit],
        );
        if (rows.length)
          await q.count("UPDATE runs SET lease_owner = $1, lease_until = now() + $3::interval WHERE id = ANY($2)", [
            replicaId,
            rows.map((r) => r.run_id),
            lease,
          ]);
        return rows.map((r) => ({ runId: r.run_id, input: r.input }));
      });
    },
    async takeOrphans() {
      const rows = await db.rows<{ id: string }>(
        `UPDATE runs SET lease_owner = $1, lease_until = now() + $2::interval
          WHERE id IN (
            SELECT id FROM runs r
             WHERE r.status IN ('queued', 'running', 'idle')
               AND (r.lease_owner IS NULL OR (r.lease_owner <> $1 AND NOT EXISTS (
                     SELECT 1 FROM replicas p WHERE p.id = r.lease_owner AND p.heartbeat_at > now() - $2::interval)))
               AND NOT EXISTS (SELECT 1 FROM run_queue q WHERE q.run_id = r.id)
             FOR UPDATE SKIP LOCKED)
          RETURNING id`,
        [replicaId, lease],
      );
      return rows.map((r) => r.id);
    },
    async leave() {
      // Gone at once: the others take over what this replica left (the restart path).
      await db.count("DELETE FROM replicas WHERE id = $1", [replicaId]);
    },
  };
}
