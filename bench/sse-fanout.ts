/**
 * SSE fan-out: 1,000 concurrent subscribers on 10 runs whose agents are asked to emit 50
 * events/s each, against 10 subscribers (one per run) on the same server in the same run.
 * Reports p50/p99 delivery lag (event created in the engine -> frame parsed by the subscriber,
 * across two processes on one 2-core machine: the subscribers' own parsing is included), the
 * rate the emitters achieved next to the rate asked for (a slow machine emits late), what each
 * subscriber got against what its run's event log stored (lost, duplicated), and server RSS.
 * The server is `bench/fanout-server.ts` in its own process; the subscribers live here.
 */
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { median, row, type BenchModule, type Row } from "./harness.ts";
import { benchTempDir } from "./support.ts";
import { startServerProcess, type ServerProcess } from "./server-process.ts";

const RUNS = 10;
const RATE = 50;
const API = "/api/v1/coding-agent";
/** After the runs end, a subscriber whose stream delivers nothing for this long has stalled; what it lacks is lost. */
const STALL_MS = 60_000;
/** How long a run may take to emit what it was asked to (a loaded machine emits late, not less). */
const TURN_DEADLINE_MS = 600_000;
const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Subscriber {
  runId: string;
  /** Distinct events received, in order. */
  received: number;
  /** Events received again, or out of order (an older timestamp after a newer one). */
  duplicated: number;
  /** Connected after the run's first event: those it got by replay are not counted as lag. */
  late: boolean;
  /** The HTTP status when the server refused the stream (e.g. 429 too_many_streams). */
  refused?: number;
  /** Resolves when the stream ended (the server closes it after the run's terminal status). */
  ended: Promise<void>;
  close(): void;
}

interface Phase {
  lags: number[];
  subs: Subscriber[];
  runIds: string[];
  /** Per run, the timestamps of the events its log stored. */
  stored: number[][];
  /** Events each run was asked for, and over how long. */
  offered: number;
  durationMs: number;
  peakRssMb: number;
  rssBeforeMb: number;
}

interface Delivery {
  /** Deliveries the subscribers should have had: each its run's stored events. */
  expected: number;
  lost: number;
  duplicated: number;
}

async function call(url: string, key: string, method: string, p: string, body?: unknown): Promise<Response> {
  return fetch(`${url}${API}${p}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
}

async function post(url: string, key: string, body: unknown): Promise<{ id: string }> {
  const res = await call(url, key, "POST", "/runs", body);
  if (res.status !== 201) throw new Error(`POST /runs answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as { id: string };
}

/** Wait until the run's turn is over (the emitter has emitted everything), then end its session. */
async function finish(url: string, key: string, runId: string): Promise<void> {
  const deadline = Date.now() + TURN_DEADLINE_MS;
  for (;;) {
    const { status } = (await (await call(url, key, "GET", `/runs/${runId}`)).json()) as { status: string };
    if (status === "idle") break;
    if (status !== "running" && status !== "queued") throw new Error(`run ${runId} ended ${status}`);
    if (Date.now() > deadline) throw new Error(`run ${runId} still ${status} after ${TURN_DEADLINE_MS} ms`);
    await sleep(200);
  }
  const res = await call(url, key, "POST", `/runs/${runId}/messages`, { endSession: true });
  if (res.status !== 200) throw new Error(`endSession answered ${res.status}: ${await res.text()}`);
}

/**
 * Open an SSE subscription with its own connection; counts the timestamped events and records
 * the lag of every one created after it connected. `onTimestamp` sees every one (for the
 * stored-log reader).
 */
function subscribe(
  url: string,
  key: string,
  runId: string,
  lags: number[] | undefined,
  firstEventAt: number,
  onTimestamp?: (t: number) => void,
): Subscriber {
  let carry = "";
  let last = -Infinity;
  let connectedAt = Infinity;
  const sub: Subscriber = { runId, received: 0, duplicated: 0, late: false, ended: Promise.resolve(), close: () => {} };
  const req = http.get(`${url}${API}/runs/${runId}/stream`, {
    agent: false,
    headers: { authorization: `Bearer ${key}` },
  });
  sub.ended = new Promise<void>((resolve) => {
    req.on("response", (res) => {
      if (res.statusCode !== 200) sub.refused = res.statusCode;
      connectedAt = nowMs();
      sub.late = connectedAt > firstEventAt;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        const at = nowMs();
        const text = carry + chunk;
        const cut = text.lastIndexOf("\n\n");
        carry = cut === -1 ? text : text.slice(cut + 2);
        // A regex, not JSON.parse: 1,000 subscribers parse 50,000 frames/s on the same 2 cores.
        for (const m of (cut === -1 ? "" : text.slice(0, cut)).matchAll(/"message":"t=([\d.]+)"/g)) {
          const t = Number(m[1]);
          onTimestamp?.(t);
          // One run's events are created in order, each with a later timestamp.
          if (t <= last) {
            sub.duplicated++;
            continue;
          }
          last = t;
          sub.received++;
          if (lags && t >= connectedAt) lags.push(at - t);
        }
      });
      res.on("end", () => resolve());
      res.on("error", () => resolve()); // closed by us after a stall
    });
    req.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code !== "ECONNRESET") throw e;
      resolve();
    });
  });
  sub.close = () => req.destroy();
  return sub;
}

/** The timestamps of the events a finished run's log holds: its stream replays them and closes. */
async function storedLog(url: string, key: string, runId: string): Promise<number[]> {
  const ts: number[] = [];
  const reader = subscribe(url, key, runId, undefined, 0, (t) => ts.push(t));
  await reader.ended;
  return ts;
}

async function phase(server: ServerProcess, key: string, perRun: number, durationMs: number): Promise<Phase> {
  const lags: number[] = [];
  const rssBeforeMb = server.rssMb();
  // Time to create the runs and connect every subscriber before the first event (a subscriber
  // that connects later gets the first events by replay, counted but not timed).
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
  const subs = runs.flatMap((r) => Array.from({ length: perRun }, () => subscribe(server.url, key, r.id, lags, start)));
  let peakRssMb = 0;
  const sampler = setInterval(() => (peakRssMb = Math.max(peakRssMb, server.rssMb())), 250);
  try {
    await sleep(start + durationMs - nowMs());
    // Each run ends when its emitter is done, however late; its subscribers' streams then close.
    await Promise.all(runs.map((r) => finish(server.url, key, r.id)));
    // Streams may still be delivering a backlog (the subscribers here parse on the same loaded
    // cores): wait while any makes progress; one that ends or stalls short of its log lost events.
    let total = -1;
    let lastProgress = Date.now();
    let open = subs.length;
    for (const s of subs) void s.ended.then(() => open--);
    while (open > 0 && Date.now() - lastProgress < STALL_MS) {
      const now = subs.reduce((n, s) => n + s.received + s.duplicated, 0);
      if (now !== total) [total, lastProgress] = [now, Date.now()];
      await sleep(1000);
    }
  } finally {
    clearInterval(sampler);
    for (const s of subs) s.close();
  }
  return {
    lags,
    subs,
    runIds: runs.map((r) => r.id),
    stored: await Promise.all(runs.map((r) => storedLog(server.url, key, r.id))),
    offered: Math.floor(durationMs / (1000 / RATE)) + 1,
    durationMs,
    peakRssMb,
    rssBeforeMb,
  };
}

/** Compare what each subscriber got with what its run's log stored. */
function delivery(p: Phase): Delivery {
  const storedOf = new Map(p.runIds.map((id, i) => [id, p.stored[i]!.length]));
  let expected = 0;
  let lost = 0;
  let duplicated = 0;
  for (const s of p.subs) {
    const stored = storedOf.get(s.runId)!;
    expected += stored;
    lost += Math.max(0, stored - s.received);
    // More distinct events than the log holds would be events that were never stored.
    duplicated += s.duplicated + Math.max(0, s.received - stored);
  }
  return { expected, lost, duplicated };
}

/** Events per second each run's emitter achieved, from its stored timestamps. */
function achievedRates(p: Phase): number[] {
  return p.stored.map((ts) => (ts.length < 2 ? 0 : ((ts.length - 1) / (ts.at(-1)! - ts[0]!)) * 1000));
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
      const rows: Row[] = [];
      const rateRow = (label: string, p: Phase) => {
        const rates = achievedRates(p);
        const slowest = Math.min(...rates);
        const stored = p.stored.map((ts) => ts.length);
        rows.push(
          row(
            `emit rate per run, achieved (slowest run) vs offered, ${label}`,
            RATE,
            slowest,
            "events/s",
            `runs stored ${[...new Set([Math.min(...stored), Math.max(...stored)])].join("-")} events each, ${p.offered} offered over ${p.durationMs / 1000} s` +
              (slowest < RATE * 0.95 ? "; the emitter could not keep the offered rate on this machine" : ""),
          ),
        );
      };
      const lossRows = (label: string, p: Phase, d: Delivery) =>
        rows.push(
          row(
            `deliveries lost, ${label}`,
            d.expected,
            d.lost,
            "events",
            `baseline: the runs' stored events x their subscribers; ${d.duplicated} duplicated`,
          ),
        );
      const dFew = delivery(few);
      const dMany = delivery(many);
      const late = many.subs.filter((s) => s.late).length;
      rows.push(
        row(
          `delivery lag p50, ${RUNS * 100} subscribers vs ${RUNS}`,
          median(few.lags),
          median(many.lags),
          "ms",
          `${RUNS} runs x ${RATE} events/s offered; ${many.lags.length.toLocaleString("en")} live deliveries timed` +
            (late ? `; ${late} subscribers connected after the first event (replayed events not timed)` : ""),
        ),
        row(`delivery lag p99, ${RUNS * 100} subscribers vs ${RUNS}`, pct(few.lags, 99), pct(many.lags, 99), "ms"),
        row(`delivery lag max, ${RUNS * 100} subscribers vs ${RUNS}`, pct(few.lags, 100), pct(many.lags, 100), "ms"),
      );
      rateRow(`${RUNS * 100} subscribers`, many);
      rateRow(`${RUNS} subscribers`, few);
      lossRows(`${RUNS * 100} subscribers`, many, dMany);
      lossRows(`${RUNS} subscribers`, few, dFew);
      rows.push(
        row(
          `server peak RSS with ${RUNS * 100} subscribers vs before they connected`,
          many.rssBeforeMb,
          many.peakRssMb,
          "MB",
        ),
        row(`server peak RSS with ${RUNS} subscribers vs before`, few.rssBeforeMb, few.peakRssMb, "MB"),
      );
      // Only a real fault of the server fails the module: an event a run stored that a subscriber
      // never got, or got twice. A slow emitter is reported above.
      if (dFew.lost + dFew.duplicated + dMany.lost + dMany.duplicated > 0) {
        const refused = [...few.subs, ...many.subs].filter((sub) => sub.refused !== undefined);
        throw new Error(
          (refused.length
            ? `${refused.length} streams refused (HTTP ${[...new Set(refused.map((r) => r.refused))].join(", ")}); `
            : "") +
            `SSE delivery fault: ${RUNS} subscribers lost ${dFew.lost} and duplicated ${dFew.duplicated} of ${dFew.expected}; ` +
            `${RUNS * 100} subscribers lost ${dMany.lost} and duplicated ${dMany.duplicated} of ${dMany.expected}`,
        );
      }
      return { name: "sse-fanout", rows };
    } finally {
      await server.stop();
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};
