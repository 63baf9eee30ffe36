/**
 * LISTEN on `patchbay_events` over a connection of its own: each NOTIFY names a run and the
 * last id of a batch of events another process appended (run-writes.ts). The connection is
 * opened again when lost (the database's outage is told to the store's health, which logs it
 * once; the tries meanwhile are not logged); since NOTIFYs sent meanwhile are gone, listeners
 * are then told of every run they asked about again with lastId -1 ("read what you missed").
 */
import pg from "pg";
import type { Logger } from "../../log.ts";
import type { DatabaseHealth } from "./health.ts";
import { EVENTS_CHANNEL } from "./run-writes.ts";

export type EventsListener = (runId: string, lastId: number) => void;

export interface EventWatch {
  /** Settles once the first LISTEN is in place (or failed, and a retry is scheduled). */
  ready: Promise<void>;
  on(listener: EventsListener): () => void;
  close(): Promise<void>;
}

const RETRY_MS = 250;
/** Tries stay this frequent through an outage: once the database is back, followers hear other replicas soon. */
const MAX_RETRY_MS = 2_000;

export function createEventWatch(opts: {
  url: string;
  replicaId: string;
  log: Logger;
  health: DatabaseHealth;
}): EventWatch {
  const { log, health } = opts;
  const listeners = new Set<EventsListener>();
  let client: pg.Client | undefined;
  let closed = false;
  let retryMs = RETRY_MS;
  let timer: NodeJS.Timeout | undefined;
  let connectedOnce = false;
  let lostSince: number | undefined;

  const tell = (runId: string, lastId: number) => {
    for (const l of listeners) l(runId, lastId);
  };

  async function connect(): Promise<void> {
    if (closed) return;
    const c = new pg.Client({ connectionString: opts.url });
    // 'error' and 'end' both come for one loss, and a failed connect may end too: one retry per client.
    let gone = false;
    const lose = (e?: unknown) => {
      if (gone) return;
      gone = true;
      if (e !== undefined) health.failed(e);
      lost(c, e);
    };
    c.on("notification", (n) => {
      if (n.channel !== EVENTS_CHANNEL || !n.payload) return;
      let msg: { r?: unknown; id?: unknown; s?: unknown };
      try {
        msg = JSON.parse(n.payload) as typeof msg;
      } catch {
        log.warn("ignored a malformed event notification", { payload: n.payload.slice(0, 200) });
        return;
      }
      if (msg.s === opts.replicaId || typeof msg.r !== "string" || typeof msg.id !== "number") return;
      tell(msg.r, msg.id);
    });
    c.on("error", lose);
    c.on("end", () => lose());
    try {
      await c.connect();
      await c.query(`LISTEN ${EVENTS_CHANNEL}`);
    } catch (e) {
      lose(e);
      return;
    }
    if (closed) return void c.end().catch(() => undefined);
    client = c;
    retryMs = RETRY_MS;
    health.answered();
    if (lostSince !== undefined) {
      log.info("listening for other replicas' events again", { afterMs: Date.now() - lostSince });
      lostSince = undefined;
    }
    // Whatever was appended while no connection listened: every follower reads its gap.
    if (connectedOnce) tell("*", -1);
    connectedOnce = true;
  }

  function lost(c: pg.Client, e: unknown): void {
    if (client === c) client = undefined;
    void c.end().catch(() => undefined);
    if (closed) return;
    if (lostSince === undefined) {
      lostSince = Date.now();
      // The database's outage is the health's one warning; this connection's part is detail.
      log.debug("not listening for other replicas' events; retrying", { error: e });
    }
    if (timer) return;
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
