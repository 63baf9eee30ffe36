/**
 * Node's request and response to and from the Web standard ones the SDK's
 * `WebStandardStreamableHTTPServerTransport` speaks. The SDK's Node transport does the same
 * through @hono/node-server; Patchbay uses the Web standard transport directly because it
 * also hands it requests that come from no socket: the `initialize` a session is revived with
 * after a restart (`http.ts`).
 */
import type { IncomingMessage, ServerResponse } from "node:http";

/** A Request with the method, URL and headers of `req`; the body is passed parsed beside it. */
export function toWebRequest(req: IncomingMessage): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  const url = new URL(req.url ?? "/", `http://${req.headers.host ?? "localhost"}`);
  return new Request(url, { method: req.method ?? "GET", headers });
}

/**
 * Write `response` to `res`, streaming its body as it comes (SSE); when the client goes away
 * the body is cancelled, which is how the transport learns a stream was cut.
 */
export async function sendWebResponse(response: Response, res: ServerResponse): Promise<void> {
  res.statusCode = response.status;
  response.headers.forEach((value, name) => res.setHeader(name, value));
  if (!response.body) {
    res.end();
    return;
  }
  res.flushHeaders();
  const reader = response.body.getReader();
  const cancel = () => void reader.cancel().catch(() => undefined);
  res.once("close", cancel);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!res.write(value)) await new Promise<void>((r) => res.once("drain", r).once("close", r));
      if (res.destroyed) break;
    }
  } catch {
    // Cancelled: the client is gone.
  } finally {
    res.off("close", cancel);
    if (res.destroyed) cancel();
    else res.end();
  }
}
