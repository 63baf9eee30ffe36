/**
 * MCP over Streamable HTTP: an express router for `/mcp` with stateful sessions.
 *
 * Every request passes, in order: the Host check and the Origin check (403, against DNS
 * rebinding from a browser page), the Bearer key (401, the same keys and scopes as REST),
 * then session routing. A session id is a random UUID (crypto) bound to the key that opened
 * it: the same id presented with another key answers 404, exactly like an unknown id, so a
 * session's existence does not leak. Each session has its own McpServer (the SDK binds one
 * server to one transport); the engine behind them is shared. Sessions and their streams are
 * kept under the data dir, or in the database replicas share, and outlive the process
 * (`sessions.ts`): a known session id is served after a restart or by another replica, and a
 * stream a previous process or another replica opened is resumed by `resume.ts`.
 */
import express from "express";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import {
  isInitializeRequest,
  LATEST_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
} from "@modelcontextprotocol/sdk/types.js";
import type { Engine, Logger, SharedDocuments, SharedMcpEvents } from "../engine/index.ts";
import { ProtocolCode } from "./errors.ts";
import type { McpEventLogOptions } from "./event-store.ts";
import { createStreamResumer } from "./resume.ts";
import { createMcpSessions, type McpSession } from "./sessions.ts";
import type { McpCaller, ToolExtra } from "./tool.ts";

/** What a verified key tells the MCP front. */
export interface VerifiedKey {
  id: string;
  ownerId: string;
  scopes: readonly string[];
  /** The key's repository allow-list; absent: any repository. */
  repos?: readonly string[];
}

/** The caller an authentication middleware leaves on `res.locals.caller` (as the REST auth does). */
export interface HttpCaller {
  keyId: string;
  ownerId: string;
  scopes: readonly string[];
  repos?: readonly string[];
}

export interface McpHttpOptions {
  engine: Engine;
  log: Logger;
  /** Where sessions and the event log live, so they outlive the process: `<dataDir>/mcp`. */
  stateDir: string;
  /** Session records every replica shares (PATCHBAY_DATABASE_URL); default: files in `stateDir`. */
  sharedRecords?: SharedDocuments;
  /** The event log every replica shares (PATCHBAY_DATABASE_URL); default: files in `stateDir`. */
  sharedEvents?: SharedMcpEvents;
  /**
   * Authenticates a request: sets `res.locals.caller` ({keyId, ownerId, scopes}) or answers
   * 401/403 itself. The REST app's `auth("read:builder")` fits. Give this or `verifyKey`.
   */
  authenticate?: express.RequestHandler;
  /** Verify a presented Bearer key (undefined when unknown or revoked); used when `authenticate` is not given. */
  verifyKey?(key: string): Promise<VerifiedKey | undefined>;
  /** The address the server binds to; picks the default Host allow-list. Default `127.0.0.1`. */
  host?: string;
  /**
   * Host header names accepted (without port). Default: the loopback names when `host` is a
   * loopback address, else `host` plus the loopback names; no check when bound to all
   * interfaces (`0.0.0.0`, `::`) and no list is given, where the Bearer key is the guard.
   */
  allowedHosts?: readonly string[];
  /** Origins accepted when a request has an Origin header. Default: any loopback origin. */
  allowedOrigins?: readonly string[];
  /** A session with no request in flight for this long is closed. Default 1 hour. */
  sessionIdleMs?: number;
  /** Bounds of the event log streams are resumed from (default 10 000 frames, 16 MiB). */
  eventLog?: McpEventLogOptions;
  /** The `retry` a priming event tells clients to wait before reconnecting. Default 1000 ms. */
  retryMs?: number;
}

export interface McpHttpHandler {
  /**
   * The middleware chain for `/mcp`, in order: Host/Origin check, authentication, JSON body,
   * session routing. Mount with `app.all("/mcp", ...handler.chain)`.
   */
  chain: express.RequestHandler[];
  /** Open sessions (tests, health). */
  sessionCount(): number;
  /** Close every session (shutdown). Runs are not touched. */
  close(): Promise<void>;
}

const LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"];
/** The first protocol version without JSON-RPC batching (2025-03-26 had it). */
const NO_BATCHES_FROM = "2025-06-18";
const ALL_INTERFACES = ["0.0.0.0", "::", "[::]"];

/** A JSON-RPC error response, the shape MCP clients expect even outside a session. */
function rpcError(
  res: express.Response,
  status: number,
  code: number,
  message: string,
  data?: Record<string, unknown>,
): void {
  res.status(status).json({ jsonrpc: "2.0", error: { code, message, ...(data ? { data } : {}) }, id: null });
}

function defaultAllowedHosts(host: string): readonly string[] | undefined {
  if (ALL_INTERFACES.includes(host)) return undefined;
  const name = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return LOOPBACK_HOSTS.includes(name) || name === "::1" ? LOOPBACK_HOSTS : [name, ...LOOPBACK_HOSTS];
}

function isLoopbackOrigin(origin: string): boolean {
  // "null" (sandboxed frames, file://) and garbage do not parse, and are not loopback origins.
  return URL.canParse(origin) && LOOPBACK_HOSTS.includes(new URL(origin).hostname);
}

/** The caller of a tool call, from the key the HTTP layer verified (`req.auth`). */
export function callerFromAuthInfo(extra: ToolExtra): McpCaller | undefined {
  const auth = extra.authInfo;
  const ownerId = auth?.extra?.["ownerId"];
  if (!auth || typeof ownerId !== "string") return undefined;
  const repos = auth.extra?.["repos"];
  return { ownerId, scopes: auth.scopes, ...(Array.isArray(repos) ? { allowedRepositories: repos as string[] } : {}) };
}

/** Build the `/mcp` router. Never listens. */
export function createMcpHttpHandler(opts: McpHttpOptions): McpHttpHandler {
  const { engine, log } = opts;
  const allowedHosts = opts.allowedHosts ?? defaultAllowedHosts(opts.host ?? "127.0.0.1");
  const originAllowed = (origin: string) =>
    opts.allowedOrigins ? opts.allowedOrigins.includes(origin) : isLoopbackOrigin(origin);
  const sessionIdleMs = opts.sessionIdleMs ?? 60 * 60_000;
  const sessions = createMcpSessions({
    engine,
    log,
    stateDir: opts.stateDir,
    idleMs: sessionIdleMs,
    retryMs: opts.retryMs ?? 1000,
    resolveCaller: callerFromAuthInfo,
    ...(opts.eventLog ? { eventLog: opts.eventLog } : {}),
    ...(opts.sharedRecords ? { sharedRecords: opts.sharedRecords } : {}),
    ...(opts.sharedEvents ? { sharedEvents: opts.sharedEvents } : {}),
  });
  const resumer = createStreamResumer({ engine, records: sessions.records, log });

  const guard: express.RequestHandler = (req, res, next) => {
    if (allowedHosts) {
      const url = `http://${req.headers.host ?? ""}`;
      const hostname = req.headers.host && URL.canParse(url) ? new URL(url).hostname : undefined;
      if (!hostname || !allowedHosts.includes(hostname))
        return rpcError(res, 403, -32000, `Host not allowed: ${req.headers.host ?? "(none)"}`, { code: "forbidden" });
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !originAllowed(origin))
      return rpcError(res, 403, -32000, `Origin not allowed: ${origin}`, { code: "forbidden" });
    next();
  };

  const bearerAuth: express.RequestHandler = (req, res, next) => {
    const verifyKey = opts.verifyKey;
    if (!verifyKey) return next(new TypeError("createMcpHttpHandler needs authenticate or verifyKey"));
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? "");
    const deny = (message: string) => {
      res.setHeader("WWW-Authenticate", 'Bearer realm="patchbay"');
      rpcError(res, 401, -32001, message, { code: "unauthorized" });
    };
    if (!m) return deny("missing API key: send Authorization: Bearer <key>");
    verifyKey(m[1]!).then(
      (key) => {
        if (!key) return deny("invalid or revoked API key");
        res.locals.caller = {
          keyId: key.id,
          ownerId: key.ownerId,
          scopes: key.scopes,
          ...(key.repos ? { repos: key.repos } : {}),
        } satisfies HttpCaller;
        next();
      },
      (e: unknown) => next(e),
    );
  };

  const route: express.RequestHandler = (req, res, next) => {
    const caller = res.locals.caller as HttpCaller | undefined;
    if (!caller)
      return rpcError(res, 401, -32001, "missing API key: send Authorization: Bearer <key>", { code: "unauthorized" });
    // The SDK hands this to every handler as `extra.authInfo`: that is how tools learn the caller.
    const auth: AuthInfo = {
      token: "(verified)",
      clientId: caller.keyId,
      scopes: [...caller.scopes],
      extra: { ownerId: caller.ownerId, ...(caller.repos ? { repos: [...caller.repos] } : {}) },
    };
    const sid = req.headers["mcp-session-id"];
    if (typeof sid === "string") {
      // Held here, or revived from its record after a restart; another key's is as unknown as none.
      return sessions
        .find(sid, auth.clientId)
        .then((session) => (session ? serveSession(session, req, res, auth, caller) : notFound(res)))
        .catch(next);
    }
    if (req.method !== "POST" || !isInitializeRequest(req.body)) {
      return rpcError(res, 400, -32000, "Bad Request: no valid session id; start with an initialize request");
    }
    const { protocolVersion: asked, clientInfo, capabilities } = req.body.params;
    const protocolVersion = SUPPORTED_PROTOCOL_VERSIONS.includes(asked) ? asked : LATEST_PROTOCOL_VERSION;
    sessions
      .open(auth.clientId, { protocolVersion, clientInfo, capabilities: capabilities as Record<string, unknown> })
      .then((session) => handle(session, req, res, auth))
      .catch(next);
  };

  const notFound = (res: express.Response) => rpcError(res, 404, -32001, "Session not found");

  async function serveSession(
    session: McpSession,
    req: express.Request,
    res: express.Response,
    auth: AuthInfo,
    caller: HttpCaller,
  ): Promise<void> {
    if (Array.isArray(req.body)) {
      // Dates order as strings; a request may name its version, else the session's holds.
      const header = req.headers["mcp-protocol-version"];
      const version = typeof header === "string" ? header : session.protocolVersion;
      if (version >= NO_BATCHES_FROM)
        return rpcError(
          res,
          400,
          ProtocolCode.InvalidRequest,
          `Invalid Request: protocol version ${version} has no JSON-RPC batches; send one message per request`,
        );
    }
    const header = req.headers["last-event-id"];
    const cursor = req.method === "GET" && typeof header === "string" ? header : undefined;
    const foreign = cursor === undefined ? undefined : await session.events.foreign(cursor);
    if (cursor !== undefined && foreign && foreign.id !== "_GET_stream") {
      // A stream a previous process, or another replica, opened: this transport has no request on it.
      if (foreign.requestIds.length === 0 && foreign.answered.size === 0)
        return rpcError(res, 400, -32000, "this stream cannot be resumed: its start was dropped from the event log");
      track(session, res);
      const target = { sessionId: session.id, ownerId: caller.ownerId, events: session.events, stream: foreign };
      return resumer.serve(target, cursor, res);
    }
    return handle(session, req, res, auth);
  }

  function track(session: McpSession, res: express.Response): void {
    session.inFlight += 1;
    session.lastSeen = Date.now();
    res.once("close", () => {
      session.inFlight -= 1;
      session.lastSeen = Date.now();
    });
  }

  async function handle(session: McpSession, req: express.Request, res: express.Response, auth: AuthInfo) {
    track(session, res);
    await session.handle(req, res, req.body, auth);
  }

  const sweeper = setInterval(
    () => {
      const now = Date.now();
      for (const s of sessions.held()) {
        if (s.inFlight === 0 && now - s.lastSeen > sessionIdleMs) {
          log.debug("MCP session idle, closing", { sessionId: s.id.slice(0, 8) });
          void sessions.expire(s).catch((e: unknown) => log.warn("MCP session did not close cleanly", { error: e }));
        }
      }
    },
    Math.min(60_000, sessionIdleMs),
  );
  sweeper.unref();

  return {
    // The REST app may already have parsed the body; express.json() skips it then.
    // start_run and send_message take images (base64): five of 10 MB are about 70 MB.
    chain: [guard, opts.authenticate ?? bearerAuth, express.json({ limit: "72mb" }), route],
    sessionCount: () => [...sessions.held()].length,
    async close() {
      clearInterval(sweeper);
      await sessions.close();
    },
  };
}
