/**
 * The shared Postgres store against the embedded one, and events across replicas:
 * - the store calls behind `GET /runs/{id}` and `GET /runs?limit=20` with 100,000 runs of one
 *   owner, p99 over 2,000 calls each, Postgres vs the embedded store (SQLite);
 * - an event appended through one store (replica A) until another store on the same
 *   database (replica B) has read it back after its NOTIFY (what B's relay does before its SSE
 *   writes the frame), p50/p99, against the same replica (append until the appender has it).
 * Needs the local Postgres (PATCHBAY_BENCH_DATABASE_URL, default trust auth on 127.0.0.1).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { RunRecord } from "../src/engine/run/schema.ts";
import { createSqliteStore } from "../src/engine/store/sqlite.ts";
import { createPostgresStore } from "../src/engine/store/pg/postgres.ts";
import type { RunStore } from "../src/engine/store/store.ts";
import { pct, row, type BenchModule } from "./harness.ts";
import { sampleEvent, sampleRun } from "./seed.ts";
import { benchDatabase } from "./support.ts";

const RUNS = 100_000;
const CALLS = 2_000;
const EVENTS = 500;
const OWNER = "own_bench";

async function timed(n: number, call: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await call(i);
    out.push(performance.now() - t);
  }
  return out;
}

function seedRuns(): RunRecord[] {
  const start = Date.parse("2026-01-01T00:00:00Z");
  return Array.from({ length: RUNS }, (_, i) => sampleRun(i, OWNER, new Date(start + i * 1000)));
}

async function readLatency(store: RunStore, runs: RunRecord[]): Promise<{ get: number; list: number }> {
  const get = await timed(CALLS, (i) => store.getRun(runs[(i * 7919) % runs.length]!.id));
  const list = await timed(CALLS, () => store.listRuns(OWNER, { limit: 20 }));
  return { get: pct(get, 0.99), list: pct(list, 0.99) };
}

export const replicas: BenchModule = {
  name: "replicas",
  async run() {
    const runs = seedRuns();
    const db = await benchDatabase();
    const url = db.url;
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-replicas-"));
    try {
      const embedded0 = await createSqliteStore({ dataDir });
      await Promise.all(runs.map((r) => embedded0.createRun(r)));
      const embedded = await readLatency(embedded0, runs);
      await embedded0.close();

      const a = await createPostgresStore({ url });
      const b = await createPostgresStore({ url });
      // Bulk seed in one statement per 5,000 rows: the API's one insert per run takes minutes.
      for (let i = 0; i < runs.length; i += 5000) {
        const batch = runs.slice(i, i + 5000);
        await a.db.count(
          `INSERT INTO runs (id, owner_id, status, created_at, data)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::json[])`,
          [
            batch.map((r) => r.id),
            batch.map((r) => r.ownerId),
            batch.map((r) => r.status),
            batch.map((r) => r.createdAt),
            batch.map((r) => JSON.stringify(r)),
          ],
        );
      }
      await a.db.count("ANALYZE runs");
      const shared = await readLatency(a, runs);

      // Events: same replica (the append resolves: the appender publishes it then) and the other
      // replica (NOTIFY heard, event read back: when its relay publishes it).
      const same = await timed(EVENTS, (i) => a.appendEvent("run_lat", sampleEvent(i)));
      const cross: number[] = [];
      const waiting = new Map<number, (ms: number) => void>();
      const stop = b.watchEvents((runId, lastId) => {
        if (runId !== "run_cross") return;
        void b.readEvents("run_cross", lastId - 1, 1).then(([e]) => e && waiting.get(e.id)?.(performance.now()));
      });
      for (let i = 1; i <= EVENTS; i++) {
        const t = performance.now();
        const heard = new Promise<number>((r) => waiting.set(i, r));
        await a.appendEvent("run_cross", sampleEvent(i));
        cross.push((await heard) - t);
        waiting.delete(i);
      }
      stop();
      await a.close();
      await b.close();
      return {
        name: "replicas",
        rows: [
          row(
            "getRun p99 (GET /runs/{id})",
            embedded.get,
            shared.get,
            "ms",
            "baseline the embedded store (SQLite), value Postgres",
          ),
          row(
            "listRuns limit 20 p99 (GET /runs?limit=20)",
            embedded.list,
            shared.list,
            "ms",
            "baseline the embedded store (SQLite), value Postgres",
          ),
          row("event latency p50", pct(same, 0.5), pct(cross, 0.5), "ms", "baseline same replica, value A -> B"),
          row("event latency p99", pct(same, 0.99), pct(cross, 0.99), "ms", "baseline same replica, value A -> B"),
        ],
      };
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
      await db.drop();
    }
  },
};
