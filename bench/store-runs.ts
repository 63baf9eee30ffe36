/**
 * Store growth in runs (part of store-growth): what one status write, `GET /runs/{id}` and
 * `GET /runs?limit=20` cost, and the server's RSS, with 1,000 and with 100,000 runs in the
 * store. With PATCHBAY_BENCH_OLD_STORE naming the previous embedded store's module (lowdb.ts of
 * commit a065f07, whose store.json was rewritten whole per write), the same write is measured
 * on it too: the comparison the choice of SQLite rests on (docs/ARCHITECTURE.md).
 *
 * Both sizes are measured side by side, never one after the other: their writes alternate, and
 * both servers take their load in the same seconds. On a machine shared with other jobs the
 * load changes from minute to minute, and a p99 taken minutes after its baseline measured
 * that change (the same lookup by primary key gave 1.00× in one run and 3.10× in the next).
 */
import fs from "node:fs";
import path from "node:path";
import { createKeyService } from "../src/engine/keys/keys.ts";
import { createSqliteStore } from "../src/engine/store/sqlite.ts";
import type { RunStore } from "../src/engine/store/store.ts";
import { load, type Latency } from "./api-load.ts";
import { mean, row, usSince, type Row } from "./harness.ts";
import { insertRuns, sampleRun } from "./seed.ts";
import { startServerProcess, type ServerProcess } from "./server-process.ts";
import { benchTempDir } from "./support.ts";

const SIZES = [1_000, 100_000] as const;
/** Status writes per store per round, and rounds (the note gives the spread of their ratios). */
const WRITES = 1000;
const WRITE_ROUNDS = 5;
/** Rounds of 10 s of each request kind, both servers at once; the p99 is over all of them. */
const LOAD_ROUNDS = 3;
/** Live runs, the ones status writes land on: the newest of the store. */
const LIVE = 100;
/** The old store rewrites its whole file per write (seconds at 100k runs): fewer samples. */
const OLD_WRITES = 5;
const OWNER = "owner-bench";

/**
 * Runs a minute apart, the newest two days old: the same (empty) last day at both sizes, so
 * what a start reads of recent runs (webhooks' reconcile, 24 h) does not grow with the store.
 */
const runsOf = (n: number) => {
  const t0 = Date.now() - 2 * 86_400_000 - n * 60_000;
  return Array.from({ length: n }, (_, i) => sampleRun(i, OWNER, new Date(t0 + i * 60_000)));
};

interface Seeded {
  dataDir: string;
  /** Oldest first. */
  ids: string[];
  key: string;
  seedMs: number;
}

async function seed(n: number): Promise<Seeded> {
  const dataDir = benchTempDir("runs");
  const runs = runsOf(n);
  const t = Date.now();
  const store = await createSqliteStore({ dataDir });
  try {
    insertRuns(dataDir, runs);
    const seedMs = Date.now() - t;
    const { key } = await createKeyService({ store, defaultOwnerId: OWNER }).create({
      name: "bench",
      ownerId: OWNER,
      scopes: ["read:builder", "write:builder"],
    });
    return { dataDir, ids: runs.map((r) => r.id), key, seedMs };
  } finally {
    await store.close();
  }
}

/** One awaited status write (what a run's transition costs), in µs. */
async function statusWriteUs(store: RunStore, id: string, i: number): Promise<number> {
  const t = process.hrtime.bigint();
  await store.updateRun(id, { status: i % 2 ? "completed" : "failed", updatedAt: new Date().toISOString() });
  return usSince(t);
}

/** Mean write (µs) per store, writes alternating between them; and each round's ratio (second / first). */
async function alternatingWrites(
  stores: readonly RunStore[],
  pick: (ids: readonly string[], i: number) => string,
  seeded: readonly Seeded[],
): Promise<{ us: number[]; ratios: number[] }> {
  const all: number[][] = stores.map(() => []);
  const ratios: number[] = [];
  for (let round = 0; round < WRITE_ROUNDS; round++) {
    const times: number[][] = stores.map(() => []);
    for (let i = 0; i < WRITES; i++)
      for (const [k, store] of stores.entries())
        times[k]!.push(await statusWriteUs(store, pick(seeded[k]!.ids, round * WRITES + i), i));
    ratios.push(mean(times[1]!) / mean(times[0]!));
    times.forEach((t, k) => all[k]!.push(...t));
  }
  return { us: all.map(mean), ratios };
}

const liveRun = (ids: readonly string[], i: number) => ids[ids.length - 1 - ((i * 7919) % LIVE)]!;
const anyRun = (ids: readonly string[], i: number) => ids[(i * 7919) % ids.length]!;

/** "0.91–1.12× over 5 rounds" */
const spread = (ratios: readonly number[], what: string) =>
  `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}× over ${ratios.length} ${what}`;

async function measureWrites(seeded: readonly Seeded[]) {
  const stores = await Promise.all(seeded.map((s) => createSqliteStore({ dataDir: s.dataDir })));
  try {
    for (let i = 0; i < 50; i++)
      for (const [k, s] of stores.entries()) await statusWriteUs(s, anyRun(seeded[k]!.ids, i), i); // JIT warm-up
    const live = await alternatingWrites(stores, liveRun, seeded);
    const any = await alternatingWrites(stores, anyRun, seeded);
    return { live, any };
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
}

/** p99 over every round's responses, per server; and each round's p99 ratio (second / first). */
function pooledP99(rounds: readonly Latency[][]): { p99: number[]; ratios: number[] } {
  const p99Of = (times: number[]) => {
    const s = [...times].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor(0.99 * s.length))]!;
  };
  const p99 = [0, 1].map((k) => p99Of(rounds.flatMap((r) => r[k]!.times)));
  return { p99, ratios: rounds.map((r) => r[1]!.p99 / r[0]!.p99) };
}

async function measureRequests(seeded: readonly Seeded[]) {
  const servers: ServerProcess[] = [];
  try {
    for (const s of seeded)
      servers.push(
        await startServerProcess({
          env: {
            PATCHBAY_DATA_DIR: s.dataDir,
            PATCHBAY_WARM_POOL_SIZE: "0",
            PORT: "0",
            PATCHBAY_LOG_LEVEL: "info",
            PATCHBAY_RATE_LIMIT_PER_MIN: "10000000",
          },
        }),
      );
    const both = (path: (ids: readonly string[]) => string, durationS?: number) =>
      Promise.all(servers.map((srv, k) => load(srv.url, () => path(seeded[k]!.ids), seeded[k]!.key, 1, durationS)));
    const one = (ids: readonly string[]) => `/api/v1/coding-agent/runs/${ids[Math.floor(Math.random() * ids.length)]}`;
    const list = () => "/api/v1/coding-agent/runs?limit=20";
    await both(one, 3); // warm-up
    const gets: Latency[][] = [];
    const lists: Latency[][] = [];
    for (let round = 0; round < LOAD_ROUNDS; round++) {
      gets.push(await both(one));
      lists.push(await both(list));
    }
    if ([...gets, ...lists].flat().some((l) => l.errors + l.non2xx > 0)) throw new Error("requests failed");
    return { get: pooledP99(gets), list: pooledP99(lists), rssMb: servers.map((s) => s.rssMb()) };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
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
    const count = n > 10_000 ? OLD_WRITES : WRITES;
    for (let i = 0; i < 2; i++) await statusWriteUs(store, liveRun(ids, i), i);
    const times: number[] = [];
    for (let i = 0; i < count; i++) times.push(await statusWriteUs(store, liveRun(ids, i), i));
    await store.close();
    return { writeUs: mean(times), fileMb: fs.statSync(path.join(dataDir, "store.json")).size / 1e6 };
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

export async function runGrowthRows(): Promise<Row[]> {
  const [small, big] = SIZES;
  const at = (n: number) => n.toLocaleString("en");
  const seeded: Seeded[] = [];
  try {
    for (const n of SIZES) seeded.push(await seed(n));
    const w = await measureWrites(seeded);
    const r = await measureRequests(seeded);
    const side = "both sizes side by side";
    const load = `200 req/s each, ${LOAD_ROUNDS} rounds of 10 s, ${side}`;
    const rows: Row[] = [
      row(
        `status write at ${at(big)} runs vs at ${at(small)}`,
        w.live.us[0]!,
        w.live.us[1]!,
        "µs/write",
        `a live run (one of the newest ${LIVE}); mean of ${WRITES * WRITE_ROUNDS}, alternating; rounds ${spread(w.live.ratios, "rounds")}`,
      ),
      row(
        `status write to any of ${at(big)} runs vs of ${at(small)}`,
        w.any.us[0]!,
        w.any.us[1]!,
        "µs/write",
        `spread over every run (a server writes only live runs): pages SQLite's cache does not hold, more distinct pages per WAL checkpoint; rounds ${spread(w.any.ratios, "rounds")}`,
      ),
      row(
        `GET /runs/{id} p99 at ${at(big)} runs vs at ${at(small)}`,
        r.get.p99[0]!,
        r.get.p99[1]!,
        "ms",
        `${load}; rounds ${spread(r.get.ratios, "rounds")}`,
      ),
      row(
        `GET /runs?limit=20 p99 at ${at(big)} runs vs at ${at(small)}`,
        r.list.p99[0]!,
        r.list.p99[1]!,
        "ms",
        `${load}; rounds ${spread(r.list.ratios, "rounds")}`,
      ),
      row(`server RSS at ${at(big)} runs vs at ${at(small)}`, r.rssMb[0]!, r.rssMb[1]!, "MB", "after the requests"),
      row(`seeding ${at(big)} runs vs ${at(small)}`, seeded[0]!.seedMs, seeded[1]!.seedMs, "ms", "one transaction"),
    ];
    const oldModule = process.env.PATCHBAY_BENCH_OLD_STORE;
    if (oldModule) {
      for (const [k, n] of SIZES.entries()) {
        const old = await measureOld(oldModule, n);
        rows.push(
          row(
            `status write at ${at(n)} runs: old store.json (baseline) vs store.db`,
            old.writeUs,
            w.live.us[k]!,
            "µs/write",
            `old: store.json ${old.fileMb.toFixed(1)} MB, mean of ${n > 10_000 ? OLD_WRITES : WRITES}`,
          ),
        );
      }
    }
    return rows;
  } finally {
    for (const s of seeded) fs.rmSync(s.dataDir, { recursive: true, force: true });
  }
}
