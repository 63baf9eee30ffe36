/**
 * Other replicas' events on this replica's bus. A shared store tells of each batch another
 * process appended (run, last id); for a run someone here follows, the events after the last
 * one relayed are read back and published, so `follow` (SSE, MCP, waits) goes on live whichever
 * replica runs the turn. Only events are relayed: status hooks (`onStatus`: webhooks, groups,
 * metrics) stay with the replica that made the change, so nothing is delivered twice.
 */
import type { Logger } from "../log.ts";
import type { RunStore } from "../store/store.ts";
import type { EventBus } from "./bus.ts";

export interface EventSource {
  /** `runId` "*" with lastId -1: notifications may have been lost; every followed run reads its gap. */
  watchEvents(listener: (runId: string, lastId: number) => void): () => void;
}

export function relayRemoteEvents(deps: {
  source: EventSource;
  store: Pick<RunStore, "readEvents" | "lastEventId">;
  bus: EventBus;
  log: Logger;
}): () => void {
  const { store, bus, log } = deps;
  /** The last id relayed per followed run; runs nobody follows are forgotten. */
  const relayed = new Map<string, number>();
  const reading = new Map<string, Promise<void>>();

  async function catchUp(runId: string, upTo: number): Promise<void> {
    // After lost notifications, a run not relayed yet needs only its last event: a follower
    // reads any gap before it from the store itself.
    if (upTo < 0 && !relayed.has(runId)) upTo = await store.lastEventId(runId);
    for (;;) {
      const after = relayed.get(runId) ?? Math.max(0, upTo - 1);
      if (upTo >= 0 && after >= upTo) return;
      const events = await store.readEvents(runId, after, 500);
      if (!events.length) return;
      relayed.set(runId, events.at(-1)!.id);
      for (const e of events) bus.publish(e);
      if (upTo < 0 && events.length < 500) return;
    }
  }

  function wake(runId: string, lastId: number): void {
    const followed = new Set(bus.followed());
    for (const id of relayed.keys()) if (!followed.has(id)) relayed.delete(id);
    const runs = runId === "*" ? [...followed] : followed.has(runId) ? [runId] : [];
    for (const id of runs) {
      // One read at a time per run, in order: a wake during a read reads again after it.
      const previous = reading.get(id) ?? Promise.resolve();
      const next = previous
        .then(() => catchUp(id, lastId))
        .catch((e: unknown) => log.warn("could not relay another replica's events", { runId: id, error: e }));
      reading.set(id, next);
      void next.then(() => {
        if (reading.get(id) === next) reading.delete(id);
      });
    }
  }

  return deps.source.watchEvents(wake);
}
