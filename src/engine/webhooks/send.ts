/**
 * One delivery attempt: the body signed per the Standard Webhooks specification (with the
 * `standardwebhooks` package: `webhook-id`, `webhook-timestamp`, `webhook-signature`) and
 * POSTed to the endpoint through the address check of target.ts, bounded by a timeout.
 * Redirects are not followed; only a 2xx answer counts as delivered.
 */
import http from "node:http";
import https from "node:https";
import { Webhook } from "standardwebhooks";
import { checkLiteralHost, guardedLookup, hostOf, type TargetPolicy } from "./target.ts";

export interface SendRequest {
  url: string;
  /** `whsec_…` */
  secret: string;
  /** The `webhook-id`: the same on every attempt of one message. */
  messageId: string;
  body: string;
  timeoutMs: number;
  policy: TargetPolicy;
  /** Aborts the attempt (shutdown); it is then not recorded. */
  signal?: AbortSignal;
  now?: () => Date;
}

export interface SendResult {
  ok: boolean;
  statusCode: number | null;
  latencyMs: number;
  error?: string;
}

/** How much of an answer is read before the connection is dropped: receivers are only heard by status. */
const MAX_ANSWER_BYTES = 64 * 1024;

export async function sendWebhook(req: SendRequest): Promise<SendResult> {
  const t0 = Date.now();
  const done = (statusCode: number | null, error?: string): SendResult => ({
    ok: statusCode !== null && statusCode >= 200 && statusCode < 300 && error === undefined,
    statusCode,
    latencyMs: Date.now() - t0,
    ...(error !== undefined ? { error } : {}),
  });
  let url: URL;
  try {
    url = new URL(req.url);
    checkLiteralHost(url, req.policy);
  } catch (e) {
    return done(null, errorText(e));
  }
  const at = (req.now ?? (() => new Date()))();
  const signature = new Webhook(req.secret).sign(req.messageId, at, req.body);
  const body = Buffer.from(req.body, "utf8");
  const client = url.protocol === "https:" ? https : http;
  return new Promise<SendResult>((resolve) => {
    let settled = false;
    const finish = (r: SendResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal?.removeEventListener("abort", onAbort);
      resolve(r);
    };
    const request = client.request(
      {
        method: "POST",
        protocol: url.protocol,
        host: hostOf(url),
        port: url.port || undefined,
        path: `${url.pathname}${url.search}`,
        headers: {
          "content-type": "application/json",
          "content-length": body.length,
          "user-agent": "Patchbay-Webhooks/1",
          "webhook-id": req.messageId,
          "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
          "webhook-signature": signature,
        },
        lookup: guardedLookup(req.policy),
        // One connection per attempt: an agent's pooled socket would skip the address check.
        agent: false,
      },
      (res) => {
        let read = 0;
        res.on("data", (chunk: Buffer) => {
          read += chunk.length;
          if (read > MAX_ANSWER_BYTES) res.destroy();
        });
        const status = res.statusCode ?? null;
        const verdict = () =>
          finish(done(status, status !== null && status >= 200 && status < 300 ? undefined : `HTTP ${status}`));
        res.on("end", verdict);
        res.on("close", verdict);
        res.on("error", verdict);
      },
    );
    const timer = setTimeout(() => {
      finish(done(null, `no answer within ${req.timeoutMs} ms`));
      request.destroy();
    }, req.timeoutMs);
    const onAbort = () => {
      finish(done(null, "aborted"));
      request.destroy();
    };
    req.signal?.addEventListener("abort", onAbort, { once: true });
    request.on("error", (e) => finish(done(null, errorText(e))));
    request.end(body);
  });
}

function errorText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const text = err instanceof Error ? (err.code ? `${err.code}: ${err.message}` : err.message) : String(e);
  return text.slice(0, 500);
}
