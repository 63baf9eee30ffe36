/**
 * A TCP forwarder a test can cut: every connection through it is destroyed on `cut()`, as a
 * dropped network would, while new connections still go through unless the cut refuses them
 * too (a lost database: every new connection reset at once) until `restore()`. It also counts
 * the connections whose request named a `Last-Event-ID` (a resuming SSE client) and those it
 * refused.
 */
import net from "node:net";

export interface CutProxy {
  /** `http://127.0.0.1:<port>`: the target's origin, through the proxy. */
  base: string;
  port: number;
  /** Destroy every open connection (both sides); with `refuse`, reset every new one until `restore()`. */
  cut(opts?: { refuse?: boolean }): void;
  /** Let new connections through again after a refusing cut. */
  restore(): void;
  /** Connections so far whose first bytes carried a `Last-Event-ID` header. */
  resumes(): number;
  /** Connections reset so far because a cut refused them. */
  refused(): number;
  close(): Promise<void>;
}

export async function startCutProxy(target: { host: string; port: number }): Promise<CutProxy> {
  const open = new Set<net.Socket>();
  let resumes = 0;
  let refusing = false;
  let refused = 0;
  const server = net.createServer((client) => {
    if (refusing) {
      refused += 1;
      client.on("error", () => undefined);
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      open.add(s);
      s.once("close", () => open.delete(s));
      // A cut socket errors on its peer (ECONNRESET): expected here.
      s.on("error", () => undefined);
    }
    client.once("data", (first: Buffer) => {
      if (/\r\nlast-event-id:/i.test(first.toString("latin1"))) resumes += 1;
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.once("close", () => upstream.destroy());
    upstream.once("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    cut(opts = {}) {
      if (opts.refuse) refusing = true;
      for (const s of open) s.destroy();
    },
    restore() {
      refusing = false;
    },
    resumes: () => resumes,
    refused: () => refused,
    close() {
      for (const s of open) s.destroy();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
