/**
 * The embedded store: SQLite (`<dataDir>/store.db`, see sqlite-tables.ts) for runs, turns,
 * groups, keys, repositories, secrets, budgets, webhooks and delivery records, updated in
 * place, so a write costs the same at run 100,000 as at run 1,000; one JSONL event log per
 * run (`events/<runId>.jsonl`, event-log.ts); one patch file per run (`patches/<runId>.json`);
 * the whole summary of a run whose record holds a cut one (`summaries/<runId>.txt`); each
 * webhook delivery's body (`deliveries/<id>.json`). One process owns the data dir (lock.ts).
 * A data dir from before (store.json) is migrated on first open (sqlite-migrate.ts).
 *
 * better-sqlite3 is synchronous: a write has committed (to the WAL) when its method returns,
 * and nothing else runs meanwhile, so no write needs a queue.
 *
 * Events are appended synchronously too (event-log.ts): an event has its id and is readable
 * before the call returns, so ids follow call order, and `transition` appends its event and
 * commits the run with nothing in between. On disk the event line comes first: a crash
 * between the two leaves an event for a change the record lacks; recovery works from the
 * record and appends an event of its own, so the log ends agreeing with it. The other order
 * would leave a status change that no follower of the log ever hears of.
 */
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { silentLogger, type Logger } from "../log.ts";
import { GroupRecord } from "../run/group-schema.ts";
import { RunRecord, TurnRecord } from "../run/schema.ts";
import { createDeliveryBodies } from "./delivery-records.ts";
import { assertSafeRunId, createEventLogs } from "./event-log.ts";
import { acquireDataDirLock } from "./lock.ts";
import { createPatchFiles } from "./patch-files.ts";
import { encodeCursor, pageStart } from "./run-pages.ts";
import { createRecordMethods } from "./sqlite-records.ts";
import { migrateStoreJson, STORE_DB } from "./sqlite-migrate.ts";
import { createWrites, fromRow, openDatabase, valid, type Db } from "./sqlite-tables.ts";
import type { RunStore } from "./store.ts";
import { createSummaryFiles } from "./summary-files.ts";

export interface SqliteStoreOptions {
  dataDir: string;
  log?: Logger;
  /** Time source for event timestamps and session expiry; default the system clock. */
  now?: () => Date;
}

/**
 * Open (or create) the store in `dataDir`, taking the data-dir lock and migrating a
 * store.json left by an earlier version. Throws EngineError `store_locked` if another live
 * process holds the lock, and `internal` if store.json is not valid JSON or holds a record
 * that does not match its schema.
 */
export async function createSqliteStore(opts: SqliteStoreOptions): Promise<RunStore> {
  const dataDir = path.resolve(opts.dataDir);
  const log = (opts.log ?? silentLogger).child({ component: "store" });
  const lock = await acquireDataDirLock(dataDir);
  try {
    return open(dataDir, log, opts.now ?? (() => new Date()), lock.release);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

interface Row {
  data: string;
}

function open(dataDir: string, log: Logger, now: () => Date, releaseLock: () => Promise<void>): RunStore {
  const dirs = ["events", "patches", "summaries", "deliveries"].map((d) => path.join(dataDir, d));
  for (const dir of dirs) fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const [eventsDir, patchesDir, summariesDir, deliveriesDir] = dirs as [string, string, string, string];
  migrateStoreJson(dataDir, log);
  const db = openDatabase(path.join(dataDir, STORE_DB), { wal: true });

  const w = createWrites(db);
  const q = queries(db);
  const events = createEventLogs({ dir: eventsDir, log, now });
  const patches = createPatchFiles(patchesDir);
  const summaries = createSummaryFiles(summariesDir);
  const bodies = createDeliveryBodies(deliveriesDir);
  let closed = false;

  function usable(): void {
    if (closed) throw new EngineError("shutting_down", "the store is closed");
  }
  const run = (r: Row | undefined) => (r ? fromRow(RunRecord, r.data, "run") : undefined);

  /** The run with `patch` applied and checked, not yet stored. Throws run_not_found. */
  function patchedRun(id: string, patch: Partial<RunRecord>): RunRecord {
    const current = run(q.run.get(id));
    if (!current) throw new EngineError("run_not_found", `run ${id} not found`, { runId: id });
    return valid(RunRecord, { ...current, ...patch, id }, "run");
  }

  /** The rows go in one transaction, then the files; a crash between leaves only orphan files. */
  const deleteRows = db.transaction((id: string) => {
    const deliveryIds = q.deliveryIdsOfRun.all(id).map((r) => r.id);
    const existed = q.deleteRun.run(id).changes > 0;
    for (const del of [q.deleteTurns, q.deleteSecrets, q.deleteDeliveries, q.deleteRunWebhooks]) del.run(id);
    return { existed, deliveryIds };
  });
  function deleteRun(id: string): boolean {
    assertSafeRunId(id);
    const { existed, deliveryIds } = deleteRows(id);
    for (const d of deliveryIds) bodies.remove(d);
    events.remove(id);
    patches.remove(id);
    summaries.remove(id);
    return existed;
  }

  /**
   * Deleted rows are zeroed in place (secure_delete); copying the WAL back into the database
   * and truncating it leaves no older image of their pages in the WAL either.
   */
  function forgetDeleted(): void {
    db.pragma("wal_checkpoint(TRUNCATE)");
  }

  const store: RunStore = {
    // --- runs
    async createRun(r) {
      usable();
      assertSafeRunId(r.id);
      if (q.run.get(r.id)) throw new EngineError("internal", `run ${r.id} already exists`);
      w.insertRun(valid(RunRecord, r, "run"));
    },
    async getRun(id) {
      usable();
      return run(q.run.get(id));
    },
    async updateRun(id, patch) {
      usable();
      const next = patchedRun(id, patch);
      w.updateRun(next);
      return next;
    },
    async transition(id, patch, event) {
      usable();
      const next = patchedRun(id, patch);
      // A refused event throws before the run changes. Crash order: see the file header.
      const stored = events.append(id, event(structuredClone(next)));
      w.updateRun(next);
      return { run: next, event: stored };
    },
    async listRuns(ownerId, opts) {
      usable();
      const { limit, after } = pageStart(opts);
      // One more than asked tells whether another page follows.
      const rows = after
        ? q.pageAfter.all({ owner: ownerId, createdAt: after.createdAt, id: after.id, limit: limit + 1 })
        : q.page.all(ownerId, limit + 1);
      const runs = rows.slice(0, limit).map((r) => run(r)!);
      const last = runs.at(-1);
      return { runs, nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
    },
    async runsByStatus(statuses) {
      usable();
      return statuses.flatMap((s) => q.byStatus.all(s).map((r) => run(r)!));
    },
    async runsUpdatedSince(sinceIso) {
      usable();
      return q.updatedSince.all(sinceIso).map((r) => run(r)!);
    },
    async findRunByIdempotencyKey(ownerId, key) {
      usable();
      return run(q.byIdempotencyKey.get(ownerId, key));
    },
    async countActiveRuns(ownerId) {
      usable();
      return q.countActive.get(ownerId)!.n;
    },
    async deleteRun(id) {
      usable();
      const existed = deleteRun(id);
      forgetDeleted();
      return existed;
    },
    async purgeFinishedBefore(cutoffIso, limit) {
      usable();
      const ids = q.finishedBefore.all({ cutoff: cutoffIso, now: now().toISOString(), limit }).map((r) => r.id);
      for (const id of ids) deleteRun(id);
      if (ids.length) forgetDeleted();
      return ids;
    },

    // --- groups
    async createGroup(group) {
      usable();
      if (q.group.get(group.id)) throw new EngineError("internal", `group ${group.id} already exists`);
      w.putGroup(valid(GroupRecord, group, "group"));
    },
    async getGroup(id) {
      usable();
      const r = q.group.get(id);
      return r ? fromRow(GroupRecord, r.data, "group") : undefined;
    },
    async updateGroup(id, patch) {
      usable();
      const r = q.group.get(id);
      if (!r) throw new EngineError("group_not_found", `group ${id} not found`, { groupId: id });
      const next = valid(GroupRecord, { ...fromRow(GroupRecord, r.data, "group"), ...patch, id }, "group");
      w.putGroup(next);
      return next;
    },

    // --- turns
    async addTurn(turn) {
      usable();
      if (q.turn.get(turn.runId, turn.n))
        throw new EngineError("internal", `run ${turn.runId} already has turn ${turn.n}`);
      w.putTurn(valid(TurnRecord, turn, "turn"));
    },
    async updateTurn(runId, n, patch) {
      usable();
      const r = q.turn.get(runId, n);
      if (!r) throw new EngineError("run_not_found", `run ${runId} has no turn ${n}`, { runId, turn: n });
      w.putTurn(valid(TurnRecord, { ...fromRow(TurnRecord, r.data, "turn"), ...patch, runId, n }, "turn"));
    },
    async listTurns(runId) {
      usable();
      return q.turns.all(runId).map((r) => fromRow(TurnRecord, r.data, "turn"));
    },

    // --- events
    async appendEvent(runId, event) {
      usable();
      return events.append(runId, event);
    },
    async readEvents(runId, after = 0, limit = Number.POSITIVE_INFINITY, opts = {}) {
      usable();
      return events.read(runId, after, limit, opts.maxBytes ?? Number.POSITIVE_INFINITY);
    },
    async lastEventId(runId) {
      usable();
      return events.lastId(runId);
    },

    // --- patches and whole summaries
    async putPatch(runId, patch) {
      usable();
      await patches.put(runId, patch);
    },
    async getPatch(runId) {
      usable();
      return (await patches.get(runId))?.text;
    },
    async getBinaryPatch(runId) {
      usable();
      return (await patches.get(runId))?.binary;
    },
    async putSummary(runId, text) {
      usable();
      await summaries.put(runId, text);
    },
    async getSummary(runId) {
      usable();
      return summaries.get(runId);
    },

    ...createRecordMethods(db, w, bodies, usable),

    async close() {
      if (closed) return;
      closed = true;
      try {
        db.close();
      } finally {
        await releaseLock();
      }
    },
  };
  return store;
}

/** The reads of runs, turns and groups, and the deletes of a run's rows. */
function queries(db: Db) {
  const finished = `status IN ('completed', 'failed', 'cancelled')
    OR (status = 'idle' AND coalesce(json_extract(data, '$.sessionExpiresAt'), '') <= @now)`;
  return {
    run: db.prepare<[string], Row>("SELECT data FROM runs WHERE id = ?"),
    page: db.prepare<[string, number], Row>(
      "SELECT data FROM runs WHERE owner_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
    ),
    pageAfter: db.prepare<[{ owner: string; createdAt: string; id: string; limit: number }], Row>(
      `SELECT data FROM runs WHERE owner_id = @owner AND (created_at < @createdAt OR (created_at = @createdAt AND id < @id))
       ORDER BY created_at DESC, id DESC LIMIT @limit`,
    ),
    byStatus: db.prepare<[string], Row>("SELECT data FROM runs WHERE status = ?"),
    updatedSince: db.prepare<[string], Row>("SELECT data FROM runs WHERE updated_at >= ? ORDER BY updated_at"),
    byIdempotencyKey: db.prepare<[string, string], Row>(
      "SELECT data FROM runs WHERE owner_id = ? AND idempotency_key = ? LIMIT 1",
    ),
    countActive: db.prepare<[string], { n: number }>(
      "SELECT count(*) AS n FROM runs WHERE owner_id = ? AND status IN ('queued', 'running', 'idle')",
    ),
    finishedBefore: db.prepare<[{ cutoff: string; now: string; limit: number }], { id: string }>(
      `SELECT id FROM runs WHERE updated_at < @cutoff AND (${finished}) ORDER BY updated_at LIMIT @limit`,
    ),
    group: db.prepare<[string], Row>("SELECT data FROM groups WHERE id = ?"),
    turn: db.prepare<[string, number], Row>("SELECT data FROM turns WHERE run_id = ? AND n = ?"),
    turns: db.prepare<[string], Row>("SELECT data FROM turns WHERE run_id = ? ORDER BY n"),
    deliveryIdsOfRun: db.prepare<[string], { id: string }>("SELECT id FROM deliveries WHERE run_id = ?"),
    deleteRun: db.prepare<[string]>("DELETE FROM runs WHERE id = ?"),
    deleteTurns: db.prepare<[string]>("DELETE FROM turns WHERE run_id = ?"),
    deleteSecrets: db.prepare<[string]>("DELETE FROM secrets WHERE run_id = ?"),
    deleteDeliveries: db.prepare<[string]>("DELETE FROM deliveries WHERE run_id = ?"),
    deleteRunWebhooks: db.prepare<[string]>("DELETE FROM webhooks WHERE run_id = ?"),
  };
}
