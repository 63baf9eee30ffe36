/**
 * The model gateway's HTTP server: a loopback OpenAI-compatible endpoint that OpenCode calls
 * with a per-run token (as its provider "API key"). It composes the token registry (who may
 * call: registry.ts), the upstream proxy (the real key swapped in: proxy.ts) and usage
 * metering (metering.ts) and the request rewrite (request.ts); what is left here is the
 * routes, the request checks (in-flight cap, size, read timeout, allowed model) and the
 * server's life.
 *
 * The real key exists only in this process: it is never logged (registered with
 * `log.redact`), never echoed back (the proxy scrubs it) and never sent to the sandbox.
 */
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { isEngineError } from "../errors.ts";
import { silentLogger, type Logger } from "../log.ts";
import type { GatewayObserver } from "../metrics/metrics.ts";
import type { GatewayGrant, ModelGateway } from "./gateway.ts";
import { createUpstreamProxy, finishAborted, GatewayAbort, sendError } from "./proxy.ts";
import { createTokenRegistry } from "./registry.ts";
import { InvalidRequest, rewriteBody, type ForwardBody } from "./request.ts";

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
  /** Largest request body accepted, in bytes; default 8 MiB (OpenCode's requests are tens of KB; images add MBs). */
  maxBodyBytes?: number;
  /** Longest a request body may take to arrive before the gateway answers 408 and closes; default 30 s. */
  bodyTimeoutMs?: number;
  /** Requests one run token may have in flight at once (429 beyond); default 4. */
  maxInFlightPerToken?: number;
  /** Cap on a request's output tokens (`max_tokens` and the like are clamped to it); default 32000. */
  maxTokens?: number;
  /** OpenRouter app attribution headers; default referer `https://github.com/patchbay`, title `Patchbay`. */
  attribution?: { referer: string; title: string };
  /** Told each upstream answer's status and reported usage, by model (metrics). */
  observer?: GatewayObserver;
}

/** The message an agent surfaces when a run has no model key; kept stable for callers to match. */
export const NO_MODEL_KEY_MESSAGE =
  "no model key configured for this run (set OPENROUTER_API_KEY or use billing.mode openrouter)";

const DEFAULT_MAX_BODY = 8 * 1024 * 1024;
const DEFAULT_BODY_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_IN_FLIGHT = 4;
/** The output limit Patchbay declares to OpenCode for every model (agent/opencode-config.ts). */
const DEFAULT_MAX_TOKENS = 32_000;
/** Paths (after `/v1`) the gateway forwards, by method. */
const ROUTES: Record<string, ReadonlySet<string>> = {
  POST: new Set(["/chat/completions", "/completions", "/responses"]),
  GET: new Set(["/models"]),
};

/**
 * Start the model gateway on loopback. The agent is configured with an OpenAI-compatible
 * provider whose `baseURL` is `gateway.url` and whose API key is a token from `issueToken`.
 */
export async function createModelGateway(opts: ModelGatewayOptions): Promise<ModelGateway> {
  const log = (opts.log ?? silentLogger).child({ component: "gateway" });
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const bodyTimeoutMs = opts.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
  const maxTokens = opts.maxTokens ?? DEFAULT_MAX_TOKENS;
  const proxy = createUpstreamProxy({
    upstreamBaseUrl: opts.upstreamBaseUrl,
    attribution: opts.attribution ?? { referer: "https://github.com/patchbay", title: "Patchbay" },
  });

  const tokens = createTokenRegistry({ log, maxInFlight: opts.maxInFlightPerToken ?? DEFAULT_MAX_IN_FLIGHT });
  const sockets = new Set<Socket>();
  const allInFlight = new Set<AbortController>();

  const server = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      // The store does not answer (a lost database, logged once by the store): the agent is told to wait.
      if (isEngineError(e) && e.code === "storage_failed")
        return sendError(res, 503, e.message, "server_error", "storage_failed");
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
    const auth = await tokens.authorise(req.headers);
    if (!("token" in auth)) {
      req.resume();
      if (auth.status === 401) sendError(res, 401, auth.message, "authentication_error", "unauthorized");
      else sendError(res, 403, auth.message, "permission_error", "session_not_bound");
      return;
    }
    const { grant, revoked } = auth.token;
    const rlog = log.child({ runId: grant.runId, path: sub });
    const release = auth.token.acquire();
    if (!release) {
      // Each request may hold up to maxBody bytes while its body arrives: bound them per run.
      rlog.warn("gateway refused a request over the run's in-flight cap");
      res.setHeader("retry-after", "1");
      res.setHeader("connection", "close");
      return sendError(
        res,
        429,
        "too many model requests in flight for this run",
        "rate_limit_error",
        "too_many_requests",
      );
    }

    // Registered before any await, so a revoke or close during body read or key lookup stops us.
    const controller = new AbortController();
    const onRevoked = () => controller.abort(new GatewayAbort("revoked"));
    if (revoked.aborted) onRevoked();
    else revoked.addEventListener("abort", onRevoked);
    allInFlight.add(controller);
    const onClientGone = () => {
      if (!res.writableFinished) controller.abort(new GatewayAbort("client_gone"));
    };
    res.on("close", onClientGone);
    try {
      let body: ForwardBody | undefined;
      if (method === "POST") {
        const declared = Number(req.headers["content-length"]);
        const read =
          Number.isFinite(declared) && declared > maxBody
            ? "too_large"
            : await readBody(req, maxBody, bodyTimeoutMs, controller.signal);
        if (read === "too_large") return sendTooLarge(res, maxBody);
        if (read === "timeout") return sendTimeout(req, res, bodyTimeoutMs);
        try {
          body = rewriteBody(read, sub, maxTokens);
        } catch (e) {
          if (!(e instanceof InvalidRequest)) throw e;
          rlog.debug("gateway rejected a malformed body", { err: e });
          return sendError(res, 400, e.message, "invalid_request_error", "invalid_request");
        }
        if (body.dropped.length > 0)
          rlog.info("gateway dropped fields outside its allow-list", { fields: body.dropped });
        const model = body.model;
        if (grant.allowedModels.length > 0 && (model === undefined || !grant.allowedModels.includes(model))) {
          rlog.warn("gateway refused a model outside the run's grant", { model });
          const message = `model ${JSON.stringify(model ?? null)} is not allowed for this run`;
          return sendError(res, 403, message, "permission_error", "model_not_allowed");
        }
      }

      if (method === "POST" && grant.admit) {
        const refusal = await grant.admit();
        if (refusal) {
          rlog.info("gateway refused a model call over the run's budget");
          return sendError(res, 402, refusal, "insufficient_quota", "budget_exceeded");
        }
      }

      let key: string | undefined;
      try {
        key = await grant.upstreamKey();
      } catch (e) {
        // Key resolution failed (e.g. the stored key cannot be decrypted): the agent sees a
        // model error; the detail stays in our log, never in the response.
        rlog.error("gateway could not resolve the upstream key", { err: e });
        return sendError(res, 500, "could not resolve the model key for this run", "server_error", "no_model_key");
      }
      if (controller.signal.aborted) return finishAborted(res, controller.signal);
      if (!key) return sendError(res, 401, NO_MODEL_KEY_MESSAGE, "authentication_error", "no_model_key");
      log.redact(key);

      const status = await proxy.forward({
        path: sub,
        method,
        headers: req.headers,
        body,
        key,
        res,
        signal: controller.signal,
        grant: observed(grant, body?.model),
        log: rlog,
      });
      opts.observer?.upstream(body?.model, status);
      rlog.info("gateway request", { model: body?.model, stream: body?.stream, status, ms: Date.now() - started });
    } finally {
      release();
      res.off("close", onClientGone);
      revoked.removeEventListener("abort", onRevoked);
      allInFlight.delete(controller);
    }
  }

  /** The grant, with its usage also told to the observer under the request's model. */
  function observed(grant: GatewayGrant, model: string | undefined): GatewayGrant {
    const observer = opts.observer;
    if (!observer) return grant;
    return {
      ...grant,
      onUsage(usage) {
        grant.onUsage(usage);
        observer.usage(model, usage);
      },
    };
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
    issueToken: tokens.issueToken,
    restoreToken: tokens.restoreToken,
    revokeToken: tokens.revokeToken,
    issueSharedToken: tokens.issueSharedToken,
    bindSession: tokens.bindSession,
    unbindSession: tokens.unbindSession,
    async close() {
      for (const c of allInFlight) c.abort(new GatewayAbort("closing"));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      proxy.close();
      await closed;
    },
  };
}

/**
 * Read a request body up to `limit` bytes within `timeoutMs`: the body, or why not. A client
 * that declares a big body and stalls holds memory and a slot; the timeout frees both.
 */
function readBody(
  req: http.IncomingMessage,
  limit: number,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Buffer | "too_large" | "timeout"> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => {
      cleanup();
      chunks.length = 0;
      resolve("timeout");
    }, timeoutMs);
    const onAbort = () => {
      cleanup();
      reject(signal.reason instanceof Error ? signal.reason : new GatewayAbort("client_gone"));
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        cleanup();
        chunks.length = 0;
        // Stop buffering but drain the rest, so the 413 can still be written on this socket.
        req.resume();
        resolve("too_large");
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
      clearTimeout(timer);
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

function sendTimeout(req: http.IncomingMessage, res: http.ServerResponse, timeoutMs: number): void {
  res.setHeader("connection", "close");
  // The client is still (slowly) sending: once the answer is out, drop the socket.
  res.on("finish", () => req.socket.destroy());
  sendError(res, 408, `request body not received within ${timeoutMs} ms`, "invalid_request_error", "request_timeout");
}
