/**
 * The MCP event log's frames in Postgres (`mcp_streams`, `mcp_events`), so a stream one replica
 * writes can be resumed on any other. This part is the mechanism only: streams of json frames
 * numbered 1..n, who writes each and whether that writer still lives, waiting for a stream's
 * next frame, and dropping old frames; `mcp/shared-event-store.ts` gives them MCP's meaning.
 *
 * Each append takes its stream row's lock (held to commit) for the next number, so a stream's
 * frames commit in order, whichever replica writes them, and ends with
 * `pg_notify('patchbay_mcp_events', key)`. A reader waiting on a stream listens on its own
 * connection (opened on first need) and also looks again every `recheckMs`: a lost
 * notification, or a writer whose replica stopped heartbeating, is noticed then.
 */
import pg from "pg";
import type { Logger } from "../../log.ts";
import type { Db } from "./db.ts";
import { isConnectionError } from "./health.ts";

/** One frame of a stream. */
export interface StoredFrame {
  seq: number;
  message: unknown;
}

/** A stream as a reader needs it. */
export interface StoredStream {
  key: string;
  /** The id the writer's transport knows it by. */
  streamId: string;
  /** What the writer recorded when it opened the stream (the requests it answers). */
  requestIds: unknown[];
  /** The `answers` keys of its frames so far. */
  answered: string[];
  lastSeq: number;
  /** Frames up to this seq were dropped for the bounds. */
  droppedThrough: number;
}

/**
 * How a wait for a stream's next frame ended: a frame after the cursor is there (`more`), the
 * stream's writer is gone without writing one (`orphaned`: its view closed, or its replica
 * stopped heartbeating), the stream itself is gone (`gone`), or the caller gave up (`aborted`).
 */
export type StreamWait = "more" | "orphaned" | "gone" | "aborted";

export interface MessageLogBounds {
  /** Most frames kept across all streams. */
  maxEvents: number;
  /** Most bytes of frames (their JSON) kept across all streams. */
  maxBytes: number;
  /** A stream not written for this long goes, frames and all. */
  retentionMs: number;
}

export interface SharedMcpEvents {
  /** Open stream `key` of `sessionId`, written by `writer`, with its first frame; returns its seq (1). */
  open(
    stream: { key: string; sessionId: string; streamId: string; requestIds: unknown[]; writer: string },
    message: unknown,
    answers?: string,
  ): Promise<number>;
  /**
   * Append a frame; returns its seq, or undefined when the stream is gone (dropped, or its
   * session ended). A second frame with the same `answers` on a stream is not written: the
   * first one's seq is returned.
   */
  append(key: string, message: unknown, answers?: string): Promise<number | undefined>;
  /** Stream `key` if it belongs to `sessionId`. */
  stream(sessionId: string, key: string): Promise<StoredStream | undefined>;
  /** The frames of `key` after `seq`, in order. */
  framesAfter(key: string, seq: number): Promise<StoredFrame[]>;
  /** Wait until `key` has a frame after `seq`, or its writer or itself is gone, or `signal` aborts. */
  waitAfter(key: string, seq: number, signal: AbortSignal): Promise<StreamWait>;
  /** `writer` writes no more (its transport closed): its streams are orphaned. */
  release(writer: string): Promise<void>;
  /** A session ended: its streams go. */
  deleteSession(sessionId: string): Promise<void>;
  /** Drop the oldest frames past the bounds, and streams not written for the retention window. */
  sweep(bounds: MessageLogBounds): Promise<void>;
  /** What the tables hold now (tests, metrics). */
  size(): Promise<{ events: number; bytes: number; streams: number }>;
  close(): Promise<void>;
}

export interface SharedMcpEventsOptions {
  db: Db;
  /** For the LISTEN connection. */
  url: string;
  /** This replica: the writer of the streams its views open. */
  replicaId: string;
  /** A replica whose heartbeat is older than this is gone, and so are its streams' writers. */
  leaseMs: number;
  /** How often a waiting reader looks again without a notification. Default 1000 ms. */
  recheckMs?: number;
  log: Logger;
}

const CHANNEL = "patchbay_mcp_events";

const isDuplicateAnswer = (e: unknown) =>
  e instanceof Error &&
  (e as { code?: string }).code === "23505" &&
  (e as { constraint?: string }).constraint === "mcp_events_answer";

const bytesOf = (message: unknown) => Buffer.byteLength(JSON.stringify(message));

export function createSharedMcpEvents(opts: SharedMcpEventsOptions): SharedMcpEvents {
  const { db, replicaId, log } = opts;
  const lease = `${opts.leaseMs} milliseconds`;
  const recheckMs = opts.recheckMs ?? 1000;
  /** Readers waiting, by stream key. */
  const waiters = new Map<string, Set<() => void>>();
  let listener: Promise<pg.Client | undefined> | undefined;
  let closed = false;

  // A lost database is the store's health's one warning, not one per wait that tries to listen.
  const note = (msg: string, error: unknown) => {
    if (isConnectionError(error)) db.health.failed(error);
    else log.warn(msg, { error });
  };

  const wake = (key: string) => {
    for (const w of waiters.get(key) ?? []) w();
  };

  /** The LISTEN connection, opened on first need; after a loss the next wait opens another. */
  function listen(): Promise<pg.Client | undefined> {
    if (listener || closed) return listener ?? Promise.resolve(undefined);
    const c = new pg.Client({ connectionString: opts.url });
    const lost = () => {
      if (listener === opened) listener = undefined;
      void c.end().catch(() => undefined);
      // Whatever was sent while no one listened: every reader looks again.
      for (const key of waiters.keys()) wake(key);
    };
    c.on("notification", (n) => {
      if (n.channel === CHANNEL && n.payload) wake(n.payload);
    });
    c.on("error", (e) => {
      note("lost the MCP event notification connection", e);
      lost();
    });
    c.on("end", lost);
    const opened = (async () => {
      try {
        await c.connect();
        await c.query(`LISTEN ${CHANNEL}`);
        return c;
      } catch (e) {
        // Readers still look again every recheckMs; the next wait tries to listen again.
        note("could not listen for MCP events of other replicas", e);
        lost();
        return undefined;
      }
    })();
    listener = opened;
    return opened;
  }

  async function append(key: string, message: unknown, answers?: string): Promise<number | undefined> {
    try {
      const [row] = await db.rows<{ seq: string }>(
        `WITH h AS (
           UPDATE mcp_streams SET last_seq = last_seq + 1, written_at = now() WHERE key = $1 RETURNING key, last_seq
         ), e AS (
           INSERT INTO mcp_events (stream_key, seq, message, answers, bytes)
           SELECT key, last_seq, $2, $3, $4 FROM h RETURNING seq
         )
         SELECT seq, pg_notify('${CHANNEL}', $1) FROM e`,
        [key, JSON.stringify(message), answers ?? null, bytesOf(message)],
      );
      return row ? Number(row.seq) : undefined;
    } catch (e) {
      if (!isDuplicateAnswer(e)) throw e;
      const [first] = await db.rows<{ seq: string }>(
        "SELECT seq FROM mcp_events WHERE stream_key = $1 AND answers = $2",
        [key, answers],
      );
      return first ? Number(first.seq) : undefined;
    }
  }

  return {
    async open(s, message, answers) {
      await db.count(
        `WITH s AS (
           INSERT INTO mcp_streams (key, session_id, stream_id, request_ids, replica, writer, last_seq)
           VALUES ($1, $2, $3, $4, $5, $6, 1) RETURNING key
         )
         INSERT INTO mcp_events (stream_key, seq, message, answers, bytes) SELECT key, 1, $7, $8, $9 FROM s`,
        [
          s.key,
          s.sessionId,
          s.streamId,
          JSON.stringify(s.requestIds),
          replicaId,
          s.writer,
          JSON.stringify(message),
          answers ?? null,
          bytesOf(message),
        ],
      );
      return 1;
    },

    append,

    async stream(sessionId, key) {
      const [row] = await db.rows<{
        stream_id: string;
        request_ids: unknown[];
        answered: string[];
        last_seq: string;
        dropped_through: string;
      }>(
        `SELECT s.stream_id, s.request_ids, s.last_seq, s.dropped_through,
                ARRAY(SELECT e.answers FROM mcp_events e WHERE e.stream_key = s.key AND e.answers IS NOT NULL) AS answered
           FROM mcp_streams s WHERE s.key = $1 AND s.session_id = $2`,
        [key, sessionId],
      );
      if (!row) return undefined;
      return {
        key,
        streamId: row.stream_id,
        requestIds: row.request_ids,
        answered: row.answered,
        lastSeq: Number(row.last_seq),
        droppedThrough: Number(row.dropped_through),
      };
    },

    async framesAfter(key, seq) {
      const rows = await db.rows<{ seq: string; message: unknown }>(
        "SELECT seq, message FROM mcp_events WHERE stream_key = $1 AND seq > $2 ORDER BY seq",
        [key, seq],
      );
      return rows.map((r) => ({ seq: Number(r.seq), message: r.message }));
    },

    async waitAfter(key, seq, signal) {
      // Set by a notification (or an abort) that comes while the stream is being looked at.
      let signalled = false;
      let resume: () => void = () => undefined;
      const waiter = () => {
        signalled = true;
        resume();
      };
      let set = waiters.get(key);
      if (!set) waiters.set(key, (set = new Set()));
      set.add(waiter);
      signal.addEventListener("abort", waiter);
      try {
        // Listening before looking: a frame committed after the look is heard.
        await listen();
        for (;;) {
          if (signal.aborted) return "aborted";
          signalled = false;
          const [row] = await db.rows<{ last_seq: string; alive: boolean }>(
            `SELECT s.last_seq, s.writer IS NOT NULL AND EXISTS (
                      SELECT 1 FROM replicas p WHERE p.id = s.replica AND p.heartbeat_at > now() - $2::interval) AS alive
               FROM mcp_streams s WHERE s.key = $1`,
            [key, lease],
          );
          if (!row) return "gone";
          if (Number(row.last_seq) > seq) return "more";
          if (!row.alive) return "orphaned";
          if (signalled) continue;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, recheckMs);
            resume = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          resume = () => undefined;
        }
      } finally {
        signal.removeEventListener("abort", waiter);
        set.delete(waiter);
        if (set.size === 0 && waiters.get(key) === set) waiters.delete(key);
      }
    },

    async release(writer) {
      await db.rows(
        `WITH u AS (UPDATE mcp_streams SET writer = NULL WHERE writer = $1 RETURNING key)
         SELECT pg_notify('${CHANNEL}', key) FROM u`,
        [writer],
      );
    },

    async deleteSession(sessionId) {
      await db.rows(
        `WITH d AS (DELETE FROM mcp_streams WHERE session_id = $1 RETURNING key)
         SELECT pg_notify('${CHANNEL}', key) FROM d`,
        [sessionId],
      );
    },

    async sweep(bounds) {
      await db.count(
        `WITH ranked AS (
           SELECT stream_key, seq, count(*) OVER w AS k, sum(bytes) OVER w AS b
             FROM mcp_events WINDOW w AS (ORDER BY n DESC ROWS UNBOUNDED PRECEDING)
         ), gone AS (
           DELETE FROM mcp_events e USING ranked r
            WHERE e.stream_key = r.stream_key AND e.seq = r.seq AND (r.k > $1 OR r.b > $2)
           RETURNING e.stream_key, e.seq
         )
         UPDATE mcp_streams s SET dropped_through = g.m
           FROM (SELECT stream_key, max(seq) AS m FROM gone GROUP BY stream_key) g
          WHERE s.key = g.stream_key AND s.dropped_through < g.m`,
        [bounds.maxEvents, bounds.maxBytes],
      );
      await db.count("DELETE FROM mcp_streams WHERE written_at < now() - $1::interval", [
        `${bounds.retentionMs} milliseconds`,
      ]);
    },

    async size() {
      const [row] = await db.rows<{ events: string; bytes: string | null; streams: string }>(
        `SELECT (SELECT count(*) FROM mcp_events) AS events, (SELECT sum(bytes) FROM mcp_events) AS bytes,
                (SELECT count(*) FROM mcp_streams) AS streams`,
      );
      return { events: Number(row!.events), bytes: Number(row!.bytes ?? 0), streams: Number(row!.streams) };
    },

    async close() {
      closed = true;
      const c = await listener;
      listener = undefined;
      await c?.end().catch(() => undefined);
      for (const key of waiters.keys()) wake(key);
    },
  };
}
