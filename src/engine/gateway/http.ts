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
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { silentLogger, type Logger } from "../log.ts";
import type { GatewayGrant, ModelGateway } from "./gateway.ts";
import { meterFor, reportUsage, requestStreamUsage } from "./metering.ts";

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
/** Error bodies are small; buffering them lets us scrub an echoed key before the agent sees it. */
const MAX_ERROR_BODY = 1024 * 1024;

/** Paths (after `/v1`) the gateway forwards, by method. */
const ROUTES: Record<string, ReadonlySet<string>> = {
  POST: new Set(["/chat/completions", "/completions", "/responses"]),
  GET: new Set(["/models"]),
};

/** RFC 9110 hop-by-hop headers plus ones a proxy must recompute or must not forward. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
  "content-length",
]);
/** Incoming headers that may carry the gateway token (or other credentials) and so never go upstream. */
const CREDENTIAL_HEADERS = new Set(["authorization", "x-api-key", "api-key", "cookie"]);

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

/** OpenAI error shape, so the agent's SDK reports our refusals like any provider error. */
interface GatewayErrorBody {
  error: { message: string; type: string; code: string };
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Why a gateway request stopped early: the run's token was revoked, or the gateway is closing. */
class GatewayAbort extends Error {
  constructor(readonly reason: "revoked" | "client_gone" | "closing") {
    super(`gateway request aborted: ${reason}`);
    this.name = "GatewayAbort";
  }
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
  const upstreamBase = new URL(opts.upstreamBaseUrl.replace(/\/+$/, "") + "/");
  const upstreamIsHttps = upstreamBase.protocol === "https:";
  if (!upstreamIsHttps && upstreamBase.protocol !== "http:") {
    throw new TypeError(`upstreamBaseUrl must be http(s), got ${upstreamBase.protocol}`);
  }
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const attribution = opts.attribution ?? { referer: "https://github.com/patchbay", title: "Patchbay" };
  // Our own keep-alive agent, so close() can drop pooled upstream sockets too.
  const agent = upstreamIsHttps ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });

  /** Keyed by the token's sha256 hex, so a lookup never compares the token itself char by char. */
  const tokens = new Map<string, TokenEntry>();
  /** Shared agent servers' tokens, keyed like `tokens`. */
  const shared = new Map<string, SharedEntry>();
  const sockets = new Set<Socket>();
  const allInFlight = new Set<AbortController>();
  let closing = false;

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

      const target = new URL(sub.slice(1) + url.search, upstreamBase);
      const headers = forwardHeaders(req.headers, key, attribution, body?.length);
      const status = await forward({ target, method, headers, body, key, res, signal: controller.signal, grant, rlog });
      rlog.info("gateway request", { model, stream, status, ms: Date.now() - started });
    } finally {
      res.off("close", onClientGone);
      entry.inFlight.delete(controller);
      allInFlight.delete(controller);
    }
  }

  interface ForwardArgs {
    target: URL;
    method: string;
    headers: http.OutgoingHttpHeaders;
    body: Buffer | undefined;
    key: string;
    res: http.ServerResponse;
    signal: AbortSignal;
    grant: GatewayGrant;
    rlog: Logger;
  }

  /** Send the request upstream and pipe the answer back; resolves with the status the client got. */
  function forward(a: ForwardArgs): Promise<number> {
    const { res, signal, rlog } = a;
    return new Promise<number>((resolve) => {
      let settled = false;
      const done = (status: number) => {
        if (!settled) {
          settled = true;
          resolve(status);
        }
      };
      const client = upstreamIsHttps ? https : http;
      const up = client.request(a.target, { method: a.method, headers: a.headers, agent, signal });
      up.on("error", (err: NodeJS.ErrnoException) => {
        if (signal.aborted) {
          finishAborted(res, signal);
          return done(res.statusCode);
        }
        // Only the error code is reported: messages can carry URLs or details we do not vet.
        const code = err.code ?? "unknown";
        rlog.warn("gateway upstream request failed", { code });
        if (!res.headersSent)
          sendError(res, 502, `model upstream unreachable (${code})`, "upstream_error", "bad_gateway");
        else res.destroy();
        done(502);
      });
      up.on("response", (upRes) => {
        const status = upRes.statusCode ?? 502;
        const outHeaders = responseHeaders(upRes.headers, a.key);
        const contentType = String(upRes.headers["content-type"] ?? "");
        upRes.on("error", (err: NodeJS.ErrnoException) => {
          // Handled on "close" below; a listener is needed so the error cannot crash the process.
          if (!signal.aborted) rlog.warn("gateway upstream response broke off", { code: err.code });
        });
        upRes.on("close", () => {
          if (upRes.complete) return;
          // The body stopped early (upstream dropped, token revoked, gateway closing): cut the
          // client too, so a truncated stream is never mistaken for a complete answer.
          if (signal.aborted) finishAborted(res, signal);
          else res.destroy();
          done(status);
        });

        if (status >= 400) {
          // Error bodies are buffered (they are small) so an upstream that echoes the key
          // ("Incorrect API key provided: sk-...") cannot leak it to the sandbox.
          const chunks: Buffer[] = [];
          let size = 0;
          upRes.on("data", (c: Buffer) => {
            size += c.length;
            if (size <= MAX_ERROR_BODY) chunks.push(c);
          });
          upRes.on("end", () => {
            const text = scrub(Buffer.concat(chunks).toString("utf8"), a.key);
            delete outHeaders["content-length"];
            res.writeHead(status, outHeaders);
            res.end(text);
            rlog.warn("gateway upstream answered with an error", { status });
            done(status);
          });
          return;
        }

        res.writeHead(status, outHeaders);
        // Send headers now: the agent should see the response start before the first token.
        res.flushHeaders();
        const meter = meterFor(contentType);
        let broken = false;
        upRes.on("data", (c: Buffer) => {
          if (broken) return;
          // Write before metering: the client never waits on our parsing. A slow client
          // pauses the upstream rather than growing our memory.
          if (!res.write(c)) {
            upRes.pause();
            res.once("drain", () => upRes.resume());
          }
          if (meter) {
            meter.push(c);
            if (meter.malformed && !broken) {
              // Cut the agent's response mid-stream: it sees a failed call (and retries, then
              // fails the turn with model_error) instead of an empty "complete" answer.
              broken = true;
              rlog.warn("gateway: the model sent a malformed event stream; cutting the response");
              res.destroy();
              upRes.destroy();
              done(502);
            }
          }
        });
        upRes.on("end", () => {
          if (broken) return;
          res.end();
          const usage = meter?.end();
          if (usage) reportUsage(a.grant, usage, rlog);
          done(status);
        });
      });
      up.end(a.body);
    });
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
  log.info("model gateway listening", { port: address.port, upstream: upstreamBase.origin });

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
      closing = true;
      for (const c of allInFlight) c.abort(new GatewayAbort("closing"));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      agent.destroy();
      await closed;
    },
  };

  /** After an abort: answer if nothing was sent yet, else cut the connection. */
  function finishAborted(res: http.ServerResponse, signal: AbortSignal): void {
    const reason = signal.reason instanceof GatewayAbort ? signal.reason.reason : "client_gone";
    if (reason === "client_gone" || res.headersSent || closing) {
      res.destroy();
      return;
    }
    sendError(res, 401, "gateway token was revoked", "authentication_error", "unauthorized");
  }
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

/** Headers for the upstream request: the client's, minus credentials and hop-by-hop, plus ours. */
function forwardHeaders(
  incoming: http.IncomingHttpHeaders,
  key: string,
  attribution: { referer: string; title: string },
  bodyLength: number | undefined,
): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  const connectionListed = new Set(
    String(incoming.connection ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter(Boolean),
  );
  for (const [name, value] of Object.entries(incoming)) {
    const lower = name.toLowerCase();
    if (value === undefined || HOP_BY_HOP.has(lower) || CREDENTIAL_HEADERS.has(lower) || connectionListed.has(lower))
      continue;
    out[lower] = value;
  }
  out.authorization = `Bearer ${key}`;
  // Identity encoding: we scan the bytes for usage and pass them through as they come.
  out["accept-encoding"] = "identity";
  out["http-referer"] = attribution.referer;
  out["x-title"] = attribution.title;
  if (bodyLength !== undefined) out["content-length"] = bodyLength;
  return out;
}

/** Headers for the client: the upstream's, minus hop-by-hop and anything that contains the key. */
function responseHeaders(incoming: http.IncomingHttpHeaders, key: string): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(incoming)) {
    const lower = name.toLowerCase();
    if (value === undefined || lower === "host" || lower === "set-cookie") continue;
    if (HOP_BY_HOP.has(lower) && lower !== "content-length") continue;
    if ((Array.isArray(value) ? value.join(",") : String(value)).includes(key)) continue;
    out[lower] = value;
  }
  // Proxies between us and the agent (none by default) must not hold the stream back.
  out["x-accel-buffering"] = "no";
  return out;
}

function scrub(text: string, key: string): string {
  return key && text.includes(key) ? text.split(key).join("[redacted]") : text;
}

function sendError(res: http.ServerResponse, status: number, message: string, type: string, code: string): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const body: GatewayErrorBody = { error: { message, type, code } };
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function sendTooLarge(res: http.ServerResponse, limit: number): void {
  // The rest of an oversized body is not worth reading: close the connection after answering.
  res.setHeader("connection", "close");
  sendError(res, 413, `request body exceeds ${limit} bytes`, "invalid_request_error", "payload_too_large");
}
