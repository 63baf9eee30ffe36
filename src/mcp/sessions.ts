/**
 * The MCP sessions of the Streamable HTTP front, and how they outlive the process.
 *
 * Each session is the SDK's Web standard transport (`web-bridge.ts` speaks Node to it) bound to
 * its own McpServer, with its view of the event log for resumable streams (`event-store.ts` in
 * the data dir, or `shared-event-store.ts` in the database replicas share).
 * Its record (`session-records.ts`) is written when `initialize` is answered; a request naming
 * a session this process does not hold revives it from that record: a new transport whose id
 * is the session's, handed the session's `initialize` (and `notifications/initialized`) again
 * through its public `handleRequest`, with nothing stored or sent. That is the SDK's supported
 * way into an initialized state (its transport has no option to start as an existing session),
 * and the McpServer learns the client's info and capabilities as it did the first time.
 *
 * A session ends (its record deleted, its streams forgotten) on DELETE and when idle; a
 * shutdown closes the transports but keeps the records and streams, so the next process (or
 * another replica) serves them. With records replicas share, a replica's copy of a session may
 * sit idle while another replica serves it: the idle sweep then only closes the copy, and a
 * copy whose record is gone (DELETE on another replica) ends at its next request.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";
import path from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import { WebStandardStreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js";
import type { RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { Engine, Logger, SharedDocuments, SharedMcpEvents } from "../engine/index.ts";
import { createMcpEventLog, type McpEventLogOptions, type SessionEventStore } from "./event-store.ts";
import { createMcpServer, type McpServerOptions } from "./server.ts";
import {
  createSessionRecords,
  createSharedSessionRecords,
  type SessionRecord,
  type SessionRecords,
} from "./session-records.ts";
import { createSharedEventLog } from "./shared-event-store.ts";
import type { CallTracker } from "./tool.ts";
import { sendWebResponse, toWebRequest } from "./web-bridge.ts";

/** What `initialize` settled, as the record keeps it. */
export type SessionInit = Pick<SessionRecord, "protocolVersion" | "clientInfo" | "capabilities">;

export interface McpSession {
  id: string;
  keyId: string;
  protocolVersion: string;
  events: SessionEventStore;
  transport: WebStandardStreamableHTTPServerTransport;
  inFlight: number;
  lastSeen: number;
  /** Hand one HTTP request to the session's transport. */
  handle(req: IncomingMessage, res: ServerResponse, body: unknown, auth: AuthInfo): Promise<void>;
  /** End the session: its record and streams go. */
  close(): Promise<void>;
  /** Close this process's transport only; the session (record and streams) lives on for others. */
  leave(): Promise<void>;
}

export interface McpSessionsOptions {
  engine: Engine;
  log: Logger;
  /** Where sessions and the event log live (`<dataDir>/mcp`). */
  stateDir: string;
  idleMs: number;
  eventLog?: McpEventLogOptions;
  retryMs: number;
  resolveCaller: NonNullable<McpServerOptions["resolveCaller"]>;
  /** Session records every replica shares (PATCHBAY_DATABASE_URL); default: files in `stateDir`. */
  sharedRecords?: SharedDocuments;
  /** The event log every replica shares (PATCHBAY_DATABASE_URL); default: files in `stateDir`. */
  sharedEvents?: SharedMcpEvents;
}

export interface McpSessions {
  records: SessionRecords;
  /** Open a new session for `keyId`; it is held once its `initialize` is answered. */
  open(keyId: string, init: SessionInit): Promise<McpSession>;
  /** The session `id` of `keyId`, held or revived from its record; undefined when unknown, ended or another key's. */
  find(id: string, keyId: string): Promise<McpSession | undefined>;
  held(): IterableIterator<McpSession>;
  /** A held session idle past the limit here: end it, or only leave it when another replica still uses it. */
  expire(session: McpSession): Promise<void>;
  /** Close every transport, keeping the records (shutdown). */
  close(): Promise<void>;
}

/** A JSON-RPC request of the POST being handled, as the event log's hooks need it. */
interface PendingRequest {
  id: RequestId;
  method: string;
  tool?: string;
  wait: boolean;
}

/** Tools whose call waits on a turn and can be answered by a later process. */
const RESUMABLE_TOOLS = new Set(["start_run", "send_message"]);
const STANDALONE_STREAM = "_GET_stream";

/** The JSON-RPC requests in a POST body. */
export function requestsOf(body: unknown): PendingRequest[] {
  const messages: unknown[] = Array.isArray(body) ? body : [body];
  const out: PendingRequest[] = [];
  for (const m of messages) {
    if (!m || typeof m !== "object" || !("method" in m) || !("id" in m)) continue;
    const { id, method, params } = m as { id: RequestId; method: string; params?: Record<string, unknown> };
    const args = params?.["arguments"] as Record<string, unknown> | undefined;
    out.push({
      id,
      method,
      ...(typeof params?.["name"] === "string" ? { tool: params["name"] } : {}),
      wait: args?.["wait"] === true,
    });
  }
  return out;
}

export function createMcpSessions(opts: McpSessionsOptions): McpSessions {
  const { engine, log } = opts;
  const records = opts.sharedRecords
    ? createSharedSessionRecords({ docs: opts.sharedRecords, idleMs: opts.idleMs })
    : createSessionRecords({ dir: path.join(opts.stateDir, "sessions"), idleMs: opts.idleMs, log });
  const eventLog = opts.sharedEvents
    ? createSharedEventLog(opts.sharedEvents, { ...opts.eventLog, log })
    : createMcpEventLog(path.join(opts.stateDir, "events"), { ...opts.eventLog, log });
  const held = new Map<string, McpSession>();
  const reviving = new Map<string, Promise<McpSession | undefined>>();
  /** The session and requests of the POST being handled, for the first frame of a stream. */
  const current = new AsyncLocalStorage<{ sessionId: string; requests: PendingRequest[] }>();
  let shuttingDown = false;

  const calls: CallTracker = {
    async waiting(extra, runId) {
      const sid = extra.sessionId;
      const r = sid ? await records.get(sid) : undefined;
      if (!sid || !r?.calls.some((c) => c.requestId === extra.requestId)) return;
      await records.update(sid, (rec) => {
        const call = rec.calls.find((c) => c.requestId === extra.requestId);
        if (call) call.runId = runId;
      });
    },
  };

  async function create(sid: string, keyId: string, init: SessionInit, revived: boolean): Promise<McpSession> {
    const { server, dispose, connect } = createMcpServer(engine, { resolveCaller: opts.resolveCaller, log, calls });
    const requestsNow = () => {
      const c = current.getStore();
      return c?.sessionId === sid ? c.requests : undefined;
    };
    const events = eventLog.forSession(sid, {
      currentRequests: () => requestsNow()?.map((r) => r.id),
      async opened(streamId) {
        if (streamId === STANDALONE_STREAM) return;
        const waits = (requestsNow() ?? []).filter(
          (r) => r.method === "tools/call" && r.wait && RESUMABLE_TOOLS.has(r.tool!),
        );
        if (waits.length === 0) return;
        // Durable before the stream's first frame is sent: a client holding its id can be answered later.
        await records.update(sid, (rec) => {
          for (const w of waits) rec.calls.push({ requestId: w.id, streamId, tool: w.tool! });
        });
      },
      async answered(requestId) {
        const r = await records.get(sid);
        if (!r?.calls.some((c) => c.requestId === requestId)) return;
        await records.update(sid, (rec) => (rec.calls = rec.calls.filter((c) => c.requestId !== requestId)));
      },
    });
    const transport = new WebStandardStreamableHTTPServerTransport({
      sessionIdGenerator: () => sid,
      eventStore: events,
      retryInterval: opts.retryMs,
      onsessioninitialized: async () => {
        held.set(sid, session);
        if (revived) return;
        const now = new Date().toISOString();
        await records.put({ id: sid, keyId, ...init, createdAt: now, lastSeenAt: now, calls: [] });
        log.debug("MCP session opened", { sessionId: sid.slice(0, 8), keyId });
      },
    });
    let closed = false;
    /** Settles once an ending session's record is gone (a DELETE answers only then). */
    let ended: Promise<void> | undefined;
    /** Close the transport; `end` the session too (record and streams), or leave it to others. */
    const finish = async (end: boolean) => {
      if (closed) return;
      closed = true;
      held.delete(sid);
      dispose();
      if (end) {
        ended = events.dispose().then(() => records.delete(sid));
        await ended;
      }
      await server.close();
      // After the server: a call it aborted writes nothing more, so its streams are another's to answer.
      if (!end) await events.release();
    };
    const close = () => finish(!shuttingDown);
    // DELETE /mcp, idle expiry and shutdown all end here; the runs live on.
    transport.onclose = () =>
      void close().catch((e: unknown) => log.warn("MCP session did not close cleanly", { error: e }));
    const session: McpSession = {
      id: sid,
      keyId,
      protocolVersion: init.protocolVersion,
      events,
      transport,
      inFlight: 0,
      lastSeen: Date.now(),
      async handle(req, res, body, auth) {
        const requests = req.method === "POST" ? requestsOf(body) : [];
        void records.touch(sid).catch((e: unknown) => log.warn("could not note an MCP session's use", { error: e }));
        const response = await current.run({ sessionId: sid, requests }, () =>
          transport.handleRequest(toWebRequest(req), { parsedBody: body, authInfo: auth }),
        );
        // Another replica asked next must already find the session gone (its record deleted).
        if (req.method === "DELETE") await ended?.catch(() => undefined);
        await sendWebResponse(response, res);
      },
      close,
      leave: () => finish(false),
    };
    await connect(transport);
    return session;
  }

  /** Hand a new transport the session's `initialize` again, storing and sending nothing. */
  async function replayInitialize(session: McpSession, record: SessionRecord): Promise<void> {
    const url = "http://patchbay.internal/mcp";
    const headers = { accept: "application/json, text/event-stream", "content-type": "application/json" };
    const { protocolVersion, clientInfo, capabilities } = record;
    await session.events.muted(async () => {
      const init = {
        jsonrpc: "2.0",
        id: `revive-${record.id}`,
        method: "initialize",
        params: { protocolVersion, clientInfo, capabilities },
      };
      const { transport } = session;
      const answer = await transport.handleRequest(new Request(url, { method: "POST", headers }), { parsedBody: init });
      await answer.text();
      if (answer.status !== 200) throw new Error(`replaying initialize answered ${answer.status}`);
      const note = await transport.handleRequest(
        new Request(url, {
          method: "POST",
          headers: { ...headers, "mcp-session-id": record.id, "mcp-protocol-version": protocolVersion },
        }),
        { parsedBody: { jsonrpc: "2.0", method: "notifications/initialized" } },
      );
      await note.text();
    });
  }

  async function revive(id: string, keyId: string): Promise<McpSession | undefined> {
    const record = await records.get(id);
    if (!record || record.keyId !== keyId) return undefined;
    const session = await create(id, keyId, record, true);
    await replayInitialize(session, record);
    await records.touch(id);
    log.info("MCP session revived from its record", { sessionId: id.slice(0, 8), pendingCalls: record.calls.length });
    return session;
  }

  return {
    records,
    open: (keyId, init) => create(randomUUID(), keyId, init, false),
    async find(id, keyId) {
      const live = held.get(id);
      if (live && live.keyId !== keyId) return undefined;
      if (live && opts.sharedRecords && !(await records.get(id))) {
        // Ended on another replica (DELETE, idle): this copy goes too, with what it wrote since.
        await live.close();
        return undefined;
      }
      if (live) return live;
      // By id and key: another key's request must not share (and so fail) this key's revival.
      const at = `${id} ${keyId}`;
      let pending = reviving.get(at);
      if (!pending) {
        pending = revive(id, keyId);
        reviving.set(at, pending);
        void pending.finally(() => reviving.delete(at)).catch(() => undefined);
      }
      const s = await pending;
      return s?.keyId === keyId ? s : undefined;
    },
    held: () => held.values(),
    async expire(session) {
      // Shared records: the session ends only when its record, which every replica touches, is idle too.
      if (opts.sharedRecords && (await records.get(session.id))) return session.leave();
      await session.close();
    },
    async close() {
      shuttingDown = true;
      await Promise.allSettled([...held.values()].map((s) => s.close()));
      await eventLog.close();
    },
  };
}
