/**
 * Server-Sent Events for a run's event log: a loop over `engine.follow`, which replays the
 * stored events after the cursor and continues live with no gap and no duplicate.
 * Events are written as `id: <event id>`, `event: builder.event|run.status`, `data: <json>`.
 * The stream ends after the run's terminal `run.status` (completed, failed, cancelled). A
 * finished run resumed at its last event answers 204, which tells an EventSource to stop
 * reconnecting. Frames wait for the socket to drain: a client that does not read holds one
 * frame here and one page of the log in the follow, never the log.
 */
import type { Request, Response } from "express";
import type { Engine } from "../engine/index.ts";
import type { RunEvent } from "../engine/events/schema.ts";

export interface SseOptions {
  /** Interval of the `: keepalive` comment. Default 15 000 (proxies drop silent streams). */
  heartbeatMs?: number;
  /** Reconnect delay suggested to EventSource clients (`retry:`). Default 3000. */
  retryMs?: number;
  /** Counts an open stream (metrics); returns the function that stops counting it. */
  subscriber?: () => () => void;
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

/** Resolves once `res` can take more, or is gone. */
function drained(res: Response): Promise<void> {
  if (!res.writableNeedDrain || res.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

/**
 * Stream a run's events after `after` (0 = from the start). Throws (before any byte is
 * written) `run_not_found`, `event_not_found` or `too_many_streams`, which the error
 * middleware answers as JSON.
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
  const follow = await engine.follow(ownerId, runId, { after });
  if (follow.finished) {
    res.status(204).end();
    return;
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
  // A client that goes away ends the follow, and with it the loop below.
  const stop = () => follow.close();
  req.on("close", stop);
  res.on("error", stop);
  const open = () => !res.writableEnded && !res.destroyed;
  // A socket that is not draining is alive enough; a keepalive would only pile up behind it.
  const unsubscribed = opts.subscriber?.();
  const heartbeat = setInterval(() => open() && !res.writableNeedDrain && res.write(": keepalive\n\n"), heartbeatMs);
  heartbeat.unref();
  try {
    for await (const ev of follow) {
      if (!open()) break;
      if (!res.write(formatEvent(ev))) await drained(res);
    }
  } finally {
    clearInterval(heartbeat);
    unsubscribed?.();
    res.end();
  }
}
