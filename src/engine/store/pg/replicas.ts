/**
 * The replicas' shared state in Postgres: who is alive and where to reach it (`replicas`),
 * which replica runs each run's session and until when (`runs.lease_owner/lease_until`), and
 * the queue of runs waiting for a replica with room (`run_queue`, taken with SKIP LOCKED so
 * two replicas never take the same run and neither waits for the other). Each lease carries an
 * epoch that grows when it changes hands; the lease book (leases.ts) holds the epochs this
 * replica was given, so a replica that stalled past its lease learns it lost a run.
 */
import type { Db } from "./db.ts";
import type { LeaseBook } from "./leases.ts";

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
  /**
   * Mark this replica alive and extend the leases it holds. Returns the runs it held that
   * another replica took since (a take-over while this one did not answer); each is also
   * told, once, to the `onLeaseLost` listeners.
   */
  heartbeat(): Promise<string[]>;
  /** Called once for each run this replica leased and lost: a write refused, or a heartbeat found it. */
  onLeaseLost(listener: (runId: string) => void): () => void;
  /**
   * The lost run's session here is gone: once the writes queued for it have settled (all
   * refused), it is forgotten, and a later request here about it is served as any other.
   */
  letGo(runId: string): Promise<void>;
  /**
   * The replica other than this one that holds the run's session, if any: a live one, or
   * `"stale"` when its holder stopped answering and the run waits to be taken over.
   */
  ownerElsewhere(runId: string): Promise<Peer | "stale" | undefined>;
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

export interface ReplicaRegistryOptions {
  replicaId: string;
  leaseMs: number;
  /** The runs this replica leased (shared with the store's writes, which it fences). */
  leases: LeaseBook;
  /** Resolves when the writes queued for the run have settled. */
  settledRun(runId: string): Promise<void>;
}

export function createReplicaRegistry(db: Db, opts: ReplicaRegistryOptions): ReplicaRegistry {
  const { replicaId, leaseMs, leases } = opts;
  const lease = `${leaseMs} milliseconds`;
  const hold = (rows: { id: string; lease_epoch: string }[]) => {
    for (const r of rows) leases.hold(r.id, Number(r.lease_epoch));
    return rows.map((r) => r.id);
  };
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
    async heartbeat() {
      await db.count("UPDATE replicas SET heartbeat_at = now() WHERE id = $1", [replicaId]);
      const held = leases.held();
      if (!held.length) return [];
      const ids = held.map((h) => h.runId);
      const epochs = held.map((h) => h.epoch);
      await db.count(
        `UPDATE runs r SET lease_until = now() + $4::interval
           FROM unnest($2::text[], $3::bigint[]) AS h(id, epoch)
          WHERE r.id = h.id AND r.lease_epoch = h.epoch AND r.lease_owner = $1`,
        [replicaId, ids, epochs, lease],
      );
      // Lost: the epoch moved on (another replica took the run), or the run is gone. A run this
      // replica finished keeps its epoch (the book lets it go when that write commits).
      const gone = await db.rows<{ id: string }>(
        `SELECT h.id FROM unnest($1::text[], $2::bigint[]) AS h(id, epoch)
           LEFT JOIN runs r ON r.id = h.id
          WHERE r.id IS NULL OR r.lease_epoch <> h.epoch`,
        [ids, epochs],
      );
      const lost = new Set(gone.map((r) => r.id));
      for (const h of held) if (lost.has(h.runId)) leases.lose(h.runId, h.epoch);
      return [...lost];
    },
    onLeaseLost: (listener) => leases.onLost(listener),
    async letGo(runId) {
      await opts.settledRun(runId);
      leases.forget(runId);
    },
    async ownerElsewhere(runId) {
      const [row] = await db.rows<{ id: string | null; url: string | null; live: boolean | null }>(
        `SELECT p.id, p.url, p.heartbeat_at > now() - $3::interval AS live
           FROM runs r LEFT JOIN replicas p ON p.id = r.lease_owner
          WHERE r.id = $1 AND r.lease_owner IS NOT NULL AND r.lease_owner <> $2`,
        [runId, replicaId, lease],
      );
      if (!row) return undefined;
      return row.live && row.id && row.url ? { id: row.id, url: row.url } : "stale";
    },
    async enqueue(runId, input) {
      // Queued for whichever replica has room: leased to none until one claims it.
      await db.tx(async (q) => {
        await q.count("INSERT INTO run_queue (run_id, input) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
          runId,
          JSON.stringify(input),
        ]);
        await q.count("UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2", [
          runId,
          replicaId,
        ]);
      });
      leases.release(runId);
    },
    async claimQueued(limit) {
      if (limit <= 0) return [];
      const { claimed, leased } = await db.tx(async (q) => {
        const rows = await q.rows<{ run_id: string; input: unknown }>(
          `DELETE FROM run_queue WHERE run_id IN (
             SELECT run_id FROM run_queue ORDER BY queued_at, run_id FOR UPDATE SKIP LOCKED LIMIT $1)
           RETURNING run_id, input`,
          [limit],
        );
        const taken = rows.length
          ? await q.rows<{ id: string; lease_epoch: string }>(
              `UPDATE runs SET lease_owner = $1, lease_until = now() + $3::interval, lease_epoch = lease_epoch + 1
                WHERE id = ANY($2) AND status = 'queued'
                RETURNING id, lease_epoch`,
              [replicaId, rows.map((r) => r.run_id), lease],
            )
          : [];
        return { claimed: rows, leased: taken };
      });
      hold(leased);
      return claimed.map((r) => ({ runId: r.run_id, input: r.input }));
    },
    async takeOrphans() {
      // Not the runs this replica lost and is still stopping: their old session here is not gone yet.
      const rows = await db.rows<{ id: string; lease_epoch: string }>(
        `UPDATE runs SET lease_owner = $1, lease_until = now() + $2::interval, lease_epoch = lease_epoch + 1
          WHERE id IN (
            SELECT id FROM runs r
             WHERE r.status IN ('queued', 'running', 'idle')
               AND (r.lease_owner IS NULL OR (r.lease_owner <> $1 AND NOT EXISTS (
                     SELECT 1 FROM replicas p WHERE p.id = r.lease_owner AND p.heartbeat_at > now() - $2::interval)))
               AND NOT EXISTS (SELECT 1 FROM run_queue q WHERE q.run_id = r.id)
               AND NOT (r.id = ANY($3))
             FOR UPDATE SKIP LOCKED)
          RETURNING id, lease_epoch`,
        [replicaId, lease, leases.lost()],
      );
      return hold(rows);
    },
    async leave() {
      // Gone at once: the others take over what this replica left (the restart path).
      await db.count("DELETE FROM replicas WHERE id = $1", [replicaId]);
    },
  };
}
