/**
 * Fixed-window request counters in Postgres (`rate_counters`), so a per-key request rate holds
 * across replicas: one upsert per request starts a new window when the old one has passed.
 */
import type { Db } from "./db.ts";

export interface WindowCount {
  hits: number;
  resetAt: Date;
}

/** Counters shared by every replica (the HTTP front adapts them to express-rate-limit). */
export interface WindowCounters {
  increment(key: string, windowMs: number): Promise<WindowCount>;
  get(key: string): Promise<WindowCount | undefined>;
  decrement(key: string): Promise<void>;
  reset(key: string): Promise<void>;
}

export function createWindowCounters(db: Db): WindowCounters {
  const toCount = (r: { hits: number; reset_at: Date }): WindowCount => ({ hits: r.hits, resetAt: r.reset_at });
  return {
    async increment(key, windowMs) {
      const [row] = await db.rows<{ hits: number; reset_at: Date }>(
        `INSERT INTO rate_counters AS c (key, hits, reset_at)
         VALUES ($1, 1, clock_timestamp() + $2 * interval '1 millisecond')
         ON CONFLICT (key) DO UPDATE SET
           hits = CASE WHEN c.reset_at <= clock_timestamp() THEN 1 ELSE c.hits + 1 END,
           reset_at = CASE WHEN c.reset_at <= clock_timestamp()
                      THEN clock_timestamp() + $2 * interval '1 millisecond' ELSE c.reset_at END
         RETURNING hits, reset_at`,
        [key, windowMs],
      );
      return toCount(row!);
    },
    async get(key) {
      const [row] = await db.rows<{ hits: number; reset_at: Date }>(
        "SELECT hits, reset_at FROM rate_counters WHERE key = $1 AND reset_at > clock_timestamp()",
        [key],
      );
      return row ? toCount(row) : undefined;
    },
    async decrement(key) {
      await db.count("UPDATE rate_counters SET hits = greatest(hits - 1, 0) WHERE key = $1", [key]);
    },
    async reset(key) {
      await db.count("DELETE FROM rate_counters WHERE key = $1", [key]);
    },
  };
}
