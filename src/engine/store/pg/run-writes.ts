/**
 * Writes to one run's record and event log in Postgres: event appends, run updates and
 * transitions (a run update and its event). Calls for one run go through one lane in call
 * order; what queued up while a transaction ran is written in the next one, together, so a
 * busy run costs one commit per batch and not per event.
 *
 * Event ids come from the run's row in `run_event_heads`: a transaction takes its row lock
 * with the increment and keeps it until it commits, so appends from every replica get ids
 * 1..n with no gap or duplicate, and commit in id order (a reader never sees event n+1
 * before event n). Each batch that appended ends with one NOTIFY (channel `patchbay_events`,
 * sent at commit) naming the run and its last id, so followers on other replicas wake.
 *
 * Every batch first locks the run's row (one lock order, run then head, on every replica) and,
 * when this replica leased the run, checks the lease epoch it was given (leases.ts): a replica
 * that stalled past its lease and lost the run has the whole batch refused with `lease_lost`,
 * nothing written and nothing announced.
 */
import type pg from "pg";
import { EngineError } from "../../errors.ts";
import { RunEvent, type NewRunEvent } from "../../events/schema.ts";
import { isTerminal, RunRecord, type RunStatus } from "../../run/schema.ts";
import { valid } from "../sqlite-tables.ts";
import type { Db, HeldClient } from "./db.ts";
import { assertLease, leaseLost, type LeaseBook } from "./leases.ts";

export const EVENTS_CHANNEL = "patchbay_events";

type Op =
  | { kind: "append"; event: NewRunEvent; done: Settle<RunEvent> }
  | { kind: "update"; patch: Partial<RunRecord>; done: Settle<RunRecord> }
  | {
      kind: "transition";
      patch: Partial<RunRecord>;
      build: (run: RunRecord) => NewRunEvent;
      done: Settle<{ run: RunRecord; event: RunEvent }>;
    };
interface Settle<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

export interface RunWrites {
  append(runId: string, event: NewRunEvent): Promise<RunEvent>;
  update(runId: string, patch: Partial<RunRecord>): Promise<RunRecord>;
  transition(
    runId: string,
    patch: Partial<RunRecord>,
    build: (run: RunRecord) => NewRunEvent,
  ): Promise<{ run: RunRecord; event: RunEvent }>;
  /** Resolves when every write queued so far has settled. */
  settled(): Promise<void>;
  /** Resolves when every write queued so far for the run has settled. */
  settledRun(runId: string): Promise<void>;
}

export interface RunWritesOptions {
  /** Connections for the batches' transactions, and the database's health they report to. */
  db: Pick<Db, "hold" | "health">;
  now: () => Date;
  /** Sent in each NOTIFY, so a replica can skip what it appended itself; the lease owner it sets. */
  replicaId: string;
  /** How long a lease taken by a status change lasts before a heartbeat must extend it. */
  leaseMs: number;
  /** The runs this replica leased: their writes are fenced, and status changes update it. */
  leases: LeaseBook;
}

/**
 * A status change moves the run's lease: the replica that makes a run running or idle is the
 * one holding its session; a finished run has none; queued keeps what it had. When the change
 * comes from a replica other than the holder, the lease changed hands: its epoch grows, and
 * the old holder's writes are refused from then on.
 */
const LEASED_UPDATE = `UPDATE runs SET status = $2, data = $3,
    lease_epoch = CASE WHEN $2 <> 'queued' AND lease_owner IS DISTINCT FROM $4 THEN lease_epoch + 1
                       ELSE lease_epoch END,
    lease_owner = CASE WHEN $2 IN ('running', 'idle') THEN $4
                       WHEN $2 IN ('completed', 'failed', 'cancelled') THEN NULL ELSE lease_owner END,
    lease_until = CASE WHEN $2 IN ('running', 'idle') THEN now() + $5 * interval '1 millisecond'
                       WHEN $2 IN ('completed', 'failed', 'cancelled') THEN NULL ELSE lease_until END
  WHERE id = $1
  RETURNING lease_epoch`;

/** Ops one transaction takes at most: bounds a transaction's length under a flood of appends. */
const MAX_BATCH = 200;

export function createRunWrites(opts: RunWritesOptions): RunWrites {
  const lanes = new Map<string, { queue: Op[]; running: Promise<void> }>();

  function enqueue<T>(runId: string, make: (done: Settle<T>) => Op): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let lane = lanes.get(runId);
      const op = make({ resolve, reject });
      if (lane) {
        lane.queue.push(op);
        return;
      }
      lane = { queue: [op], running: Promise.resolve() };
      lanes.set(runId, lane);
      lane.running = drain(runId, lane.queue);
    });
  }

  async function drain(runId: string, queue: Op[]): Promise<void> {
    // Let the calls of this tick join the first batch.
    await Promise.resolve();
    while (queue.length) {
      const batch = queue.splice(0, MAX_BATCH);
      await writeBatch(runId, batch);
    }
    lanes.delete(runId);
  }

  async function writeBatch(runId: string, batch: Op[]): Promise<void> {
    const results: (() => void)[] = [];
    // The last status change's lease: applied to the book once the batch commits.
    let leased: { status: RunStatus; epoch: number } | undefined;
    let held: HeldClient | undefined;
    try {
      if (opts.leases.fence(runId) === "lost") throw leaseLost(runId);
      held = await opts.db.hold();
      const { client } = held;
      await client.query("BEGIN");
      let run = await lockedRun(client, runId, opts.leases);
      let lastId = 0;
      for (let i = 0; i < batch.length;) {
        const op = batch[i]!;
        if (op.kind === "append") {
          // Consecutive appends: one increment and one insert for all of them.
          let j = i;
          while (j < batch.length && batch[j]!.kind === "append") j++;
          const appends = batch.slice(i, j) as Extract<Op, { kind: "append" }>[];
          const events = await appendEvents(client, runId, appends, results);
          if (events) lastId = events;
          i = j;
          continue;
        }
        if (!run) {
          op.done.reject(new EngineError("run_not_found", `run ${runId} not found`, { runId }));
          i++;
          continue;
        }
        let next: RunRecord;
        let event: RunEvent | undefined;
        try {
          next = valid(RunRecord, { ...run, ...op.patch, id: runId }, "run");
          if (op.kind === "transition") event = checkedEvent(runId, op.build(structuredClone(next)), 0, opts.now());
        } catch (e) {
          op.done.reject(e);
          i++;
          continue;
        }
        if (op.patch.status === undefined)
          await client.query("UPDATE runs SET data = $2 WHERE id = $1", [runId, JSON.stringify(next)]);
        else {
          const { rows } = await client.query<{ lease_epoch: string }>(LEASED_UPDATE, [
            runId,
            next.status,
            JSON.stringify(next),
            opts.replicaId,
            opts.leaseMs,
          ]);
          leased = { status: next.status, epoch: Number(rows[0]!.lease_epoch) };
        }
        run = next;
        if (op.kind === "transition" && event) {
          const id = await nextIds(client, runId, 1);
          const stored = { ...event, id };
          await insertEvents(client, runId, [stored]);
          lastId = id;
          results.push(() => op.done.resolve({ run: structuredClone(next), event: stored }));
        } else if (op.kind === "update") {
          results.push(() => op.done.resolve(structuredClone(next)));
        }
        i++;
      }
      if (lastId)
        await client.query("SELECT pg_notify($1, $2)", [
          EVENTS_CHANNEL,
          JSON.stringify({ r: runId, id: lastId, s: opts.replicaId }),
        ]);
      await client.query("COMMIT");
      opts.db.health.answered();
      if (leased?.status === "running" || leased?.status === "idle") opts.leases.hold(runId, leased.epoch);
      else if (leased && isTerminal(leased.status)) opts.leases.release(runId);
      for (const settle of results) settle();
    } catch (e) {
      if (held) await held.client.query("ROLLBACK").catch(() => undefined);
      // A database that did not answer is storage_failed (noted once by the health); anything else it refused, internal.
      const failure = opts.db.health.failure(e);
      const error = failure instanceof EngineError ? failure : storeError(runId, failure);
      for (const op of batch) op.done.reject(error);
    } finally {
      held?.release();
    }
  }

  /** Appends a run of consecutive append ops; returns the last id stored (0: none). */
  async function appendEvents(
    client: pg.PoolClient,
    runId: string,
    appends: Extract<Op, { kind: "append" }>[],
    results: (() => void)[],
  ): Promise<number> {
    const at = opts.now();
    const ok: { op: (typeof appends)[number]; event: RunEvent }[] = [];
    for (const op of appends) {
      try {
        ok.push({ op, event: checkedEvent(runId, op.event, 0, at) });
      } catch (e) {
        op.done.reject(e);
      }
    }
    if (!ok.length) return 0;
    const last = await nextIds(client, runId, ok.length);
    const stored = ok.map((o, k) => ({ op: o.op, event: { ...o.event, id: last - ok.length + 1 + k } }));
    await insertEvents(
      client,
      runId,
      stored.map((s) => s.event),
    );
    for (const s of stored) results.push(() => s.op.done.resolve(s.event));
    return last;
  }

  return {
    append: (runId, event) => enqueue(runId, (done) => ({ kind: "append", event, done })),
    update: (runId, patch) => enqueue(runId, (done) => ({ kind: "update", patch, done })),
    transition: (runId, patch, build) => enqueue(runId, (done) => ({ kind: "transition", patch, build, done })),
    async settled() {
      while (lanes.size) await Promise.allSettled([...lanes.values()].map((l) => l.running));
    },
    async settledRun(runId) {
      for (let lane = lanes.get(runId); lane; lane = lanes.get(runId)) await lane.running.catch(() => undefined);
    },
  };
}

/** Reserve `count` ids; returns the last. Holds the run's head row lock until commit. */
async function nextIds(client: pg.PoolClient, runId: string, count: number): Promise<number> {
  const { rows } = await client.query<{ last_id: string }>(
    `INSERT INTO run_event_heads (run_id, last_id) VALUES ($1, $2)
     ON CONFLICT (run_id) DO UPDATE SET last_id = run_event_heads.last_id + $2
     RETURNING last_id`,
    [runId, count],
  );
  return Number(rows[0]!.last_id);
}

async function insertEvents(client: pg.PoolClient, runId: string, events: RunEvent[]): Promise<void> {
  await client.query(
    `INSERT INTO run_events (run_id, id, data)
     SELECT $1, e.id, e.data FROM unnest($2::bigint[], $3::json[]) AS e(id, data)`,
    [runId, events.map((e) => e.id), events.map((e) => JSON.stringify(e))],
  );
}

/**
 * Lock the run's row for the batch and read it; when this replica leased the run, the epoch
 * must still be the one it was given, else the batch is refused (`lease_lost`) and the run
 * marked lost. Appends to a run with no row (none in the engine; tests) are not fenced.
 */
async function lockedRun(client: pg.PoolClient, runId: string, leases: LeaseBook): Promise<RunRecord | undefined> {
  const { rows } = await client.query<{ data: RunRecord; lease_epoch: string }>(
    "SELECT data, lease_epoch FROM runs WHERE id = $1 FOR UPDATE",
    [runId],
  );
  assertLease(leases, runId, rows[0] ? Number(rows[0].lease_epoch) : undefined);
  return rows[0]?.data;
}

/** The event as it will be stored (its id filled in later); throws internal when it fails the schema. */
function checkedEvent(runId: string, event: NewRunEvent, id: number, at: Date): RunEvent {
  // A placeholder id of 1 passes the schema; the real one replaces it.
  const parsed = RunEvent.safeParse({ ...event, id: id || 1, runId, at: at.toISOString() });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new EngineError(
      "internal",
      `refusing to store an invalid ${event.type} event for run ${runId}: ${issue?.path.join(".")}: ${issue?.message}`,
    );
  }
  return parsed.data;
}

/** A database failure, as the engine reports a store that cannot write. */
export function storeError(runId: string | undefined, e: unknown): EngineError {
  const message = e instanceof Error ? e.message : String(e);
  return new EngineError("internal", `the database refused a write${runId ? ` for run ${runId}` : ""}: ${message}`, {
    ...(runId ? { runId } : {}),
  });
}
