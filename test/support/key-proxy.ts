/**
 * An HTTP forwarder that adds `Authorization: Bearer <key>` to requests that carry none, for
 * clients that cannot send headers of their own (the MCP conformance suite). Everything else
 * passes through as sent, the Host and Origin headers included, and responses stream back
 * unbuffered (SSE).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface KeyProxy {
  /** `http://127.0.0.1:<port>`; append the target's path. */
  base: string;
  close(): Promise<void>;
}

/** Forward `127.0.0.1:<free port>` to `target` (an origin such as `http://127.0.0.1:8787`). */
export async function startKeyProxy(target: string, key: string): Promise<KeyProxy> {
  const upstream = new URL(target);
  const server = http.createServer((req, res) => {
    const headers = { ...req.headers };
    headers.authorization ??= `Bearer ${key}`;
    const out = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    out.on("error", () => res.destroy());
    res.on("close", () => out.destroy());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
