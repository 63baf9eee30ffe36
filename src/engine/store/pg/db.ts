/**
 * The Postgres store's access to its pool: a query answers json rows already parsed (node-pg
 * parses json columns), a transaction is a callback, and a closed store refuses every call
 * with `shutting_down`, as the embedded one does. A call the database did not answer throws
 * `storage_failed`, and the outage is told to the store's health (health.ts).
 */
import pg from "pg";
import { EngineError } from "../../errors.ts";
import type { DatabaseHealth } from "./health.ts";

/** Queries on one connection or the pool. `data` is the json column every record table has. */
export interface Queries {
  one<T>(sql: string, params?: unknown[]): Promise<T | undefined>;
  many<T>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Rows changed. */
  count(sql: string, params?: unknown[]): Promise<number>;
  rows<T extends pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<T[]>;
}

/** A connection taken from a pool for work of its own; `release` gives it back (or drops it once broken). */
export interface HeldClient {
  client: pg.PoolClient;
  release(): void;
}

export interface Db extends Queries {
  readonly pool: pg.Pool;
  /** Whether the database answers, shared with the store's other connections. */
  readonly health: DatabaseHealth;
  /** Run `work` in one transaction (committed when it resolves, rolled back when it throws). */
  tx<T>(work: (q: Queries) => Promise<T>): Promise<T>;
  /** A connection of the pool for a transaction written by hand (run-writes.ts). */
  hold(): Promise<HeldClient>;
  /** Throws shutting_down once the store is closed. */
  usable(): void;
  close(): Promise<void>;
}

/**
 * Take a connection from `pool`. pg emits a lost connection on the client that holds it, and
 * with no listener that 'error' would end the process: while held, it is told to `health`.
 */
export async function holdClient(pool: pg.Pool, health: DatabaseHealth): Promise<HeldClient> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (e) {
    throw health.failure(e);
  }
  const onError = (e: Error) => health.failed(e);
  client.on("error", onError);
  return {
    client,
    release() {
      client.off("error", onError);
      // The pool drops a client whose connection broke instead of lending it again.
      client.release();
    },
  };
}

function queriesOn(client: pg.Pool | pg.PoolClient, usable: () => void, health: DatabaseHealth): Queries {
  const query = async <T extends pg.QueryResultRow>(sql: string, params: unknown[]) => {
    usable();
    try {
      const result = await client.query<T>(sql, params);
      health.answered();
      return result;
    } catch (e) {
      throw health.failure(e);
    }
  };
  const rows = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) =>
    (await query<T>(sql, params)).rows;
  return {
    rows,
    one: async <T>(sql: string, params: unknown[] = []) => (await rows<{ data: T }>(sql, params))[0]?.data,
    many: async <T>(sql: string, params: unknown[] = []) => (await rows<{ data: T }>(sql, params)).map((r) => r.data),
    count: async (sql, params = []) => (await query(sql, params)).rowCount ?? 0,
  };
}

export interface DbOptions {
  url: string;
  /** Connections in the pool. */
  max?: number;
  /** Told of connections lost and calls answered (one warning per outage). */
  health: DatabaseHealth;
}

export function createDb(opts: DbOptions): Db {
  const { health } = opts;
  // A lost database must answer readiness checks and requests with an error, not hang them.
  const pool = new pg.Pool({ connectionString: opts.url, max: opts.max ?? 10, connectionTimeoutMillis: 10_000 });
  // An idle connection the server dropped: the pool opens another at the next call.
  pool.on("error", (e) => health.failed(e));
  let closed = false;
  const usable = () => {
    if (closed) throw new EngineError("shutting_down", "the store is closed");
  };
  const hold = () => holdClient(pool, health);
  return {
    pool,
    health,
    ...queriesOn(pool, usable, health),
    usable,
    hold,
    async tx(work) {
      usable();
      const { client, release } = await hold();
      const control = (sql: string) =>
        client.query(sql).catch((e: unknown) => {
          throw health.failure(e);
        });
      try {
        await control("BEGIN");
        const result = await work(queriesOn(client, usable, health));
        await control("COMMIT");
        return result;
      } catch (e) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw e;
      } finally {
        release();
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}
