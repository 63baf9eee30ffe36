/**
 * Store growth: the cost of appending an event and of reading a run (its record plus the
 * last 100 events, what a reconnecting client asks for) when the run's log holds 1k, 100k
 * and 1M events. Both should stay flat: appends are O(1) on a JSONL file and reads use the
 * offset index. The 1k figures are the baseline. Then the same in runs (store-runs.ts):
 * a status write and the two run reads at 1,000 and at 100,000 runs.
 */
import fs from "node:fs";
import { createSqliteStore } from "../src/engine/store/sqlite.ts";
import type { RunStore } from "../src/engine/store/store.ts";
import { mean, median, row, usSince, type BenchModule, type Row } from "./harness.ts";
import { benchTempDir } from "./support.ts";
import { sampleEvent, sampleRun } from "./seed.ts";
import { runGrowthRows } from "./store-runs.ts";

const CHECKPOINTS = [1_000, 100_000, 1_000_000];
const SAMPLE = 1_000;
const TAIL = 100;
const REPEATS = 25;

interface Point {
  appendUs: number;
  readUs: number;
}

async function readRunUs(store: RunStore, runId: string): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const t = process.hrtime.bigint();
    const run = await store.getRun(runId);
    const last = await store.lastEventId(runId);
    const events = await store.readEvents(runId, last - TAIL, TAIL);
    times.push(usSince(t));
    if (!run || events.length !== TAIL) throw new Error(`read ${events.length} events`);
  }
  return median(times);
}

export const storeGrowth: BenchModule = {
  name: "store-growth",
  async run() {
    const dataDir = benchTempDir("growth");
    try {
      let store = await createSqliteStore({ dataDir });
      const run = sampleRun(1, "owner-bench", new Date());
      await store.createRun(run);
      // JIT warm-up on another run, so compilation is not mistaken for growth.
      for (let i = 0; i < 5 * SAMPLE; i++) await store.appendEvent("run_warmup", sampleEvent(i));
      const points = new Map<number, Point>();
      let n = 0;
      for (const target of CHECKPOINTS) {
        // Fill up to the checkpoint minus the measured sample, untimed.
        while (n < target - SAMPLE) await store.appendEvent(run.id, sampleEvent(n++));
        const times: number[] = [];
        while (n < target) {
          const t = process.hrtime.bigint();
          await store.appendEvent(run.id, sampleEvent(n++));
          times.push(usSince(t));
        }
        points.set(target, { appendUs: mean(times), readUs: await readRunUs(store, run.id) });
      }
      await store.close();

      // After a restart nothing is indexed: the first read of a 1M log reaches back only as far as it needs.
      const t = process.hrtime.bigint();
      store = await createSqliteStore({ dataDir });
      const openUs = usSince(t);
      const t2 = process.hrtime.bigint();
      await store.readEvents(run.id, (await store.lastEventId(run.id)) - TAIL, TAIL);
      const firstReadUs = usSince(t2);
      await store.close();

      const base = points.get(CHECKPOINTS[0]!)!;
      const rows: Row[] = [];
      for (const c of CHECKPOINTS.slice(1)) {
        const p = points.get(c)!;
        const at = c.toLocaleString("en");
        rows.push(
          row(`append at ${at} events vs at 1,000`, base.appendUs, p.appendUs, "µs/event", `mean of ${SAMPLE}`),
        );
        rows.push(
          row(
            `read run + last ${TAIL} events at ${at} vs at 1,000`,
            base.readUs,
            p.readUs,
            "µs/read",
            `median of ${REPEATS}`,
          ),
        );
      }
      rows.push(
        row(
          "first read of the last 100 of 1,000,000 events after a restart vs warm at 1,000",
          base.readUs,
          firstReadUs,
          "µs/read",
          `store open took ${(openUs / 1000).toFixed(1)} ms`,
        ),
      );
      rows.push(...(await runGrowthRows()));
      return { name: "store-growth", rows };
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  },
};
