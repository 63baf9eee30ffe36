/**
 * Gateway abuse (issue 12, finding 3): an agent's token sends 20 requests that declare 32 MB
 * bodies, send 4 MB and stall, while two loops post valid 30 MB JSON bodies. Reports the
 * gateway process's peak RSS under that attack against its idle RSS, and the latency of
 * `/healthz` on the same event loop and of another run's small model request, attack vs idle.
 * Run twice: with Patchbay's limits (defaults), and with them lifted (the old 32 MiB cap, no
 * in-flight cap, no body timeout). BENCH_GATEWAY_MODULE=<path to server.ts> measures another
 * checkout's gateway (e.g. main before the fix) in place of the lifted one.
 */
import http from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { median, row, type BenchModule, type Row } from "./harness.ts";
import { startServerProcess } from "./server-process.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const STALLED = 20;
const STALLED_DECLARED = 32 * 1024 * 1024;
const STALLED_SENT = 4 * 1024 * 1024;
const BIG_BODY_LOOPS = 2;
const SAMPLES = 40;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!;

/** An OpenAI-compatible upstream that discards what it is sent and answers a tiny completion. */
async function startSink(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        '{"choices":[{"message":{"role":"assistant","content":"ok"}}],"usage":{"prompt_tokens":1,"completion_tokens":1}}',
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    close: () => {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** POST a body and answer the status (0 when the connection broke). */
function post(url: string, token: string, body: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request(url, {
      method: "POST",
      agent: false,
      headers: { "content-type": "application/json", authorization: `Bearer ${token}`, "content-length": body.length },
    });
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
      res.on("error", () => resolve(0));
    });
    req.on("error", () => resolve(0));
    req.end(body);
  });
}

/** Declare a 32 MB body, send 4 MB of it, and stall until closed; records the status if any. */
function stall(gatewayUrl: string, token: string, statuses: number[]): net.Socket {
  const u = new URL(`${gatewayUrl}/chat/completions`);
  const socket = net.connect(Number(u.port), u.hostname, () => {
    socket.write(
      `POST ${u.pathname} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n` +
        `authorization: Bearer ${token}\r\ncontent-length: ${STALLED_DECLARED}\r\n\r\n{"model":"m","messages":[{"role":"user","content":"`,
    );
    socket.write(Buffer.alloc(STALLED_SENT, 0x78));
  });
  let seen = false;
  socket.on("data", (d: Buffer) => {
    const m = /^HTTP\/1\.1 (\d{3})/.exec(d.toString("latin1"));
    if (m && !seen) {
      seen = true;
      statuses.push(Number(m[1]));
    }
  });
  socket.on("error", () => {});
  return socket;
}

async function latencies(
  healthUrl: string,
  gatewayUrl: string,
  token: string,
): Promise<{ health: number[]; chat: number[] }> {
  const small = Buffer.from(JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }));
  const health: number[] = [];
  const chat: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    let t = performance.now();
    await (await fetch(healthUrl)).text();
    health.push(performance.now() - t);
    t = performance.now();
    const status = await post(`${gatewayUrl}/chat/completions`, token, small);
    if (status !== 200) throw new Error(`the other run's request answered ${status}`);
    chat.push(performance.now() - t);
    await sleep(20);
  }
  return { health, chat };
}

async function scenario(label: string, upstream: string, modulePath: string, limits: object): Promise<Row[]> {
  const server = await startServerProcess({
    env: {},
    script: ["--import", "tsx", "bench/gateway-abuse-server.ts", upstream, modulePath, JSON.stringify(limits)],
    startTimeoutMs: 60_000,
  });
  try {
    const m = /listening (\S+) (\S+) (\S+) (\S+)/.exec(server.output())!;
    const [, healthUrl, gatewayUrl, attacker, other] = m as unknown as [string, string, string, string, string];
    await latencies(healthUrl, gatewayUrl, other); // warm-up
    await sleep(500);
    const idleRss = server.rssMb();
    const idle = await latencies(healthUrl, gatewayUrl, other);

    let peak = server.rssMb();
    const sampler = setInterval(() => (peak = Math.max(peak, server.rssMb())), 25);
    const stalledStatuses: number[] = [];
    const sockets = Array.from({ length: STALLED }, () => stall(gatewayUrl, attacker, stalledStatuses));
    const big = Buffer.from(
      JSON.stringify({ model: "m", messages: [{ role: "user", content: "y".repeat(30 * 1024 * 1024) }] }),
    );
    const bigStatuses: number[] = [];
    let attacking = true;
    const loops = Array.from({ length: BIG_BODY_LOOPS }, async () => {
      while (attacking) bigStatuses.push(await post(`${gatewayUrl}/chat/completions`, attacker, big));
    });
    await sleep(1500);
    const attack = await latencies(healthUrl, gatewayUrl, other);
    attacking = false;
    await Promise.all(loops);
    clearInterval(sampler);
    for (const s of sockets) s.destroy();

    const count = (xs: number[]) =>
      Object.entries(xs.reduce<Record<number, number>>((a, s) => ({ ...a, [s]: (a[s] ?? 0) + 1 }), {}))
        .map(([s, n]) => `${n}x${s === "0" ? "cut" : s}`)
        .join(" ");
    return [
      row(
        `${label}: gateway peak RSS under attack vs idle`,
        idleRss,
        peak,
        "MB",
        `20 stalled: ${count(stalledStatuses) || "no status read (refused and reset, or still held)"}; 30 MB bodies: ${count(bigStatuses)}`,
      ),
      row(`${label}: /healthz p50, attack vs idle`, median(idle.health), median(attack.health), "ms"),
      row(`${label}: /healthz p99, attack vs idle`, p99(idle.health), p99(attack.health), "ms"),
      row(`${label}: other run's model request p50, attack vs idle`, median(idle.chat), median(attack.chat), "ms"),
      row(`${label}: other run's model request p99, attack vs idle`, p99(idle.chat), p99(attack.chat), "ms"),
    ];
  } finally {
    await server.stop();
  }
}

export const gatewayAbuse: BenchModule = {
  name: "gateway-abuse",
  async run() {
    const sink = await startSink();
    const ours = path.join(ROOT, "src/engine/gateway/server.ts");
    try {
      const rows = await scenario("limits on (defaults)", sink.url, ours, {});
      const other = process.env.BENCH_GATEWAY_MODULE;
      rows.push(
        ...(other
          ? await scenario(`gateway of ${path.relative(ROOT, other)}`, sink.url, path.resolve(other), {})
          : await scenario("limits lifted (32 MiB cap, no in-flight cap, no body timeout)", sink.url, ours, {
              maxBodyBytes: 32 * 1024 * 1024,
              maxInFlightPerToken: 1_000_000,
              bodyTimeoutMs: 3_600_000,
            })),
      );
      return { name: "gateway-abuse", rows };
    } finally {
      await sink.close();
    }
  },
};
