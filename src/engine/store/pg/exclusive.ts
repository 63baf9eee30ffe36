/**
 * Work that one replica at a time may do for a key (an owner's run admissions: the active-run
 * cap and Idempotency-Key replays), under a Postgres advisory lock held on a connection of a
 * small pool of its own, so lock holders never wait for the connections their work uses.
 */
import pg from "pg";
import { holdClient } from "./db.ts";
import type { DatabaseHealth } from "./health.ts";

export interface Exclusive {
  exclusive<T>(key: string, work: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export function createExclusive(url: string, health: DatabaseHealth, max = 4): Exclusive {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle connection the server dropped: the pool opens another at the next connect.
  pool.on("error", (e) => health.failed(e));
  return {
    async exclusive(key, work) {
      const { client, release } = await holdClient(pool, health);
      try {
        await client.query("SELECT pg_advisory_lock(hashtextextended($1, 17))", [key]).catch((e: unknown) => {
          throw health.failure(e);
        });
        try {
          return await work();
        } finally {
          // A lock whose connection was lost went with it.
          await client.query("SELECT pg_advisory_unlock(hashtextextended($1, 17))", [key]).catch((e: unknown) => {
            if (health.failure(e) === e) throw e;
          });
        }
      } finally {
        release();
      }
    },
    close: () => pool.end(),
  };
}
