/**
 * Store growth in runs (part of store-growth): what one status write, `GET /runs/{id}` and
 * `GET /runs?limit=20` cost, and the server's RSS, with 1,000 and with 100,000 runs in the
 * store. With PATCHBAY_BENCH_OLD_STORE naming the previous embedded store's module (lowdb.ts of
 * commit a065f07, whose store.json was rewritten whole per write), the same write is measured
 * on it too: the comparison the choice of SQLite rests on (docs/ARCHITECTURE.md).
 */
import fs from "node:fs";
import path from "node:path";
import { createKeyService } from "../src/engine/keys/keys.ts";
import { createSqliteStore } from "../src/engine/store/sqlite.ts";
import type { RunStore } from "../src/engine/store/store.ts";
import { load } from "./api-load.ts";
import { mean, row, usSince, type Row } from "./harness.ts";
import { insertRuns, sampleRun } from "./seed.ts";
import { startServerProcess } from "./server-process.ts";
import { benchTempDir } from "./support.ts";

const SIZES = [1_000, 100_000];
const WRITES = 200;
/** The old store rewrites its whole file per write (seconds at 100k runs): fewer samples. */
const OLD_WRITES = 5;
const OWNER = "owner-bench";

interface Point {
  writeUs: number;
  getP99: number;
  listP99: number;
  rssMb: number;
  seedMs: number;
}

/**
 * Runs a minute apart, the newest two days old: the same (empty) last day at both sizes, so
 * what a start reads of recent runs (webhooks' reconcile, 24 h) does not grow with the store.
 */
const runsOf = (n: number) => {
  const t0 = Date.now() - 2 * 86_400_000 - n * 60_000;
  return Array.from({ length: n }, (_, i) => sampleRun(i, OWNER, new Date(t0 + i * 60_000)));
};

/** Mean of `count` status writes, each awaited (what a run's transition costs). */
async function statusWriteUs(store: RunStore, ids: readonly string[], count: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    await store.updateRun(ids[(i * 7919) % ids.length]!, {
      status: i % 2 ? "completed" : "failed",
      updatedAt: new Date().toISOString(),
    });
    times.push(usSince(t));
  }
  return mean(times);
}

async function measureNew(n: number): Promise<Point> {
  const dataDir = benchTempDir("runs");
  try {
    const runs = runsOf(n);
    const t = Date.now();
    const store = await createSqliteStore({ dataDir });
    insertRuns(dataDir, runs);
    const seedMs = Date.now() - t;
    const { key } = await createKeyService({ store, defaultOwnerId: OWNER }).create({
      name: "bench",
      ownerId: OWNER,
      scopes: ["read:builder", "write:builder"],
    });
    const ids = runs.map((r) => r.id);
    await statusWriteUs(store, ids, 50); // JIT warm-up
    const writeUs = await statusWriteUs(store, ids, WRITES);
    await store.close();

    const server = await startServerProcess({
      env: {
        PATCHBAY_DATA_DIR: dataDir,
        PATCHBAY_WARM_POOL_SIZE: "0",
        PORT: "0",
        PATCHBAY_LOG_LEVEL: "info",
        PATCHBAY_RATE_LIMIT_PER_MIN: "10000000",
      },
    });
    try {
      const pick = () => ids[Math.floor(Math.random() * ids.length)]!;
      await load(server.url, () => `/api/v1/coding-agent/runs/${pick()}`, key, 1, 3);
      const one = await load(server.url, () => `/api/v1/coding-agent/runs/${pick()}`, key, 1);
      const list = await load(server.url, () => "/api/v1/coding-agent/runs?limit=20", key, 1);
      if (one.errors + one.non2xx + list.errors + list.non2xx > 0) throw new Error("requests failed");
      return { writeUs, getP99: one.p99, listP99: list.p99, rssMb: server.rssMb(), seedMs };
    } finally {
      await server.stop();
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The previous store (module path in PATCHBAY_BENCH_OLD_STORE): one status write at n runs, and store.json's size. */
async function measureOld(module: string, n: number): Promise<{ writeUs: number; fileMb: number }> {
  const { createLowdbStore } = (await import(module)) as {
    createLowdbStore: (o: { dataDir: string }) => Promise<RunStore>;
  };
  const dataDir = benchTempDir("runs-old");
  try {
    const store = await createLowdbStore({ dataDir });
    const runs = runsOf(n);
    // Issued in one tick: that store batches them into one write of store.json.
    await Promise.all(runs.map((r) => store.createRun(r)));
    const ids = runs.map((r) => r.id);
    await statusWriteUs(store, ids, 2);
    const writeUs = await statusWriteUs(store, ids, n > 10_000 ? OLD_WRITES : WRITES);
    await store.close();
    return { writeUs, fileMb: fs.statSync(path.join(dataDir, "store.json")).size / 1e6 };
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

export async function runGrowthRows(): Promise<Row[]> {
  const [small, big] = SIZES as [number, number];
  const at = (n: number) => n.toLocaleString("en");
  const a = await measureNew(small);
  const b = await measureNew(big);
  const rows: Row[] = [
    row(`status write at ${at(big)} runs vs at ${at(small)}`, a.writeUs, b.writeUs, "µs/write", `mean of ${WRITES}`),
    row(`GET /runs/{id} p99 at ${at(big)} runs vs at ${at(small)}`, a.getP99, b.getP99, "ms", "200 req/s, 10 s"),
    row(`GET /runs?limit=20 p99 at ${at(big)} runs vs at ${at(small)}`, a.listP99, b.listP99, "ms", "200 req/s, 10 s"),
    row(`server RSS at ${at(big)} runs vs at ${at(small)}`, a.rssMb, b.rssMb, "MB", "after the requests"),
    row(`seeding ${at(big)} runs vs ${at(small)}`, a.seedMs, b.seedMs, "ms", "one transaction"),
  ];
  const oldModule = process.env.PATCHBAY_BENCH_OLD_STORE;
  if (oldModule) {
    for (const n of SIZES) {
      const old = await measureOld(oldModule, n);
      const mine = n === small ? a : b;
      rows.push(
        row(
          `status write at ${at(n)} runs: old store.json (baseline) vs store.db`,
          old.writeUs,
          mine.writeUs,
          "µs/write",
          `old: store.json ${old.fileMb.toFixed(1)} MB, mean of ${n > 10_000 ? OLD_WRITES : WRITES}`,
        ),
      );
    }
  }
  return rows;
}
