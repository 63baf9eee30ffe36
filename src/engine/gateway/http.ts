/**
 * The model gateway over node:http: a loopback OpenAI-compatible endpoint that OpenCode
 * calls with a per-run token (as its provider "API key"). Each request is checked against
 * the token's grant, re-signed with the real upstream key, and forwarded to the upstream
 * (OpenRouter or any OpenAI-compatible server) with the response streamed back unbuffered.
 * Usage reported by the upstream is metered back to the run through `grant.onUsage`.
 *
 * The real key exists only in this process: it is never logged (registered with
 * `log.redact`), never echoed back (scrubbed from error bodies and headers) and never sent
 * to the sandbox.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { silentLogger, type Logger } from "../log.ts";
import type { GatewayGrant, ModelGateway } from "./gateway.ts";
import { requestStreamUsage } from "./metering.ts";
import { createUpstreamProxy, finishAborted, GatewayAbort, sendError } from "./proxy.ts";

/** Options for {@link createModelGateway}. */
export interface ModelGatewayOptions {
  /** OpenAI-compatible base URL the gateway forwards to, ending in `/v1` or similar (PATCHBAY_OPENROUTER_BASE_URL). */
  upstreamBaseUrl: string;
  /** Where request lines go; default silent. */
  log?: Logger;
  /** Interface to listen on; default `127.0.0.1` (the gateway is never meant to be public). */
  host?: string;
  /** Port to listen on; default 0 (any free port). */
  port?: number;
  /** Largest request body accepted, in bytes; default 32 MiB (long agent contexts with images). */
  maxBodyBytes?: number;
  /** OpenRouter app attribution headers; default referer `https://github.com/patchbay`, title `Patchbay`. */
  attribution?: { referer: string; title: string };
}

/** The message an agent surfaces when a run has no model key; kept stable for callers to match. */
export const NO_MODEL_KEY_MESSAGE =
  "no model key configured for this run (set OPENROUTER_API_KEY or use billing.mode openrouter)";

const TOKEN_PREFIX = "pbgw_";
const DEFAULT_MAX_BODY = 32 * 1024 * 1024;
/** Paths (after `/v1`) the gateway forwards, by method. */
const ROUTES: Record<string, ReadonlySet<string>> = {
  POST: new Set(["/chat/completions", "/completions", "/responses"]),
  GET: new Set(["/models"]),
};

interface TokenEntry {
  /** sha256 of the token: the Map key, and what is compared in constant time. */
  digest: Buffer;
  grant: GatewayGrant;
  /** Upstream requests in flight for this token, aborted on revoke. */
  inFlight: Set<AbortController>;
}

/** A shared agent server's token: OpenCode session id -> digest (hex) of the run token it stands for. */
interface SharedEntry {
  digest: Buffer;
  sessions: Map<string, string>;
  resolveSession?: (sessionId: string) => Promise<string | undefined>;
}

/** Longest the gateway waits for a shared server's driver to say whose an unbound session is. */
const RESOLVE_TIMEOUT_MS = 5000;

/** Headers in which OpenCode names the session of a model request (custom providers, 1.18.33). */
const SESSION_HEADERS = ["x-session-id", "x-session-affinity"] as const;

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Thrown while reading a request body that is larger than allowed. */
class BodyTooLarge extends Error {
  constructor() {
    super("request body too large");
    this.name = "BodyTooLarge";
  }
}

/**
 * Start the model gateway on loopback. The agent is configured with an OpenAI-compatible
 * provider whose `baseURL` is `gateway.url` and whose API key is a token from `issueToken`.
 */
export async function createModelGateway(opts: ModelGatewayOptions): Promise<ModelGateway> {
  const log = (opts.log ?? silentLogger).child({ component: "gateway" });
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const proxy = createUpstreamProxy({
    upstreamBaseUrl: opts.upstreamBaseUrl,
    attribution: opts.attribution ?? { referer: "https://github.com/patchbay", title: "Patchbay" },
  });

  /** Keyed by the token's sha256 hex, so a lookup never compares the token itself char by char. */
  const tokens = new Map<string, TokenEntry>();
  /** Shared agent servers' tokens, keyed like `tokens`. */
  const shared = new Map<string, SharedEntry>();
  const sockets = new Set<Socket>();
  const allInFlight = new Set<AbortController>();

  const register = (token: string, grant: GatewayGrant): string => {
    const digest = sha256(token);
    tokens.set(digest.toString("hex"), { digest, grant, inFlight: new Set() });
    // The token is a credential too: keep it out of our own log lines.
    log.redact(token);
    return token;
  };

  type Auth = { entry: TokenEntry } | { status: 401 | 403; message: string };

  const authenticate = async (req: http.IncomingMessage): Promise<Auth> => {
    const header = req.headers.authorization;
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    const refused: Auth = { status: 401, message: "invalid or revoked gateway token" };
    if (!m || !m[1]!.startsWith(TOKEN_PREFIX)) return refused;
    const digest = sha256(m[1]!);
    const hex = digest.toString("hex");
    // The Map lookups already matched on the digest; the constant-time compares keep the
    // check honest should the maps ever be keyed differently.
    const entry = tokens.get(hex);
    if (entry) return timingSafeEqual(entry.digest, digest) ? { entry } : refused;
    const sharedEntry = shared.get(hex);
    if (!sharedEntry || !timingSafeEqual(sharedEntry.digest, digest)) return refused;
    const ids = SESSION_HEADERS.map((h) => req.headers[h]).filter((v): v is string => typeof v === "string" && !!v);
    if (ids.length === 0) return { status: 401, message: "a shared gateway token needs an X-Session-Id header" };
    if (ids.some((id) => id !== ids[0])) return { status: 403, message: "the request names two different sessions" };
    const sessionId = ids[0]!;
    let runHex = sharedEntry.sessions.get(sessionId);
    if (runHex === undefined && sharedEntry.resolveSession) {
      const runToken = await Promise.race([
        sharedEntry.resolveSession(sessionId).catch((e: unknown) => {
          log.warn("could not resolve an agent session", { error: e });
          return undefined;
        }),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), RESOLVE_TIMEOUT_MS).unref()),
      ]);
      const hex = runToken === undefined ? undefined : sha256(runToken).toString("hex");
      if (hex !== undefined && tokens.has(hex) && shared.get(digest.toString("hex")) === sharedEntry) {
        sharedEntry.sessions.set(sessionId, hex);
        runHex = hex;
      }
    }
    const runEntry = runHex === undefined ? undefined : tokens.get(runHex);
    // A session whose run ended (unbound, or its run token revoked) is no one's any more.
    if (!runEntry) return { status: 403, message: "this session is bound to no live run" };
    return { entry: runEntry };
  };

  const sharedEntryOf = (token: string): SharedEntry => {
    const entry = shared.get(sha256(token).toString("hex"));
    if (!entry) throw new TypeError("not a shared token this gateway issued");
    return entry;
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      // Last resort: a bug in the handler must cost one request, never the server.
      log.error("gateway request failed", { err: e });
      if (!res.headersSent) sendError(res, 500, "internal gateway error", "server_error", "internal");
      else res.destroy();
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("clientError", (err, socket) => {
    // Malformed HTTP from a client: answer 400 if we still can, and keep serving others.
    log.debug("gateway client error", { err });
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n");
    else socket.destroy();
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = Date.now();
    const url = new URL(req.url ?? "/", "http://gateway.invalid");
    const sub = url.pathname.startsWith("/v1/") ? url.pathname.slice(3) : undefined;
    const method = req.method ?? "GET";
    if (!sub || !ROUTES[method]?.has(sub)) {
      req.resume();
      sendError(res, 404, `no route ${method} ${url.pathname}`, "invalid_request_error", "not_found");
      return;
    }
    const auth = await authenticate(req);
    if (!("entry" in auth)) {
      req.resume();
      if (auth.status === 401) sendError(res, 401, auth.message, "authentication_error", "unauthorized");
      else sendError(res, 403, auth.message, "permission_error", "session_not_bound");
      return;
    }
    const { entry } = auth;
    const { grant } = entry;
    const rlog = log.child({ runId: grant.runId, path: sub });

    // Registered before any await, so a revoke or close during body read or key lookup stops us.
    const controller = new AbortController();
    entry.inFlight.add(controller);
    allInFlight.add(controller);
    const onClientGone = () => {
      if (!res.writableFinished) controller.abort(new GatewayAbort("client_gone"));
    };
    res.on("close", onClientGone);
    try {
      let body: Buffer | undefined;
      let model: string | undefined;
      let stream = false;
      if (method === "POST") {
        const declared = Number(req.headers["content-length"]);
        if (Number.isFinite(declared) && declared > maxBody) {
          sendTooLarge(res, maxBody);
          return;
        }
        try {
          body = await readBody(req, maxBody, controller.signal);
        } catch (e) {
          if (e instanceof BodyTooLarge) {
            sendTooLarge(res, maxBody);
            return;
          }
          throw e;
        }
        let json: unknown;
        try {
          json = JSON.parse(body.toString("utf8"));
        } catch (e) {
          rlog.debug("gateway rejected a malformed body", { err: e });
          sendError(res, 400, "request body is not valid JSON", "invalid_request_error", "invalid_request");
          return;
        }
        if (!json || typeof json !== "object" || Array.isArray(json)) {
          sendError(res, 400, "request body must be a JSON object", "invalid_request_error", "invalid_request");
          return;
        }
        const fields = json as Record<string, unknown>;
        model = typeof fields.model === "string" ? fields.model : undefined;
        stream = fields.stream === true;
        if (grant.allowedModels.length > 0 && (model === undefined || !grant.allowedModels.includes(model))) {
          rlog.warn("gateway refused a model outside the run's grant", { model });
          sendError(
            res,
            403,
            `model ${JSON.stringify(model ?? null)} is not allowed for this run`,
            "permission_error",
            "model_not_allowed",
          );
          return;
        }
        if (requestStreamUsage(fields, sub)) body = Buffer.from(JSON.stringify(fields), "utf8");
      }

      let key: string | undefined;
      try {
        key = await grant.upstreamKey();
      } catch (e) {
        // Key resolution failed (e.g. the stored key cannot be decrypted): the agent sees a
        // model error; the detail stays in our log, never in the response.
        rlog.error("gateway could not resolve the upstream key", { err: e });
        sendError(res, 500, "could not resolve the model key for this run", "server_error", "no_model_key");
        return;
      }
      if (controller.signal.aborted) return finishAborted(res, controller.signal);
      if (!key) {
        sendError(res, 401, NO_MODEL_KEY_MESSAGE, "authentication_error", "no_model_key");
        return;
      }
      log.redact(key);

      const status = await proxy.forward({
        path: sub,
        search: url.search,
        method,
        headers: req.headers,
        body,
        key,
        res,
        signal: controller.signal,
        grant,
        log: rlog,
      });
      rlog.info("gateway request", { model, stream, status, ms: Date.now() - started });
    } finally {
      res.off("close", onClientGone);
      entry.inFlight.delete(controller);
      allInFlight.delete(controller);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (err) => log.error("gateway server error", { err }));
  const address = server.address() as AddressInfo;
  const urlHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  log.info("model gateway listening", { port: address.port, upstream: proxy.origin });

  return {
    port: address.port,
    url: `http://${urlHost}:${address.port}/v1`,
    issueToken(grant) {
      return register(TOKEN_PREFIX + randomBytes(32).toString("base64url"), grant);
    },
    restoreToken(token, grant) {
      if (!token.startsWith(TOKEN_PREFIX) || !/^[A-Za-z0-9_-]{43}$/.test(token.slice(TOKEN_PREFIX.length)))
        throw new TypeError("not a token this gateway issues");
      register(token, grant);
    },
    issueSharedToken(o = {}) {
      const token = TOKEN_PREFIX + randomBytes(32).toString("base64url");
      const digest = sha256(token);
      shared.set(digest.toString("hex"), {
        digest,
        sessions: new Map(),
        ...(o.resolveSession ? { resolveSession: o.resolveSession } : {}),
      });
      log.redact(token);
      return token;
    },
    bindSession(sharedToken, sessionId, runToken) {
      const entry = sharedEntryOf(sharedToken);
      const runHex = sha256(runToken).toString("hex");
      if (!tokens.has(runHex)) throw new TypeError("not a live run token of this gateway");
      entry.sessions.set(sessionId, runHex);
    },
    unbindSession(sharedToken, sessionId) {
      shared.get(sha256(sharedToken).toString("hex"))?.sessions.delete(sessionId);
    },
    revokeToken(token) {
      const hex = sha256(token).toString("hex");
      shared.delete(hex);
      const entry = tokens.get(hex);
      if (!entry) return;
      tokens.delete(hex);
      for (const c of entry.inFlight) c.abort(new GatewayAbort("revoked"));
    },
    async close() {
      for (const c of allInFlight) c.abort(new GatewayAbort("closing"));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      proxy.close();
      await closed;
    },
  };
}

/** Read a request body up to `limit` bytes. */
function readBody(req: http.IncomingMessage, limit: number, signal: AbortSignal): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onAbort = () => {
      cleanup();
      reject(signal.reason instanceof Error ? signal.reason : new GatewayAbort("client_gone"));
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        cleanup();
        // Stop buffering but drain the rest, so the 413 can still be written on this socket.
        req.resume();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(c);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const cleanup = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      signal.removeEventListener("abort", onAbort);
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort);
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
  });
}

function sendTooLarge(res: http.ServerResponse, limit: number): void {
  // The rest of an oversized body is not worth reading: close the connection after answering.
  res.setHeader("connection", "close");
  sendError(res, 413, `request body exceeds ${limit} bytes`, "invalid_request_error", "payload_too_large");
}
