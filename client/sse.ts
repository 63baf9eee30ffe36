/**
 * A run's event stream as an async iterator: Server-Sent Events read with fetch, and resumed
 * after a dropped connection with `Last-Event-ID`, so the caller sees every event once, in
 * order. The server replays what it logged after that id, then goes on live.
 */
import type { components } from "./api.ts";

export type RunEvent = components["schemas"]["RunEvent"];

/** Thrown when the server answers with an error (`{error: {code, message}}`). */
export class PatchbayApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "PatchbayApiError";
  }
}

/** Read an error answer into a PatchbayApiError (a body that is not the error shape keeps its status). */
export async function apiError(res: Response): Promise<PatchbayApiError> {
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string; details?: unknown } };
    if (body.error?.code)
      return new PatchbayApiError(
        res.status,
        body.error.code,
        body.error.message ?? body.error.code,
        body.error.details,
      );
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  return new PatchbayApiError(
    res.status,
    `http_${res.status}`,
    `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ""}`,
  );
}

export interface FollowOptions {
  /** Start after this event id (0 or absent: from the start of the log). */
  after?: number;
  /** Stop following (the iterator ends quietly). */
  signal?: AbortSignal;
  /**
   * Reconnections in a row that may fail (the server unreachable, 5xx, 429) before the
   * iterator throws; an event received resets the count. Default 10.
   */
  maxReconnects?: number;
  /** Pause before the first reconnection (ms), doubling up to 10 s; never shorter than the server's `retry:`. Default 500. */
  reconnectDelayMs?: number;
  /** Told about each reconnection (for a progress line). */
  onReconnect?: (info: { attempt: number; lastEventId: number; error: unknown }) => void;
}

export interface StreamTarget {
  baseUrl: string;
  headers: Record<string, string>;
  fetch: typeof fetch;
}

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/** One SSE frame's fields. */
interface Frame {
  id?: string;
  event?: string;
  data?: string;
  retry?: string;
}

/** Split complete frames (ending in a blank line) off `buffer`; returns them and the rest. */
function takeFrames(buffer: string): { frames: Frame[]; rest: string } {
  const frames: Frame[] = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop() ?? "";
  for (const block of blocks) {
    const frame: Frame = {};
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (field === "data") frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
      else if (field === "id" || field === "event" || field === "retry") frame[field] = value;
    }
    frames.push(frame);
  }
  return { frames, rest };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/**
 * Follow `runId`'s events. Ends after the run's terminal status (or when the server says the
 * finished run has nothing more: 204), or quietly when `signal` aborts. Throws
 * PatchbayApiError for an answer no retry can fix (401, 403, 404, 400), and the last error
 * once `maxReconnects` reconnections in a row failed.
 */
export async function* followRun(
  target: StreamTarget,
  runId: string,
  opts: FollowOptions = {},
): AsyncGenerator<RunEvent, void, undefined> {
  let lastId = opts.after ?? 0;
  let failures = 0;
  let delay = opts.reconnectDelayMs ?? 500;
  let serverRetry: number | undefined;
  const maxReconnects = opts.maxReconnects ?? 10;
  const url = `${target.baseUrl}/api/v1/coding-agent/runs/${encodeURIComponent(runId)}/stream`;
  for (;;) {
    if (opts.signal?.aborted) return;
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let error: unknown;
    try {
      const res = await target.fetch(url, {
        headers: {
          ...target.headers,
          accept: "text/event-stream",
          ...(lastId > 0 ? { "last-event-id": String(lastId) } : {}),
        },
        signal: ac.signal,
      });
      if (res.status === 204) return;
      if (!res.ok) {
        const e = await apiError(res);
        if (res.status !== 429 && res.status < 500) throw e;
        error = e;
      } else {
        const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const { frames, rest } = takeFrames(buffer + value);
          buffer = rest;
          for (const frame of frames) {
            if (frame.retry !== undefined && /^\d+$/.test(frame.retry)) serverRetry = Number(frame.retry);
            if (frame.data === undefined || frame.id === undefined) continue;
            const ev = JSON.parse(frame.data) as RunEvent;
            // A resumed stream starts after lastId; anything at or before it was seen already.
            if (ev.id <= lastId) continue;
            lastId = ev.id;
            failures = 0;
            delay = opts.reconnectDelayMs ?? 500;
            yield ev;
            if (ev.type === "run.status" && TERMINAL.has(ev.data.status)) return;
          }
        }
        // The server closed the stream before the run's end (a restart, a proxy's timeout): resume.
        error = new Error("the event stream closed before the run ended");
      }
    } catch (e) {
      if (opts.signal?.aborted) return;
      if (e instanceof PatchbayApiError && e.status !== 429 && e.status < 500) throw e;
      error = e;
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      ac.abort();
    }
    failures += 1;
    if (failures > maxReconnects) throw error;
    opts.onReconnect?.({ attempt: failures, lastEventId: lastId, error });
    await sleep(Math.max(serverRetry ?? 0, delay), opts.signal);
    delay = Math.min(delay * 2, 10_000);
  }
}
