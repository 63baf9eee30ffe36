/**
 * API under load: a store of 10,000 runs and 1,000,000 events, a `patchbay serve` child, and
 * autocannon in this process (the second process) holding 200 requests/s on
 * `GET /runs/{id}` and `GET /runs?limit=20`. `GET /healthz` at the same rate is the floor:
 * the ratio is what the store and the auth path add over express answering a constant.
 */
import fs from "node:fs";
import autocannon from "autocannon";
import { row, type BenchModule, type Row } from "./harness.ts";
import { benchTempDir } from "./support.ts";
import { seedStore } from "./seed.ts";
import { startServerProcess } from "./server-process.ts";

const RUNS = 10_000;
const EVENTS = 1_000_000;
const RATE = 200;
const DURATION_S = 10;

export interface Latency {
  /** Every response's latency (ms), sorted: for pooling several loads into one percentile. */
  times: number[];
  p50: number;
  p99: number;
  rps: number;
  errors: number;
  non2xx: number;
}

/** `RATE` requests/s of `paths()` for `durationS` from this process; latencies from autocannon's timings. */
export async function load(
  url: string,
  paths: () => string,
  apiKey: string,
  connections: number,
  durationS = DURATION_S,
): Promise<Latency> {
  // autocannon's own histogram has 1 ms resolution; its response event carries hrtime-based ms.
  const times: number[] = [];
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections,
        overallRate: RATE,
        duration: durationS,
        headers: { authorization: `Bearer ${apiKey}` },
        requests: [{ setupRequest: (req) => ({ ...req, path: paths() }) }],
      },
      (err, res) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(res)),
    );
    instance.on("response", (_client, _status, _bytes, ms) => times.push(ms));
  });
  times.sort((a, b) => a - b);
  const pct = (p: number) => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))] ?? Number.NaN;
  return {
    times,
    p50: pct(50),
    p99: pct(99),
    rps: result.requests.average,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
}

export const apiLoad: BenchModule = {
  name: "api-load",
  async run() {
    const dataDir = benchTempDir("api");
    try {
      // Baseline for the start time: the same server on an empty data dir.
      const emptyDir = benchTempDir("empty");
      let emptyStartMs: number;
      try {
        const empty = await startServerProcess({
          // No warm pool: this measures the API, and a pooled opencode started during the short
          // life of this server was left running after it stopped.
          env: { PATCHBAY_DATA_DIR: emptyDir, PORT: "0", PATCHBAY_LOG_LEVEL: "info", PATCHBAY_WARM_POOL_SIZE: "0" },
        });
        emptyStartMs = empty.startMs;
        await empty.stop();
      } finally {
        fs.rmSync(emptyDir, { recursive: true, force: true });
      }
      const seeded = await seedStore({ dataDir, runs: RUNS, events: EVENTS });
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
        // Warm up JIT and caches at the same rate for a moment.
        await load(server.url, () => "/healthz", seeded.apiKey, 1);
        const rssBefore = server.rssMb();
        const pick = () => seeded.runIds[Math.floor(Math.random() * seeded.runIds.length)]!;
        const rows: Row[] = [];
        const failures: Latency[] = [];
        // One connection paces requests evenly (service latency); ten connections fire in
        // bursts of ten (autocannon splits the rate per connection), which adds queueing.
        for (const connections of [1, 10]) {
          const floor = await load(server.url, () => "/healthz", seeded.apiKey, connections);
          const one = await load(server.url, () => `/api/v1/coding-agent/runs/${pick()}`, seeded.apiKey, connections);
          const list = await load(server.url, () => "/api/v1/coding-agent/runs?limit=20", seeded.apiKey, connections);
          failures.push(one, list);
          const note = (l: Latency) =>
            `${RATE} req/s offered, ${connections} connection(s), ${DURATION_S} s, from a second process; achieved ${l.rps.toFixed(0)} req/s` +
            (l.rps < RATE * 0.95 ? " (the offered rate was not reached on this machine)" : "");
          const c = `${connections} conn`;
          rows.push(
            row(`GET /runs/{id} p50 vs /healthz p50 (${c})`, floor.p50, one.p50, "ms", note(one)),
            row(`GET /runs/{id} p99 vs /healthz p99 (${c})`, floor.p99, one.p99, "ms"),
            row(`GET /runs?limit=20 p50 vs /healthz p50 (${c})`, floor.p50, list.p50, "ms", note(list)),
            row(`GET /runs?limit=20 p99 vs /healthz p99 (${c})`, floor.p99, list.p99, "ms"),
          );
        }
        const rssAfter = server.rssMb();
        rows.push(
          row(
            `server start with ${RUNS.toLocaleString("en")} runs / ${EVENTS.toLocaleString("en")} events vs empty`,
            emptyStartMs,
            server.startMs,
            "ms",
            `spawn to listening; seeding took ${(seeded.seedMs / 1000).toFixed(1)} s`,
          ),
          row("server RSS after load vs before", rssBefore, rssAfter, "MB"),
        );
        if (failures.some((l) => l.errors + l.non2xx > 0)) {
          const counts = failures.map(({ errors, non2xx, rps }) => ({ errors, non2xx, rps }));
          throw new Error(`requests failed under load: ${JSON.stringify(counts)}`);
        }
        return { name: "api-load", rows };
      } finally {
        await server.stop();
      }
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  },
};
