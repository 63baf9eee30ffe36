/**
 * Server-Sent Events for a run's event log: replay from the store, then live, with no gap
 * and no duplicate. The order of operations is what makes that true:
 *   1. subscribe to live events, buffering them;
 *   2. read the stored log after the cursor (this also validates the cursor);
 *   3. write the replay, then the buffered events with a larger id, then go live.
 * Events are written as `id: <event id>`, `event: builder.event|run.status`, `data: <json>`.
 * The stream ends after the run's terminal `run.status` (completed, failed, cancelled).
 */
import type { Request, Response } from "express";
import type { Engine } from "../engine/index.ts";
import type { RunEvent } from "../engine/events/schema.ts";
import { isTerminal } from "../engine/run/schema.ts";

export interface SseOptions {
  /** Interval of the `: keepalive` comment. Default 15 000 (proxies drop silent streams). */
  heartbeatMs?: number;
  /** Reconnect delay suggested to EventSource clients (`retry:`). Default 3000. */
  retryMs?: number;
}

/** Format one event as an SSE frame. Event names and ids are checked so a frame can never be split. */
export function formatEvent(ev: RunEvent): string {
  if (!Number.isInteger(ev.id) || ev.id < 1) throw new Error(`refusing to write an SSE frame with id ${String(ev.id)}`);
  const type: string = ev.type;
  if (type !== "builder.event" && type !== "run.status")
    throw new Error(`refusing to write an SSE frame of type ${type}`);
  // JSON.stringify escapes every line break, so the data stays on one `data:` line.
  return `id: ${ev.id}\nevent: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`;
}

const isFinal = (ev: RunEvent) => ev.type === "run.status" && isTerminal(ev.data.status);

/**
 * Stream a run's events after `after` (0 = from the start). Throws (before any byte is
 * written) `run_not_found` or `event_not_found`, which the error middleware answers as JSON.
 */
export async function streamRunEvents(
  engine: Engine,
  ownerId: string,
  runId: string,
  after: number,
  req: Request,
  res: Response,
  opts: SseOptions = {},
): Promise<void> {
  const heartbeatMs = opts.heartbeatMs ?? 15_000;
  const retryMs = opts.retryMs ?? 3000;
  let live = false;
  let lastId = after;
  let closed = false;
  const buffered: RunEvent[] = [];
  const timer: { heartbeat?: NodeJS.Timeout } = {};

  const write = (ev: RunEvent) => {
    if (closed || ev.id <= lastId) return;
    lastId = ev.id;
    res.write(formatEvent(ev));
    if (isFinal(ev)) finish();
  };
  const unsubscribe = await engine.subscribe(ownerId, runId, (ev) => {
    if (live) write(ev);
    else buffered.push(ev);
  });
  function finish() {
    if (closed) return;
    closed = true;
    unsubscribe();
    if (timer.heartbeat) clearInterval(timer.heartbeat);
    res.end();
  }

  let replay: RunEvent[];
  try {
    replay = await engine.events(ownerId, runId, after);
  } catch (e) {
    unsubscribe();
    throw e;
  }

  res.status(200);
  res.setHeader("Content-Type", "text/event-stream; charset=utf-8");
  res.setHeader("Cache-Control", "no-cache, no-transform");
  res.setHeader("Connection", "keep-alive");
  // nginx buffers responses by default; this header turns that off for this one.
  res.setHeader("X-Accel-Buffering", "no");
  res.flushHeaders();
  req.socket.setNoDelay(true);
  res.write(`retry: ${retryMs}\n\n`);
  req.on("close", finish);
  res.on("error", finish);

  // From here to `live = true` nothing awaits, so no live event can slip between the two.
  for (const ev of replay) write(ev);
  buffered.sort((a, b) => a.id - b.id);
  for (const ev of buffered) write(ev);
  buffered.length = 0;
  live = true;
  if (closed) return;
  timer.heartbeat = setInterval(() => {
    if (!closed) res.write(": keepalive\n\n");
  }, heartbeatMs);
  timer.heartbeat.unref();

  // A finished run whose terminal status lies at or before the cursor sends nothing live:
  // catch up once more and close, so a resume on a finished run never hangs.
  const run = await engine.getRun(ownerId, runId);
  if (closed || !isTerminal(run.status)) return;
  // The status is stored just before its event is appended; let that append land first.
  await new Promise((r) => setImmediate(r));
  for (const ev of await engine.events(ownerId, runId, lastId)) write(ev);
  finish();
}
