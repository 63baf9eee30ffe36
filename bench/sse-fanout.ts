/**
 * SSE fan-out: 1,000 concurrent subscribers on 10 runs whose agents emit 50 events/s each,
 * against 10 subscribers (one per run) on the same server in the same run. Reports p50/p99
 * delivery lag (event created in the engine -> frame parsed by the subscriber, across two
 * processes on one 2-core machine: the subscribers' own parsing is included) and server RSS.
 * The server is `bench/fanout-server.ts` in its own process; the subscribers live here.
 */
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { median, row, type BenchModule } from "./harness.ts";
import { benchTempDir } from "./support.ts";
import { startServerProcess, type ServerProcess } from "./server-process.ts";

const RUNS = 10;
const RATE = 50;
const API = "/api/v1/coding-agent";
const nowMs = () => performance.timeOrigin + performance.now();

interface Phase {
  lags: number[];
  /** Events each subscriber received. */
  received: number[];
  expected: number;
  peakRssMb: number;
  rssBeforeMb: number;
}

async function post(url: string, key: string, body: unknown): Promise<{ id: string }> {
  const res = await fetch(`${url}${API}/runs`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`POST /runs answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as { id: string };
}

/** Open an SSE subscription with its own connection; records the lag of every timestamped event. */
function subscribe(
  url: string,
  key: string,
  runId: string,
  lags: number[],
): { count: () => number; close: () => void } {
  let count = 0;
  let carry = "";
  const req = http.get(`${url}${API}/runs/${runId}/stream`, {
    agent: false,
    headers: { authorization: `Bearer ${key}` },
  });
  req.on("response", (res) => {
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      const at = nowMs();
      const text = carry + chunk;
      const cut = text.lastIndexOf("\n\n");
      carry = cut === -1 ? text : text.slice(cut + 2);
      // A regex, not JSON.parse: 1,000 subscribers parse 50,000 frames/s on the same 2 cores.
      for (const m of (cut === -1 ? "" : text.slice(0, cut)).matchAll(/"message":"t=([\d.]+)"/g)) {
        lags.push(at - Number(m[1]));
        count++;
      }
    });
    res.on("error", () => undefined); // closed by us at the end
  });
  req.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "ECONNRESET") throw e;
  });
  return { count: () => count, close: () => req.destroy() };
}

async function phase(server: ServerProcess, key: string, perRun: number, durationMs: number): Promise<Phase> {
  const lags: number[] = [];
  const rssBeforeMb = server.rssMb();
  // Time to create the runs and connect every subscriber before the first event.
  const start = nowMs() + 4000 + perRun * RUNS * 5;
  const runs = await Promise.all(
    Array.from({ length: RUNS }, () =>
      post(server.url, key, {
        repository: "acme/fanout",
        prompt: `emit ${start} ${durationMs} ${RATE}`,
        validationMode: "minimal",
      }),
    ),
  );
  const subs = runs.flatMap((r) => Array.from({ length: perRun }, () => subscribe(server.url, key, r.id, lags)));
  let peakRssMb = 0;
  const sampler = setInterval(() => (peakRssMb = Math.max(peakRssMb, server.rssMb())), 250);
  await new Promise((r) => setTimeout(r, start + durationMs + 2000 - nowMs()));
  clearInterval(sampler);
  for (const s of subs) s.close();
  return {
    lags,
    received: subs.map((s) => s.count()),
    expected: Math.floor(durationMs / (1000 / RATE)) + 1,
    peakRssMb,
    rssBeforeMb,
  };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
};

export const sseFanout: BenchModule = {
  name: "sse-fanout",
  async run() {
    const root = benchTempDir("fanout");
    const dataDir = path.join(root, "data");
    const server = await startServerProcess({
      env: {},
      script: ["--import", "tsx", "bench/fanout-server.ts", dataDir],
    });
    try {
      const key = /listening \S+ (pb_\S+)/.exec(server.output())![1]!;
      const few = await phase(server, key, 1, 5000);
      const many = await phase(server, key, 100, 10_000);
      const lost = (p: Phase) => p.received.filter((n) => n < p.expected).length;
      if (lost(few) || lost(many)) {
        throw new Error(
          `subscribers missed events: ${lost(few)} of ${few.received.length}, ${lost(many)} of ${many.received.length} (expected ${many.expected} each)`,
        );
      }
      return {
        name: "sse-fanout",
        rows: [
          row(
            `delivery lag p50, ${RUNS * 100} subscribers vs ${RUNS}`,
            median(few.lags),
            median(many.lags),
            "ms",
            `${RUNS} runs x ${RATE} events/s; ${many.lags.length.toLocaleString("en")} deliveries`,
          ),
          row(`delivery lag p99, ${RUNS * 100} subscribers vs ${RUNS}`, pct(few.lags, 99), pct(many.lags, 99), "ms"),
          row(`delivery lag max, ${RUNS * 100} subscribers vs ${RUNS}`, pct(few.lags, 100), pct(many.lags, 100), "ms"),
          row(
            `server peak RSS with ${RUNS * 100} subscribers vs before they connected`,
            many.rssBeforeMb,
            many.peakRssMb,
            "MB",
            `every subscriber got all ${many.expected} events`,
          ),
          row(`server peak RSS with ${RUNS} subscribers vs before`, few.rssBeforeMb, few.peakRssMb, "MB"),
        ],
      };
    } finally {
      await server.stop();
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};
