/**
 * Run metrics from the event bus: every status change is counted, a turn's duration is
 * observed when it leaves `running`, and its start-up (running → the agent's first step) when
 * that step is published. Times are this process's clock at publish: a turn a restart
 * interrupted is not observed (its `running` was seen by another process).
 */
import type { EventBus } from "../events/bus.ts";
import type { PatchbayMetrics } from "./metrics.ts";

interface TurnWatch {
  startedAt: number;
  /** Stops listening to the run's events once its first step came. */
  unsubscribe?: () => void;
}

/** Listen to the bus for the metrics; returns the function that stops listening. */
export function observeRuns(
  bus: Pick<EventBus, "onStatus" | "subscribe">,
  metrics: Pick<PatchbayMetrics, "statusChanged" | "turnEnded" | "startedUp">,
  now: () => number = Date.now,
): () => void {
  const turns = new Map<string, TurnWatch>();
  const stopStep = (watch: TurnWatch) => {
    watch.unsubscribe?.();
    delete watch.unsubscribe;
  };
  const off = bus.onStatus(({ run, event }) => {
    const status = event.data.status;
    metrics.statusChanged(status);
    const watch = turns.get(run.id);
    if (status === "running") {
      if (watch) stopStep(watch);
      const next: TurnWatch = { startedAt: now() };
      next.unsubscribe = bus.subscribe(run.id, (ev) => {
        if (ev.type !== "builder.event" || ev.data.kind !== "step" || ev.data.phase !== "start") return;
        metrics.startedUp((now() - next.startedAt) / 1000);
        stopStep(next);
      });
      turns.set(run.id, next);
      return;
    }
    if (!watch || status === "queued") return;
    stopStep(watch);
    turns.delete(run.id);
    metrics.turnEnded(status, (now() - watch.startedAt) / 1000);
  });
  return () => {
    off();
    for (const watch of turns.values()) stopStep(watch);
    turns.clear();
  };
}
