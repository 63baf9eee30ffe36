/**
 * Event logs: an append must cost the same at event 50,000 as at event 1 (append-only JSONL,
 * not a rewrite of the store), and reading the last 1,000 events of a 50k log must cost
 * about what reading a whole 1k log does (offset index, not a re-parse from the start).
 */
import fs from "node:fs";
import type { NewRunEvent } from "../src/engine/events/schema.ts";
import { createSqliteStore } from "../src/engine/store/sqlite.ts";
import type { RunStore } from "../src/engine/store/store.ts";
import { mean, median, row, usSince, type BenchModule } from "./harness.ts";
import { benchTempDir } from "./support.ts";

const TOTAL = 50_000;
const WINDOW = 1_000;
const READ_REPEATS = 15;

/** A representative stored event: a tool call with a little output. */
function event(i: number): NewRunEvent {
  return {
    type: "builder.event",
    turn: 1,
    data: {
      kind: "tool",
      tool: "edit",
      callId: `call_${i}`,
      status: "completed",
      title: `src/file${i % 50}.ts`,
      output: "x".repeat(160),
    },
  };
}

async function timeRead(store: RunStore, runId: string, after: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < READ_REPEATS; i++) {
    const t = process.hrtime.bigint();
    const events = await store.readEvents(runId, after, WINDOW);
    times.push(usSince(t));
    if (events.length !== WINDOW) throw new Error(`expected ${WINDOW} events, got ${events.length}`);
  }
  return median(times);
}

export const eventAppend: BenchModule = {
  name: "event-append",
  async run() {
    const dataDir = benchTempDir("append");
    try {
      let store = await createSqliteStore({ dataDir });
      // Warm up on another run first, so JIT compilation is not mistaken for growth.
      for (let i = 0; i < 5 * WINDOW; i++) await store.appendEvent("run_warmup", event(i));
      const perAppend: number[] = [];
      for (let i = 0; i < TOTAL; i++) {
        const t = process.hrtime.bigint();
        await store.appendEvent("run_big", event(i));
        perAppend.push(usSince(t));
      }
      for (let i = 0; i < WINDOW; i++) await store.appendEvent("run_small", event(i));
      const first = mean(perAppend.slice(0, WINDOW));
      const last = mean(perAppend.slice(-WINDOW));
      // The mean carries the odd GC pause (~2 ms) wherever it falls; the median does not.
      const firstMedian = median(perAppend.slice(0, WINDOW));
      const lastMedian = median(perAppend.slice(-WINDOW));

      // Warm: both logs were written by this process, so their offsets are known.
      const small = await timeRead(store, "run_small", 0);
      const bigTail = await timeRead(store, "run_big", TOTAL - WINDOW);
      await store.close();

      // Cold: a restarted process knows no offsets. Resuming near the end of the big log reads
      // the file backwards only as far as needed, so even the first read stays cheap.
      store = await createSqliteStore({ dataDir });
      const smallCold = await timeRead(store, "run_small", 0);
      let t = process.hrtime.bigint();
      await store.readEvents("run_big", TOTAL - WINDOW, WINDOW);
      const firstTail = usSince(t);
      const bigTailAfter = await timeRead(store, "run_big", TOTAL - WINDOW);
      // Reading from the start of the big log indexes all of it, once.
      t = process.hrtime.bigint();
      await store.readEvents("run_big", 0, WINDOW);
      const firstHead = usSince(t);
      await store.close();

      return {
        name: "event-append",
        rows: [
          row(
            `append: last ${WINDOW} vs first ${WINDOW} of ${TOTAL.toLocaleString("en")}`,
            first,
            last,
            "µs/event",
            "mean per appendEvent (validate + appendFileSync)",
          ),
          row(`append: same, median`, firstMedian, lastMedian, "µs/event", "median per appendEvent"),
          row(
            `readEvents(after=${TOTAL - WINDOW}) of a 50k log vs after=0 of a 1k log`,
            small,
            bigTail,
            "µs/read",
            `${WINDOW} events per read, median of ${READ_REPEATS}`,
          ),
          row(
            "same, after a restart (first read excluded)",
            smallCold,
            bigTailAfter,
            "µs/read",
            `median of ${READ_REPEATS}`,
          ),
          row(
            `first read of a 50k log after a restart, after=${TOTAL - WINDOW}`,
            smallCold,
            firstTail,
            "µs/read",
            "learns offsets backwards from the end, only as far as needed",
          ),
          row(
            "first read of a 50k log after a restart, after=0",
            smallCold,
            firstHead,
            "µs/read",
            "one-time pass over the whole file (validates every line)",
          ),
        ],
      };
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  },
};
