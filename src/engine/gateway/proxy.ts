/**
 * The forwarding half of the gateway: a request re-signed with the real upstream key goes to
 * the upstream (OpenRouter or any OpenAI-compatible server), and the answer streams back
 * unbuffered while it is metered. The key never reaches the client: only `content-type`,
 * `accept` and OpenCode's session ids are forwarded from the client, and every response (headers, error and success
 * bodies, JSON or SSE) is scrubbed of the key as it streams.
 */
import http from "node:http";
import https from "node:https";
import type { Logger } from "../log.ts";
import type { GatewayGrant } from "./gateway.ts";
import { meterFor, reportUsage } from "./metering.ts";
import { createKeyScrubber } from "./scrub.ts";

/** Error bodies are small; only their first MiB is passed on. */
const MAX_ERROR_BODY = 1024 * 1024;

/**
 * Request headers forwarded from the client; the rest (credentials, anything custom) stay here.
 * OpenCode's session ids are opaque and let a provider keep one conversation on one cache.
 */
const FORWARDED_REQUEST_HEADERS = ["content-type", "accept", "x-session-id", "x-session-affinity"] as const;
/** Upstream response headers that are never passed on: hop-by-hop ones (RFC 9110) and cookies. */
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
  "set-cookie",
]);

/** Why a gateway request stopped early: the run's token was revoked, the client left, or the gateway is closing. */
export class GatewayAbort extends Error {
  constructor(readonly reason: "revoked" | "client_gone" | "closing") {
    super(`gateway request aborted: ${reason}`);
    this.name = "GatewayAbort";
  }
}

/** OpenAI error shape, so the agent's SDK reports our refusals like any provider error. */
interface GatewayErrorBody {
  error: { message: string; type: string; code: string };
}

/** Answer with an OpenAI-shaped error, or cut the connection when the answer has begun. */
export function sendError(res: http.ServerResponse, status: number, message: string, type: string, code: string): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const body: GatewayErrorBody = { error: { message, type, code } };
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

/** After an abort: a revoked token is told so if nothing was sent yet; otherwise the connection is cut. */
export function finishAborted(res: http.ServerResponse, signal: AbortSignal): void {
  const reason = signal.reason instanceof GatewayAbort ? signal.reason.reason : "client_gone";
  if (reason !== "revoked" || res.headersSent) {
    res.destroy();
    return;
  }
  sendError(res, 401, "gateway token was revoked", "authentication_error", "unauthorized");
}

/** Options for {@link createUpstreamProxy}. */
export interface UpstreamProxyOptions {
  /** OpenAI-compatible base URL to forward to, ending in `/v1` or similar. */
  upstreamBaseUrl: string;
  /** OpenRouter app attribution headers sent with every request. */
  attribution: { referer: string; title: string };
}

/** One request to forward; the client has been authorised and its body read and rewritten. */
export interface ForwardRequest {
  /** Path under the upstream base (`/chat/completions`); the client's query string is never forwarded. */
  path: string;
  method: string;
  /** The client's headers: only FORWARDED_REQUEST_HEADERS of them go upstream. */
  headers: http.IncomingHttpHeaders;
  /** The body as pieces written in order (see rewriteBody), and its length. */
  body: { pieces: Buffer[]; length: number } | undefined;
  /** The real upstream key, swapped in for the client's token. */
  key: string;
  res: http.ServerResponse;
  /** Aborts the upstream request (revoke, client gone, closing); a {@link GatewayAbort} reason says why. */
  signal: AbortSignal;
  /** Where the response's usage is metered. */
  grant: GatewayGrant;
  log: Logger;
}

export interface UpstreamProxy {
  /** The upstream's origin, for log lines. */
  readonly origin: string;
  /** Send the request upstream and pipe the answer back; resolves with the status the client got. */
  forward(req: ForwardRequest): Promise<number>;
  /** Drop pooled upstream sockets. */
  close(): void;
}

export function createUpstreamProxy(opts: UpstreamProxyOptions): UpstreamProxy {
  const upstreamBase = new URL(opts.upstreamBaseUrl.replace(/\/+$/, "") + "/");
  const upstreamIsHttps = upstreamBase.protocol === "https:";
  if (!upstreamIsHttps && upstreamBase.protocol !== "http:") {
    throw new TypeError(`upstreamBaseUrl must be http(s), got ${upstreamBase.protocol}`);
  }
  const client = upstreamIsHttps ? https : http;
  // Our own keep-alive agent, so close() can drop pooled upstream sockets too.
  const agent = upstreamIsHttps ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });

  const forward = (a: ForwardRequest): Promise<number> => {
    const { res, signal, log } = a;
    const target = new URL(a.path.slice(1), upstreamBase);
    const headers = forwardHeaders(a.headers, a.key, opts.attribution, a.body?.length);
    return new Promise<number>((resolve) => {
      let settled = false;
      const done = (status: number) => {
        if (!settled) {
          settled = true;
          resolve(status);
        }
      };
      const up = client.request(target, { method: a.method, headers, agent, signal });
      up.on("error", (err: NodeJS.ErrnoException) => {
        if (signal.aborted) {
          finishAborted(res, signal);
          return done(res.statusCode);
        }
        // Only the error code is reported: messages can carry URLs or details we do not vet.
        const code = err.code ?? "unknown";
        log.warn("gateway upstream request failed", { code });
        if (!res.headersSent)
          sendError(res, 502, `model upstream unreachable (${code})`, "upstream_error", "bad_gateway");
        else res.destroy();
        done(502);
      });
      up.on("response", (upRes) => {
        const status = upRes.statusCode ?? 502;
        const outHeaders = responseHeaders(upRes.headers, a.key);
        const scrubber = createKeyScrubber(a.key);
        upRes.on("error", (err: NodeJS.ErrnoException) => {
          // Handled on "close" below; a listener is needed so the error cannot crash the process.
          if (!signal.aborted) log.warn("gateway upstream response broke off", { code: err.code });
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
            if (size <= MAX_ERROR_BODY) chunks.push(scrubber.push(c));
          });
          upRes.on("end", () => {
            chunks.push(scrubber.end());
            res.writeHead(status, outHeaders);
            res.end(Buffer.concat(chunks));
            log.warn("gateway upstream answered with an error", { status });
            done(status);
          });
          return;
        }

        res.writeHead(status, outHeaders);
        // Send headers now: the agent should see the response start before the first token.
        res.flushHeaders();
        const meter = meterFor(String(upRes.headers["content-type"] ?? ""));
        let broken = false;
        upRes.on("data", (c: Buffer) => {
          if (broken) return;
          // Write before metering: the client never waits on our parsing. A slow client
          // pauses the upstream rather than growing our memory.
          if (!res.write(scrubber.push(c))) {
            upRes.pause();
            res.once("drain", () => upRes.resume());
          }
          meter?.push(c);
          if (meter?.malformed) {
            // Cut the agent's response mid-stream: it sees a failed call (and retries, then
            // fails the turn with model_error) instead of an empty "complete" answer.
            broken = true;
            log.warn("gateway: the model sent a malformed event stream; cutting the response");
            res.destroy();
            upRes.destroy();
            done(502);
          }
        });
        upRes.on("end", () => {
          if (broken) return;
          res.end(scrubber.end());
          const usage = meter?.end();
          if (usage) reportUsage(a.grant, usage, log);
          done(status);
        });
      });
      for (const piece of a.body?.pieces ?? []) up.write(piece);
      up.end();
    });
  };

  return { origin: upstreamBase.origin, forward, close: () => agent.destroy() };
}

/** Headers for the upstream request: the few the client may set, plus ours. */
function forwardHeaders(
  incoming: http.IncomingHttpHeaders,
  key: string,
  attribution: { referer: string; title: string },
  bodyLength: number | undefined,
): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = incoming[name];
    if (typeof value === "string") out[name] = value;
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
    // content-length goes too: scrubbing may change the body's length.
    if (value === undefined || HOP_BY_HOP.has(lower) || lower === "content-length") continue;
    if ((Array.isArray(value) ? value.join(",") : String(value)).includes(key)) continue;
    out[lower] = value;
  }
  // Proxies between us and the agent (none by default) must not hold the stream back.
  out["x-accel-buffering"] = "no";
  return out;
}
