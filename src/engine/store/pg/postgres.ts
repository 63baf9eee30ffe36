/**
 * The Postgres store (`PATCHBAY_DATABASE_URL`): the RunStore any number of Patchbay replicas
 * share. Schema migrations run on open (migrate.ts); runs, turns and event logs are rows, each
 * record a json value checked by its zod schema before it is written; one run's writes go
 * through one lane per process (run-writes.ts), and event ids stay 1..n across processes by
 * the run's head row lock. Appends are announced with NOTIFY (`watchEvents`), so a follower on
 * any replica hears of another replica's event when it commits. A run's writes from the
 * replica that leased it are fenced (leases.ts): once another replica took the run, they are
 * refused with `lease_lost`, each in the transaction that would have written it.
 */
import { randomUUID } from "node:crypto";
import { EngineError } from "../../errors.ts";
import type { RunEvent } from "../../events/schema.ts";
import { silentLogger, type Logger } from "../../log.ts";
import { RunRecord, TurnRecord, type RunStatus } from "../../run/schema.ts";
import { valid } from "../sqlite-tables.ts";
import { encodeCursor, pageStart } from "../run-pages.ts";
import { RunPatch, type RunStore } from "../store.ts";
import { createWindowCounters, type WindowCounters } from "./counters.ts";
import { createDb, type Db, type Queries } from "./db.ts";
import { createExclusive } from "./exclusive.ts";
import { createDatabaseHealth, databaseUnavailable } from "./health.ts";
import { checkLease, createLeaseBook } from "./leases.ts";
import { createEventWatch } from "./listen.ts";
import { migrate } from "./migrate.ts";
import { createRecords } from "./records.ts";
import { createReplicaRegistry, type ReplicaRegistry } from "./replicas.ts";
import { createRunWrites } from "./run-writes.ts";

const ACTIVE: readonly RunStatus[] = ["queued", "running", "idle"];
const TERMINAL: readonly RunStatus[] = ["completed", "failed", "cancelled"];

/** The shared store: a RunStore, plus what only a database shared by replicas offers. */
export interface PostgresStore extends RunStore {
  readonly kind: "postgres";
  /** This process's replica id (NOTIFY payloads, leases). */
  readonly replicaId: string;
  /** Told of each batch of events another process appended (run id, its last event id). */
  watchEvents(listener: (runId: string, lastId: number) => void): () => void;
  /** Whether the database answers (`/readyz`); the reason when it does not. */
  ping(): Promise<{ ok: true } | { ok: false; reason: string }>;
  deleteRun(id: string): Promise<boolean>;
  purgeFinishedBefore(cutoffIso: string, limit: number): Promise<string[]>;
  /** The pool and its helpers, for the parts built on the same database (replicas, MCP sessions). */
  readonly db: Db;
  /** Request-rate counters every replica shares. */
  readonly counters: WindowCounters;
  /** Leases, the queue of runs waiting for room, and where each replica is reached. */
  readonly replicas: ReplicaRegistry;
  /** Run `work` while no other replica runs work for `key` (advisory lock). */
  exclusive<T>(key: string, work: () => Promise<T>): Promise<T>;
}

export interface PostgresStoreOptions {
  url: string;
  log?: Logger;
  /** Time source for event timestamps; default the system clock. */
  now?: () => Date;
  /** Default: a random id per process. */
  replicaId?: string;
  /** Connections in the pool (default 10). */
  poolSize?: number;
  /** How long a replica's lease on a run lasts without a heartbeat (default 15 s; PATCHBAY_LEASE_MS). */
  leaseMs?: number;
}

/** Open the store at `url`, migrating its schema first. Throws when the database cannot be reached. */
export async function createPostgresStore(opts: PostgresStoreOptions): Promise<PostgresStore> {
  const log = (opts.log ?? silentLogger).child({ component: "store" });
  const now = opts.now ?? (() => new Date());
  const replicaId = opts.replicaId ?? `rep_${randomUUID().slice(0, 8)}`;
  await migrate(opts.url, log);
  const health = createDatabaseHealth(log);
  const db = createDb({ url: opts.url, max: opts.poolSize ?? 10, health });
  const leaseMs = opts.leaseMs ?? 15_000;
  const leases = createLeaseBook();
  const writes = createRunWrites({ db, now, replicaId, leaseMs, leases });
  /** A run's write in one transaction, refused (lease_lost) when this replica leased the run and lost it. */
  const leased = <T>(runId: string, write: (q: Queries) => Promise<T>): Promise<T> =>
    db.tx(async (q) => {
      await checkLease(q, leases, runId);
      return write(q);
    });
  // Listening before the store is used: a follower that subscribes and then reads the log
  // misses no other replica's event committed after that read.
  const watch = createEventWatch({ url: opts.url, replicaId, log, health });
  await watch.ready;
  const usable = db.usable;
  const locks = createExclusive(opts.url, health);

  async function deleteRuns(ids: string[]): Promise<void> {
    if (!ids.length) return;
    await db.tx(async (q) => {
      for (const table of [
        "turns",
        "run_events",
        "run_event_heads",
        "patches",
        "summaries",
        "run_secrets",
        "deliveries",
      ])
        await q.count(`DELETE FROM ${table} WHERE run_id = ANY($1)`, [ids]);
      // The runs' own webhooks (a per-run webhook names its run); owners' webhooks stay.
      await q.count("DELETE FROM webhooks WHERE data->>'runId' = ANY($1)", [ids]);
      await q.count("DELETE FROM runs WHERE id = ANY($1)", [ids]);
    });
  }

  const store: PostgresStore = {
    kind: "postgres",
    replicaId,
    db,
    counters: createWindowCounters(db),
    replicas: createReplicaRegistry(db, { replicaId, leaseMs, leases, settledRun: (id) => writes.settledRun(id) }),
    async exclusive(key, work) {
      usable();
      return locks.exclusive(key, work);
    },
    ...createRecords(db, leased),

    // --- runs
    async createRun(run) {
      usable();
      const record = valid(RunRecord, run, "run");
      // Leased to this replica from the start: until it starts the run (or queues it for any
      // replica), no take-over loop may take it for a dead replica's.
      const active = ACTIVE.includes(record.status);
      const n = await db.count(
        `INSERT INTO runs (id, owner_id, status, created_at, idempotency_key, data, lease_owner, lease_until, lease_epoch)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7::text IS NULL THEN NULL ELSE now() + $8 * interval '1 millisecond' END, $9)
         ON CONFLICT DO NOTHING`,
        [
          record.id,
          record.ownerId,
          record.status,
          record.createdAt,
          record.idempotencyKey ?? null,
          JSON.stringify(record),
          active ? replicaId : null,
          leaseMs,
          active ? 1 : 0,
        ],
      );
      if (!n) throw new EngineError("internal", `run ${run.id} already exists`);
      if (active) leases.hold(record.id, 1);
    },
    getRun: (id) => db.one("SELECT data FROM runs WHERE id = $1", [id]),
    async updateRun(id, patch) {
      usable();
      return writes.update(id, patch);
    },
    async transition(id, patch, event) {
      usable();
      return writes.transition(id, patch, event);
    },
    async listRuns(ownerId, opts) {
      const { after } = pageStart(opts);
      const runs = await db.many<RunRecord>(
        `SELECT data FROM runs WHERE owner_id = $1
           AND ($2::text IS NULL OR (created_at, id) < ($2::text COLLATE "C", $3::text COLLATE "C"))
         ORDER BY created_at DESC, id DESC LIMIT $4`,
        [ownerId, after?.createdAt ?? null, after?.id ?? null, opts.limit + 1],
      );
      const page = runs.slice(0, opts.limit);
      return { runs: page, nextCursor: runs.length > opts.limit ? encodeCursor(page.at(-1)!) : null };
    },
    runsByStatus: (statuses) => db.many("SELECT data FROM runs WHERE status = ANY($1)", [[...statuses]]),
    findRunByIdempotencyKey: (ownerId, key) =>
      db.one("SELECT data FROM runs WHERE owner_id = $1 AND idempotency_key = $2 LIMIT 1", [ownerId, key]),
    async countActiveRuns(ownerId) {
      const [row] = await db.rows<{ n: string }>(
        "SELECT count(*) AS n FROM runs WHERE owner_id = $1 AND status = ANY($2)",
        [ownerId, [...ACTIVE]],
      );
      return Number(row!.n);
    },
    async deleteRun(id) {
      const existed = (await db.rows("SELECT 1 FROM runs WHERE id = $1", [id])).length > 0;
      await deleteRuns([id]);
      leases.release(id);
      return existed;
    },
    runsUpdatedSince: (sinceIso) =>
      db.many(`SELECT data FROM runs WHERE (data->>'updatedAt') COLLATE "C" >= $1 ORDER BY id`, [sinceIso]),
    async purgeFinishedBefore(cutoffIso, limit) {
      const rows = await db.rows<{ id: string }>(
        `SELECT id FROM runs
          WHERE data->>'updatedAt' < $1
            AND (status = ANY($2) OR (status = 'idle' AND coalesce(data->>'sessionExpiresAt', '') < $1))
          ORDER BY data->>'updatedAt' LIMIT $3`,
        [cutoffIso, [...TERMINAL], limit],
      );
      const ids = rows.map((r) => r.id);
      await deleteRuns(ids);
      return ids;
    },

    // --- turns
    async addTurn(turn) {
      const record = valid(TurnRecord, turn, "turn");
      const n = await leased(record.runId, (q) =>
        q.count("INSERT INTO turns (run_id, n, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [
          record.runId,
          record.n,
          JSON.stringify(record),
        ]),
      );
      if (!n) throw new EngineError("internal", `run ${turn.runId} already has turn ${turn.n}`);
    },
    async updateTurn(runId, n, patch) {
      await leased(runId, async (q) => {
        const current = await q.one<TurnRecord>("SELECT data FROM turns WHERE run_id = $1 AND n = $2 FOR UPDATE", [
          runId,
          n,
        ]);
        if (!current) throw new EngineError("run_not_found", `run ${runId} has no turn ${n}`, { runId, turn: n });
        const next = valid(TurnRecord, { ...current, ...patch, runId, n }, "turn");
        await q.count("UPDATE turns SET data = $3 WHERE run_id = $1 AND n = $2", [runId, n, JSON.stringify(next)]);
      });
    },
    listTurns: (runId) => db.many("SELECT data FROM turns WHERE run_id = $1 ORDER BY n", [runId]),

    // --- events
    async appendEvent(runId, event) {
      usable();
      return writes.append(runId, event);
    },
    async readEvents(runId, after = 0, limit = Number.POSITIVE_INFINITY, opts = {}) {
      const maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
      const out: RunEvent[] = [];
      let bytes = 0;
      let cursor = after;
      // Pages of rows until the limit or the byte bound; the first event comes whatever its size.
      for (;;) {
        const want = Math.min(limit - out.length, 500);
        if (want <= 0) return out;
        const page = await db.many<RunEvent>(
          "SELECT data FROM run_events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
          [runId, cursor, want],
        );
        for (const event of page) {
          const size = Buffer.byteLength(JSON.stringify(event)) + 1;
          if (out.length && bytes + size > maxBytes) return out;
          out.push(event);
          bytes += size;
        }
        if (page.length < want) return out;
        cursor = page.at(-1)!.id;
      }
    },
    async lastEventId(runId) {
      const [row] = await db.rows<{ last_id: string }>("SELECT last_id FROM run_event_heads WHERE run_id = $1", [
        runId,
      ]);
      return row ? Number(row.last_id) : 0;
    },

    // --- patches and whole summaries
    async putPatch(runId, patch) {
      const record = valid(RunPatch, patch, "patch");
      await leased(runId, (q) =>
        q.count(
          "INSERT INTO patches (run_id, data) VALUES ($1, $2) ON CONFLICT (run_id) DO UPDATE SET data = EXCLUDED.data",
          [runId, JSON.stringify(record)],
        ),
      );
    },
    getPatch: async (runId) => (await db.one<RunPatch>("SELECT data FROM patches WHERE run_id = $1", [runId]))?.text,
    getBinaryPatch: async (runId) =>
      (await db.one<RunPatch>("SELECT data FROM patches WHERE run_id = $1", [runId]))?.binary,
    async putSummary(runId, text) {
      await leased(runId, (q) =>
        q.count(
          "INSERT INTO summaries (run_id, data) VALUES ($1, $2) ON CONFLICT (run_id) DO UPDATE SET data = EXCLUDED.data",
          [runId, JSON.stringify(text)],
        ),
      );
    },
    getSummary: (runId) => db.one("SELECT data FROM summaries WHERE run_id = $1", [runId]),

    watchEvents(listener) {
      return watch.on(listener);
    },
    async ping() {
      try {
        await db.rows("SELECT 1");
        return { ok: true };
      } catch (e) {
        return { ok: false, reason: e instanceof EngineError ? e.message : databaseUnavailable(e).message };
      }
    },

    async close() {
      if (closedOnce) return;
      closedOnce = true;
      await writes.settled();
      await watch.close();
      await locks.close();
      await db.close();
    },
  };
  let closedOnce = false;
  return store;
}

/** Whether a store is the shared Postgres one. */
export const isPostgresStore = (store: RunStore): store is PostgresStore =>
  (store as Partial<PostgresStore>).kind === "postgres";
