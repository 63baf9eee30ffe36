/**
 * Retention (PATCHBAY_RETENTION_DAYS): finished runs older than the limit are deleted with
 * everything kept for them, in batches, once at start and then every hour; and what "finished"
 * means for a single delete (`DELETE /runs/{id}`) too.
 */
import type { Logger } from "../log.ts";
import type { RunStore } from "../store/store.ts";
import { isTerminal, type RunRecord } from "./schema.ts";

const DAY_MS = 86_400_000;
const SWEEP_EVERY_MS = 3_600_000;
/** Runs deleted per store call; the loop yields between batches so requests keep flowing. */
const BATCH = 200;

/** Terminal, or idle with its session over (none, or expired): nothing of it is live any more. */
export function isFinished(run: RunRecord, now: Date): boolean {
  if (isTerminal(run.status)) return true;
  return run.status === "idle" && (!run.sessionExpiresAt || Date.parse(run.sessionExpiresAt) <= now.getTime());
}

export interface Retention {
  /** Sweep now and then every hour (no-op without a limit). */
  start(): void;
  /** One sweep: deletes every finished run last updated before the limit; resolves with how many. */
  sweep(): Promise<number>;
  /** Stop the timer and wait for a sweep in progress. */
  stop(): Promise<void>;
}

export interface RetentionOptions {
  store: Pick<RunStore, "purgeFinishedBefore">;
  /** Undefined: keep runs for ever. */
  days: number | undefined;
  now: () => Date;
  log: Logger;
}

export function createRetention(opts: RetentionOptions): Retention {
  const { store, days, now, log } = opts;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;
  let stopped = false;

  async function sweepOnce(): Promise<number> {
    if (days === undefined) return 0;
    const cutoff = new Date(now().getTime() - days * DAY_MS).toISOString();
    let total = 0;
    for (;;) {
      if (stopped) break;
      const ids = await store.purgeFinishedBefore(cutoff, BATCH);
      total += ids.length;
      if (ids.length < BATCH) break;
      await new Promise((r) => setImmediate(r));
    }
    if (total) log.info("retention deleted finished runs", { runs: total, before: cutoff });
    return total;
  }

  const sweep = () =>
    (running ??= sweepOnce().finally(() => {
      running = undefined;
    }));

  return {
    start() {
      if (days === undefined || timer) return;
      const tick = () => void sweep().catch((e: unknown) => log.error("retention sweep failed", { err: e }));
      tick();
      timer = setInterval(tick, SWEEP_EVERY_MS);
      timer.unref();
    },
    sweep,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
