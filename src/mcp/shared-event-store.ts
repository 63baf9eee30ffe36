/**
 * The MCP event log in the database replicas share (PATCHBAY_DATABASE_URL), so a client cut off
 * from one replica resumes its stream on any other: the same views as `event-store.ts` (the
 * SDK's EventStore per session, ids `<stream key>-<seq>` unknown to other sessions), over the
 * frames `SharedMcpEvents` keeps in Postgres.
 *
 * A view writes only the streams its own transport opens; a stream another replica's view
 * writes (or a closed view wrote) is foreign to it, and `resume.ts` serves a cursor on one:
 * it replays the frames, waits for the writer's next ones (a live replica goes on storing what
 * its transport sends after the client left: progress, the response), and answers the calls
 * itself once no live view writes the stream. The database keeps one answer per request.
 *
 * The SDK's transport stores a frame, then writes it to the stream registered for it, while a
 * resume on that transport replays and then registers the stream. With a store that answers
 * after a round trip, a frame stored between the replay's read and the registration would go
 * nowhere; so a view's writes and replays of one stream go one at a time, in call order.
 *
 * Bounded like the file log in frames and bytes across all sessions (oldest frames first), and
 * in time: a stream not written for `retentionMs` goes. A session's streams go when it ends.
 */
import { randomBytes, randomUUID } from "node:crypto";
import type { EventId, StreamId } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { JSONRPCMessage, RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { Logger, SharedMcpEvents } from "../engine/index.ts";
import {
  isResponse,
  type McpEventLog,
  type McpEventLogOptions,
  type SessionEventStore,
  type StreamHooks,
} from "./event-store.ts";

export interface SharedEventLogOptions extends McpEventLogOptions {
  /** A stream not written for this long goes. Default a day (a session with a call to answer is kept that long). */
  retentionMs?: number;
  /** How often the bounds are enforced besides every sixteenth of `maxEvents` frames written here. Default 1 minute. */
  sweepMs?: number;
  log: Logger;
}

const EVENT_ID = /^([0-9a-f]{16})-(\d+)$/;
/** What a muted view hands out: it names no stream. */
const MUTED_ID = "0-0";

export function createSharedEventLog(events: SharedMcpEvents, opts: SharedEventLogOptions): McpEventLog {
  const { log } = opts;
  const bounds = {
    maxEvents: opts.maxEvents ?? 10_000,
    maxBytes: opts.maxBytes ?? 16 * 1024 * 1024,
    retentionMs: opts.retentionMs ?? 24 * 60 * 60_000,
  };
  const sweepAfter = Math.max(1, Math.ceil(bounds.maxEvents / 16));
  let written = 0;
  let sweeping: Promise<void> | undefined;
  const sweep = () => {
    sweeping ??= events
      .sweep(bounds)
      .catch((e: unknown) => log.warn("could not trim the MCP event log", { error: e }))
      .finally(() => (sweeping = undefined));
  };
  const timer = setInterval(sweep, opts.sweepMs ?? 60_000);
  timer.unref();

  return {
    forSession(sessionId: string, hooks: StreamHooks = {}): SessionEventStore {
      const writer = randomUUID();
      let muted = 0;
      let disposed = false;
      /** The streams this view writes: SDK stream id to key, and back. */
      const keyOf = new Map<StreamId, string>();
      const idOf = new Map<string, StreamId>();
      const lanes = new Map<StreamId, Promise<unknown>>();

      /** Run `op` after every earlier write or replay of the stream by this view. */
      const inLane = <T>(streamId: StreamId, op: () => Promise<T>): Promise<T> => {
        const next = (lanes.get(streamId) ?? Promise.resolve()).then(op);
        const settled = next.catch(() => undefined);
        lanes.set(streamId, settled);
        void settled.then(() => lanes.get(streamId) === settled && lanes.delete(streamId));
        return next;
      };

      /** The stream and seq an event id names, if this session holds it and nothing after it was dropped. */
      const locate = async (eventId: EventId) => {
        const m = EVENT_ID.exec(eventId);
        if (!m || disposed) return undefined;
        const stream = await events.stream(sessionId, m[1]!);
        const seq = Number(m[2]);
        // Ids start at 1: 0 would name the place before the priming frame, which is never sent.
        if (!stream || seq < 1 || seq < stream.droppedThrough || seq > stream.lastSeq) return undefined;
        return { stream, seq };
      };

      const answerKey = (m: JSONRPCMessage) => (isResponse(m) ? JSON.stringify(m.id) : undefined);

      const noteWritten = () => {
        written += 1;
        if (written % sweepAfter === 0) sweep();
      };

      return {
        storeEvent(streamId, message) {
          if (muted > 0 || disposed) return Promise.resolve(MUTED_ID);
          return inLane(streamId, async () => {
            const answers = answerKey(message);
            let key = keyOf.get(streamId);
            let seq = key === undefined ? undefined : await events.append(key, message, answers);
            if (seq === undefined) {
              // A new stream, or one dropped meanwhile (retention): it starts again under a new key.
              if (key !== undefined) idOf.delete(key);
              key = randomBytes(8).toString("hex");
              const requestIds = [...(hooks.currentRequests?.() ?? [])];
              await hooks.opened?.(streamId, requestIds);
              seq = await events.open({ key, sessionId, streamId, requestIds, writer }, message, answers);
              keyOf.set(streamId, key);
              idOf.set(key, streamId);
            }
            noteWritten();
            if (isResponse(message)) await hooks.answered?.(message.id);
            return `${key}-${seq}`;
          });
        },

        async getStreamIdForEventId(eventId) {
          return (await locate(eventId))?.stream.streamId;
        },

        replayEventsAfter(lastEventId, { send }) {
          const replay = async () => {
            const at = await locate(lastEventId);
            if (!at) throw new Error(`event ${lastEventId} cannot be resumed here`);
            for (const frame of await events.framesAfter(at.stream.key, at.seq)) {
              const message = frame.message as JSONRPCMessage;
              // The priming frame carries no message: the client already holds its id.
              if (!("jsonrpc" in message)) continue;
              await send(`${at.stream.key}-${frame.seq}`, message);
            }
            return at.stream.streamId;
          };
          const own = idOf.get(EVENT_ID.exec(lastEventId)?.[1] ?? "");
          return own === undefined ? replay() : inLane(own, replay);
        },

        async foreign(eventId) {
          const m = EVENT_ID.exec(eventId);
          if (!m || idOf.has(m[1]!)) return undefined;
          const at = await locate(eventId);
          if (!at) return undefined;
          const { streamId, requestIds, answered } = at.stream;
          return {
            id: streamId,
            requestIds: requestIds as RequestId[],
            answered: new Set(answered.map((a) => JSON.parse(a) as RequestId)),
          };
        },

        async next(eventId, signal) {
          const m = EVENT_ID.exec(eventId);
          if (!m || disposed) return "gone";
          return events.waitAfter(m[1]!, Number(m[2]), signal);
        },

        async storeAnswer(eventId, message) {
          const key = EVENT_ID.exec(eventId)?.[1];
          const seq = key === undefined ? undefined : await events.append(key, message, answerKey(message));
          if (seq === undefined) throw new Error(`event ${eventId} cannot be answered here`);
          noteWritten();
          await hooks.answered?.(message.id);
          return `${key}-${seq}`;
        },

        async muted(fn) {
          muted += 1;
          try {
            return await fn();
          } finally {
            muted -= 1;
          }
        },

        async dispose() {
          disposed = true;
          keyOf.clear();
          idOf.clear();
          await events.deleteSession(sessionId);
        },

        async release() {
          // Another replica serving a cursor on them now answers their calls itself.
          await events.release(writer);
        },
      };
    },

    async close() {
      clearInterval(timer);
      await sweeping;
    },
  };
}
