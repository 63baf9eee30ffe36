/**
 * LISTEN on `patchbay_events` over a connection of its own: each NOTIFY names a run and the
 * last id of a batch of events another process appended (run-writes.ts). The connection is
 * opened again when lost; since NOTIFYs sent meanwhile are gone, listeners are then told of
 * every run they asked about again with lastId -1 ("read what you missed").
 */
import pg from "pg";
import type { Logger } from "../../log.ts";
import { EVENTS_CHANNEL } from "./run-writes.ts";

export type EventsListener = (runId: string, lastId: number) => void;

export interface EventWatch {
  /** Settles once the first LISTEN is in place (or failed, and a retry is scheduled). */
  ready: Promise<void>;
  on(listener: EventsListener): () => void;
  close(): Promise<void>;
}

const RETRY_MS = 500;
const MAX_RETRY_MS = 10_000;

export function createEventWatch(opts: { url: string; replicaId: string; log: Logger }): EventWatch {
  const listeners = new Set<EventsListener>();
  let client: pg.Client | undefined;
  let closed = false;
  let retryMs = RETRY_MS;
  let timer: NodeJS.Timeout | undefined;
  let connectedOnce = false;

  const tell = (runId: string, lastId: number) => {
    for (const l of listeners) l(runId, lastId);
  };

  async function connect(): Promise<void> {
    if (closed) return;
    const c = new pg.Client({ connectionString: opts.url });
    c.on("notification", (n) => {
      if (n.channel !== EVENTS_CHANNEL || !n.payload) return;
      let msg: { r?: unknown; id?: unknown; s?: unknown };
      try {
        msg = JSON.parse(n.payload) as typeof msg;
      } catch {
        opts.log.warn("ignored a malformed event notification", { payload: n.payload.slice(0, 200) });
        return;
      }
      if (msg.s === opts.replicaId || typeof msg.r !== "string" || typeof msg.id !== "number") return;
      tell(msg.r, msg.id);
    });
    c.on("error", (e) => {
      opts.log.warn("lost the event notification connection; reconnecting", { error: e });
      lost(c);
    });
    c.on("end", () => lost(c));
    try {
      await c.connect();
      await c.query(`LISTEN ${EVENTS_CHANNEL}`);
    } catch (e) {
      opts.log.warn("could not listen for events of other replicas; retrying", { error: e });
      lost(c);
      return;
    }
    if (closed) return void c.end().catch(() => undefined);
    client = c;
    retryMs = RETRY_MS;
    // Whatever was appended while no connection listened: every follower reads its gap.
    if (connectedOnce) tell("*", -1);
    connectedOnce = true;
  }

  function lost(c: pg.Client): void {
    if (client === c) client = undefined;
    void c.end().catch(() => undefined);
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      void connect();
    }, retryMs);
    timer.unref();
    retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
  }

  const ready = connect();
  return {
    ready,
    on(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      await ready;
      await client?.end().catch(() => undefined);
    },
  };
}
