/**
 * The MCP event log behind Streamable HTTP resumability: every SSE frame the transport sends
 * on a stream (priming event, progress, the response) is written here with an id before it is
 * sent, so a client cut off mid-call reconnects with `Last-Event-ID` and gets what it missed,
 * the result included (the SDK's `EventStore` seam). It lives under the data dir, as the run
 * events do, so it survives what they survive: a restart, a kill -9.
 *
 * On disk: `<dir>/<segment>.jsonl`, append-only segments shared by every session, one frame a
 * line (`{s: session, t: stream, x: stream key, q: seq, m: message}`, the first frame of a
 * stream also naming the JSON-RPC request ids of the POST that opened it). Files are 0600 in a
 * 0700 dir. Bounded in frames and bytes across all sessions: when a bound is passed the oldest
 * segment goes (a segment holds a sixteenth of either bound, so the log stays between about
 * 15/16 of its bounds and its bounds). The whole log is held in memory too (it is bounded),
 * read back at start; a torn last line from a kill mid-append is cut off.
 *
 * Each session sees the log through its own view, which hands out ids (`<stream key>-<seq>`,
 * the key random) and replays only that session's streams: a cursor from another session is
 * unknown there. Streams read back at start are foreign to every view: their calls belonged to
 * a process that is gone, and `resume.ts` answers them. (With a database shared by replicas,
 * `shared-event-store.ts` is the log instead, behind the same interfaces.)
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { EventStore, StreamId, EventId } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { JSONRPCMessage, RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { Logger, StreamWait } from "../engine/index.ts";
import { storageFailed } from "../engine/store/private-file.ts";

export interface McpEventLogOptions {
  /** Most frames kept across all sessions. Default 10 000. */
  maxEvents?: number;
  /** Most bytes of frames (as stored) kept across all sessions. Default 16 MiB. */
  maxBytes?: number;
}

/** What a view is told when a stream is opened or answered. */
export interface StreamHooks {
  /** The JSON-RPC requests of the POST being handled now (the HTTP layer knows them). */
  currentRequests?(): readonly RequestId[] | undefined;
  /** A new stream's first frame is about to be written: what must be durable before it is sent. */
  opened?(streamId: StreamId, requestIds: readonly RequestId[]): Promise<void>;
  /** A response to `requestId` was written. */
  answered?(requestId: RequestId): Promise<void>;
}

/**
 * A stream of the session that this view's transport does not write, as `resume.ts` needs it:
 * one a previous process wrote, or (with a shared log) one another replica writes or wrote.
 */
export interface ForeignStream {
  id: StreamId;
  /** The requests of the POST that opened it (absent when that frame was dropped for the bounds). */
  requestIds: readonly RequestId[];
  /** Requests answered on it so far. */
  answered: ReadonlySet<RequestId>;
}

export type { StreamWait };

/** One session's view of the log: the SDK's EventStore, and more for resumption. */
export interface SessionEventStore extends EventStore {
  /** The foreign stream `eventId` is a resumable cursor on, if it is one. */
  foreign(eventId: EventId): Promise<ForeignStream | undefined>;
  /**
   * Wait until the stream `eventId` is on has a frame after it, or no live process writes it
   * any more (`orphaned`: its answers are then `resume.ts`'s to write).
   */
  next(eventId: EventId, signal: AbortSignal): Promise<StreamWait>;
  /** Write `message`, a response, on the foreign stream `eventId` is on (once per request); its id. */
  storeAnswer(eventId: EventId, message: JSONRPCMessage & { id: RequestId }): Promise<EventId>;
  /** Run `fn` with nothing stored (replaying a session's `initialize` to a new transport). */
  muted<T>(fn: () => Promise<T>): Promise<T>;
  /** The session ended: its streams go (they can no longer be resumed). */
  dispose(): Promise<void>;
  /** The transport closed but the session lives on (shutdown): what it wrote is left to other processes. */
  release(): Promise<void>;
}

export interface McpEventLog {
  /** The EventStore of session `sessionId`; ids it hands out are unknown to every other session. */
  forSession(sessionId: string, hooks?: StreamHooks): SessionEventStore;
  close(): Promise<void>;
}

/** The log in the data dir. */
export interface FileMcpEventLog extends McpEventLog {
  /** What the log holds now, on disk (tests, metrics). */
  size(): { events: number; bytes: number; streams: number; segments: number };
}

interface Frame {
  seq: number;
  message: JSONRPCMessage;
}

interface Stream {
  session: string;
  id: StreamId;
  key: string;
  frames: Frame[];
  nextSeq: number;
  /** Highest seq dropped to keep the log in bounds: a cursor below it cannot be resumed. */
  droppedThrough: number;
  inherited: boolean;
  requestIds: RequestId[];
  answered: Set<RequestId>;
}

interface Segment {
  no: number;
  file: string;
  fd?: number;
  events: number;
  bytes: number;
  /** The stream of every frame in it, in order. */
  streams: Stream[];
}

interface Line {
  s: string;
  t: string;
  x: string;
  q: number;
  m: JSONRPCMessage;
  r?: RequestId[];
}

const EVENT_ID = /^([0-9a-f]{12})-(\d+)$/;
const SEGMENT = /^(\d{10})\.jsonl$/;

/** Whether a frame is a JSON-RPC response (a result or an error). */
export const isResponse = (m: JSONRPCMessage): m is JSONRPCMessage & { id: RequestId } =>
  "id" in m && ("result" in m || "error" in m);

/** Open (and read back) the log in `dir`, creating it. */
export function createMcpEventLog(dir: string, opts: McpEventLogOptions & { log?: Logger } = {}): FileMcpEventLog {
  const maxEvents = opts.maxEvents ?? 10_000;
  const maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
  const segEvents = Math.max(1, Math.ceil(maxEvents / 16));
  const segBytes = Math.max(1, Math.ceil(maxBytes / 16));
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });

  /** Streams by session, then by stream key. */
  const bySession = new Map<string, Map<string, Stream>>();
  const segments: Segment[] = [];
  let events = 0;
  let bytes = 0;
  let streams = 0;

  const streamsOf = (session: string) => {
    let m = bySession.get(session);
    if (!m) bySession.set(session, (m = new Map()));
    return m;
  };

  const forget = (stream: Stream) => {
    const m = bySession.get(stream.session);
    if (m?.get(stream.key) !== stream) return;
    m.delete(stream.key);
    if (m.size === 0) bySession.delete(stream.session);
    streams -= 1;
  };

  const evictOldest = () => {
    const seg = segments.shift()!;
    if (seg.fd !== undefined) fs.closeSync(seg.fd);
    fs.rmSync(seg.file, { force: true });
    events -= seg.events;
    bytes -= seg.bytes;
    for (const stream of seg.streams) {
      // Segments go oldest first, so a stream's oldest frame is the one in this segment.
      const frame = stream.frames.shift();
      if (frame) stream.droppedThrough = frame.seq;
      if (stream.frames.length === 0) forget(stream);
    }
  };

  const record = (stream: Stream, frame: Frame, seg: Segment, size: number) => {
    stream.frames.push(frame);
    seg.streams.push(stream);
    seg.events += 1;
    seg.bytes += size;
    events += 1;
    bytes += size;
    if (isResponse(frame.message)) stream.answered.add(frame.message.id);
  };

  // Read back what a previous process left.
  const names = fs
    .readdirSync(dir)
    .filter((n) => SEGMENT.test(n))
    .sort();
  for (const [i, name] of names.entries()) {
    const file = path.join(dir, name);
    let text = fs.readFileSync(file, "utf8");
    const end = text.lastIndexOf("\n") + 1;
    if (end < text.length && i === names.length - 1) {
      // A kill mid-append: the torn line is cut off, so the next append does not glue onto it.
      fs.truncateSync(file, Buffer.byteLength(text.slice(0, end)));
      text = text.slice(0, end);
    }
    const seg: Segment = { no: Number(SEGMENT.exec(name)![1]), file, events: 0, bytes: 0, streams: [] };
    segments.push(seg);
    for (const raw of text.slice(0, end).split("\n")) {
      if (!raw) continue;
      let line: Line;
      try {
        line = JSON.parse(raw) as Line;
      } catch {
        opts.log?.warn("skipping an unreadable MCP event log line", { file: name });
        continue;
      }
      const known = streamsOf(line.s);
      let stream = known.get(line.x);
      if (!stream) {
        stream = {
          session: line.s,
          id: line.t,
          key: line.x,
          frames: [],
          nextSeq: line.q,
          droppedThrough: line.q - 1,
          inherited: true,
          requestIds: [],
          answered: new Set(),
        };
        known.set(line.x, stream);
        streams += 1;
      }
      if (line.r) stream.requestIds = line.r;
      stream.nextSeq = line.q + 1;
      record(stream, { seq: line.q, message: line.m }, seg, Buffer.byteLength(raw) + 1);
    }
  }
  while (segments.length > 0 && (events > maxEvents || bytes > maxBytes)) evictOldest();

  /** The segment the next frame goes to, opened for appending. */
  const active = (): Segment => {
    let seg = segments.at(-1);
    if (!seg || seg.events >= segEvents || seg.bytes >= segBytes) {
      if (seg?.fd !== undefined) {
        fs.closeSync(seg.fd);
        delete seg.fd;
      }
      const no = (seg?.no ?? 0) + 1;
      seg = { no, file: path.join(dir, `${String(no).padStart(10, "0")}.jsonl`), events: 0, bytes: 0, streams: [] };
      segments.push(seg);
    }
    seg.fd ??= fs.openSync(seg.file, "a", 0o600);
    return seg;
  };

  const append = (stream: Stream, frame: Frame, first: boolean) => {
    const line: Line = { s: stream.session, t: stream.id, x: stream.key, q: frame.seq, m: frame.message };
    if (first) line.r = stream.requestIds;
    const text = JSON.stringify(line) + "\n";
    const seg = active();
    try {
      fs.writeSync(seg.fd!, text);
    } catch (e) {
      throw storageFailed(e, seg.file);
    }
    record(stream, frame, seg, Buffer.byteLength(text));
    while (events > maxEvents || bytes > maxBytes) evictOldest();
  };

  return {
    forSession(sessionId, hooks = {}) {
      let muted = 0;
      let disposed = false;

      /** The stream and seq an event id names, if this session holds it and nothing after it was dropped. */
      const locate = (eventId: EventId): { stream: Stream; seq: number } | undefined => {
        const m = EVENT_ID.exec(eventId);
        const stream = m && !disposed ? bySession.get(sessionId)?.get(m[1]!) : undefined;
        if (!stream) return undefined;
        const seq = Number(m![2]);
        // Ids start at 1: 0 would name the place before the priming frame, which is never sent.
        if (seq < 1 || seq < stream.droppedThrough || seq >= stream.nextSeq) return undefined;
        return { stream, seq };
      };

      const live = new Map<StreamId, Stream>();

      const store = (stream: Stream, message: JSONRPCMessage, first: boolean): EventId => {
        live.set(stream.id, stream);
        const frame = { seq: stream.nextSeq++, message };
        append(stream, frame, first);
        return `${stream.key}-${frame.seq}`;
      };

      return {
        async storeEvent(streamId, message) {
          if (muted > 0 || disposed) return `${"0".repeat(12)}-0`;
          // A stream a previous process left goes on where it stopped (an answer, the GET stream).
          const held = bySession.get(sessionId);
          let stream = live.get(streamId);
          // A stream whose every frame was dropped for the bounds starts again under a new key.
          if (stream && held?.get(stream.key) !== stream) stream = undefined;
          stream ??= [...(held?.values() ?? [])].find((x) => x.inherited && x.id === streamId);
          const first = !stream;
          if (!stream) {
            const key = randomBytes(6).toString("hex");
            stream = {
              session: sessionId,
              id: streamId,
              key,
              frames: [],
              nextSeq: 1,
              droppedThrough: 0,
              inherited: false,
              requestIds: [...(hooks.currentRequests?.() ?? [])],
              answered: new Set(),
            };
            streamsOf(sessionId).set(key, stream);
            streams += 1;
            await hooks.opened?.(streamId, stream.requestIds);
          }
          const id = store(stream, message, first);
          if (isResponse(message)) await hooks.answered?.(message.id);
          return id;
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
            await send(`${at.stream.key}-${frame.seq}`, frame.message);
          }
          return at.stream.id;
        },

        async foreign(eventId) {
          const at = locate(eventId);
          if (!at?.stream.inherited) return undefined;
          const { id, requestIds, answered } = at.stream;
          return { id, requestIds, answered: new Set(answered) };
        },

        async next(eventId) {
          // A process that is gone wrote the stream: nothing more comes unless it is here now.
          const at = locate(eventId);
          if (!at) return "gone";
          return at.stream.frames.some((f) => f.seq > at.seq) ? "more" : "orphaned";
        },

        async storeAnswer(eventId, message) {
          const at = locate(eventId);
          if (!at) throw new Error(`event ${eventId} cannot be answered here`);
          // Once per request: a second answer (two resumes at once) is the first one.
          if (at.stream.answered.has(message.id)) {
            const frame = at.stream.frames.find((f) => isResponse(f.message) && f.message.id === message.id);
            if (frame) return `${at.stream.key}-${frame.seq}`;
          }
          const id = store(at.stream, message, false);
          await hooks.answered?.(message.id);
          return id;
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
          // The frames stay on disk until their segment goes; nothing can name them any more.
          disposed = true;
          for (const stream of [...(bySession.get(sessionId)?.values() ?? [])]) forget(stream);
          live.clear();
        },

        async release() {
          // A later process reads them back as inherited.
        },
      };
    },
    size: () => ({ events, bytes, streams, segments: segments.length }),
    async close() {
      for (const seg of segments) {
        if (seg.fd === undefined) continue;
        fs.closeSync(seg.fd);
        delete seg.fd;
      }
    },
  };
}
