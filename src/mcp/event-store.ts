/**
 * The MCP event log behind Streamable HTTP resumability: every SSE frame the transport sends
 * on a stream (priming event, progress, the response) is stored here with an id, so a client
 * cut off mid-call reconnects with `Last-Event-ID` and gets what it missed, the result
 * included (the SDK's `EventStore` seam).
 *
 * One log per process, bounded in events and bytes across all sessions (the oldest frames go
 * first); each session sees it through its own `EventStore` view, which hands out ids and
 * replays only that session's streams, so a cursor from another session is unknown here.
 *
 * It lives in memory, on purpose: a frame is only worth replaying to the session that was
 * sent it, and MCP sessions (the SDK's transports, and the tool call whose answer is awaited)
 * die with the process. What survives a restart is the run itself: its events are in the
 * store, and `get_run` / `stream_events` / the run resources read them from any new session.
 */
import type { EventStore, StreamId, EventId } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";

export interface McpEventLogOptions {
  /** Most frames kept across all sessions. Default 10 000. */
  maxEvents?: number;
  /** Most bytes of frames kept across all sessions. Default 16 MiB. */
  maxBytes?: number;
}

/** One session's view of the log: the SDK's EventStore, and `dispose` for when the session ends. */
export interface SessionEventStore extends EventStore {
  /** Forget the session's frames (its streams can no longer be resumed). */
  dispose(): void;
}

export interface McpEventLog {
  /** The EventStore of one session; ids it hands out are unknown to every other session. */
  forSession(): SessionEventStore;
  /** What the log holds now (tests, metrics). */
  size(): { events: number; bytes: number; streams: number };
}

interface Frame {
  seq: number;
  message: JSONRPCMessage;
  bytes: number;
}

interface Stream {
  /** Process-unique number, the first part of every event id on the stream. */
  no: number;
  id: StreamId;
  frames: Frame[];
  nextSeq: number;
  /** Highest seq dropped to keep the log in bounds: a cursor below it cannot be resumed. */
  droppedThrough: number;
  alive: boolean;
  /** Take the stream out of its session's maps (when dropping emptied it). */
  forget(): void;
}

const EVENT_ID = /^(\d+)-(\d+)$/;

/** Create the process's log. */
export function createMcpEventLog(opts: McpEventLogOptions = {}): McpEventLog {
  const maxEvents = opts.maxEvents ?? 10_000;
  const maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
  /** Every stored frame's stream, oldest first (frames leave each stream oldest first too). */
  let order: Stream[] = [];
  let head = 0;
  let events = 0;
  let bytes = 0;
  let streams = 0;
  let nextStreamNo = 1;

  const dropOldest = () => {
    while (head < order.length) {
      const stream = order[head++]!;
      // A disposed stream's frames were already taken out of the counts.
      if (!stream.alive) continue;
      const frame = stream.frames.shift()!;
      stream.droppedThrough = frame.seq;
      events -= 1;
      bytes -= frame.bytes;
      // A stream whose every frame is gone has nothing to replay: long sessions do not pile them up.
      if (stream.frames.length === 0) {
        stream.alive = false;
        streams -= 1;
        stream.forget();
      }
      break;
    }
    if (head > 1024 && head * 2 > order.length) {
      order = order.slice(head);
      head = 0;
    }
  };

  return {
    forSession() {
      const byId = new Map<StreamId, Stream>();
      const byNo = new Map<number, Stream>();

      /** The stream and seq an event id names, if this session holds it and nothing after it was dropped. */
      const locate = (eventId: EventId): { stream: Stream; seq: number } | undefined => {
        const m = EVENT_ID.exec(eventId);
        const stream = m ? byNo.get(Number(m[1])) : undefined;
        if (!stream?.alive) return undefined;
        const seq = Number(m![2]);
        if (seq < stream.droppedThrough || seq >= stream.nextSeq) return undefined;
        return { stream, seq };
      };

      return {
        async storeEvent(streamId, message) {
          let stream = byId.get(streamId);
          if (!stream) {
            const no = nextStreamNo++;
            stream = {
              no,
              id: streamId,
              frames: [],
              nextSeq: 1,
              droppedThrough: 0,
              alive: true,
              forget: () => {
                byId.delete(streamId);
                byNo.delete(no);
              },
            };
            byId.set(streamId, stream);
            byNo.set(stream.no, stream);
            streams += 1;
          }
          const frame = { seq: stream.nextSeq++, message, bytes: Buffer.byteLength(JSON.stringify(message)) };
          stream.frames.push(frame);
          order.push(stream);
          events += 1;
          bytes += frame.bytes;
          while (events > maxEvents || bytes > maxBytes) dropOldest();
          return `${stream.no}-${frame.seq}`;
        },

        async getStreamIdForEventId(eventId) {
          return locate(eventId)?.stream.id;
        },

        async replayEventsAfter(lastEventId, { send }) {
          const at = locate(lastEventId);
          if (!at) throw new Error(`event ${lastEventId} cannot be resumed here`);
          for (const frame of [...at.stream.frames]) {
            // The priming frame carries no message: the client already holds its id.
            if (frame.seq <= at.seq || !("jsonrpc" in frame.message)) continue;
            await send(`${at.stream.no}-${frame.seq}`, frame.message);
          }
          return at.stream.id;
        },

        dispose() {
          for (const stream of byId.values()) {
            if (!stream.alive) continue;
            stream.alive = false;
            events -= stream.frames.length;
            for (const f of stream.frames) bytes -= f.bytes;
            stream.frames = [];
            streams -= 1;
          }
          byId.clear();
          byNo.clear();
        },
      };
    },
    size: () => ({ events, bytes, streams }),
  };
}
