/**
 * Work that one replica at a time may do for a key (an owner's run admissions: the active-run
 * cap and Idempotency-Key replays), under a Postgres advisory lock held on a connection of a
 * small pool of its own, so lock holders never wait for the connections their work uses.
 */
import pg from "pg";

export interface Exclusive {
  exclusive<T>(key: string, work: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export function createExclusive(url: string, max = 4): Exclusive {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle connection the server dropped: the pool opens another at the next connect.
  pool.on("error", () => undefined);
  return {
    async exclusive(key, work) {
      const client = await pool.connect();
      try {
        await client.query("SELECT pg_advisory_lock(hashtextextended($1, 17))", [key]);
        try {
          return await work();
        } finally {
          await client.query("SELECT pg_advisory_unlock(hashtextextended($1, 17))", [key]);
        }
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}
