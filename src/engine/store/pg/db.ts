/**
 * The Postgres store's access to its pool: a query answers json rows already parsed (node-pg
 * parses json columns), a transaction is a callback, and a closed store refuses every call
 * with `shutting_down`, as the embedded one does.
 */
import pg from "pg";
import { EngineError } from "../../errors.ts";

/** Queries on one connection or the pool. `data` is the json column every record table has. */
export interface Queries {
  one<T>(sql: string, params?: unknown[]): Promise<T | undefined>;
  many<T>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Rows changed. */
  count(sql: string, params?: unknown[]): Promise<number>;
  rows<T extends pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<T[]>;
}

export interface Db extends Queries {
  readonly pool: pg.Pool;
  /** Run `work` in one transaction (committed when it resolves, rolled back when it throws). */
  tx<T>(work: (q: Queries) => Promise<T>): Promise<T>;
  /** Throws shutting_down once the store is closed. */
  usable(): void;
  close(): Promise<void>;
}

function queriesOn(client: pg.Pool | pg.PoolClient, usable: () => void): Queries {
  const rows = async <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) => {
    usable();
    return (await client.query<T>(sql, params)).rows;
  };
  return {
    rows,
    one: async <T>(sql: string, params: unknown[] = []) => (await rows<{ data: T }>(sql, params))[0]?.data,
    many: async <T>(sql: string, params: unknown[] = []) => (await rows<{ data: T }>(sql, params)).map((r) => r.data),
    async count(sql, params = []) {
      usable();
      return (await client.query(sql, params)).rowCount ?? 0;
    },
  };
}

export interface DbOptions {
  url: string;
  /** Connections in the pool. */
  max?: number;
  /** A connection the pool lost (the database restarted): logged, and the pool opens another. */
  onError?: (error: Error) => void;
}

export function createDb(opts: DbOptions): Db {
  // A lost database must answer readiness checks and requests with an error, not hang them.
  const pool = new pg.Pool({ connectionString: opts.url, max: opts.max ?? 10, connectionTimeoutMillis: 10_000 });
  pool.on("error", (e) => opts.onError?.(e));
  let closed = false;
  const usable = () => {
    if (closed) throw new EngineError("shutting_down", "the store is closed");
  };
  return {
    pool,
    ...queriesOn(pool, usable),
    usable,
    async tx(work) {
      usable();
      const client = await pool.connect();
      try {
        await client.query("BEGIN");
        const result = await work(queriesOn(client, usable));
        await client.query("COMMIT");
        return result;
      } catch (e) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw e;
      } finally {
        client.release();
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await pool.end();
    },
  };
}
