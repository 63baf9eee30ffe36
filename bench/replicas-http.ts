/**
 * Real `patchbay serve` replicas over HTTP, each phase on a fresh Postgres database, with
 * PATCHBAY_SANDBOX=local and PATCHBAY_SHARED_AGENT=1 (one OpenCode server per replica, each
 * run a session on it: what is measured is Patchbay's start path, not OpenCode's boot):
 *
 * - runs started per second, 1 replica vs 3, each on a fresh database: bursts of runs POSTed
 *   round-robin over the replicas' URLs (what a balancer without sticky sessions does) by
 *   CLIENTS clients, each posting its next as soon as its last was answered, timed from the
 *   first POST. Admission only (ADMISSIONS runs of a repository that does not exist: the last
 *   201, each run `running` with its turn begun, its clone failing right after; admission, the
 *   store, the lease), with one owner and with an owner per client (one owner's admissions
 *   are serialised across replicas by an advisory lock); then full runs (RUNS runs of the
 *   bench repository, to the last run's first agent request at the scripted model: clone,
 *   OpenCode session, prompt, gateway: the run is working).
 * - SSE latency across replicas: a run held by replica A gets TURNS follow-ups, each POSTed to
 *   A; its first event (the turn's `run.status`) is timed from the POST to its SSE frame on a
 *   client connected to A (same replica) and on one connected to B (A's append, its NOTIFY, B's
 *   relay reading it back, B's SSE write), p50/p99.
 *
 * Needs the local Postgres (PATCHBAY_BENCH_DATABASE_URL, default trust auth on 127.0.0.1).
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startScriptedModel, type ScriptedModel } from "../test/fixtures/scripted-model.ts";
import { pct, row, type BenchModule, type Row } from "./harness.ts";
import { startServerProcess, type ServerProcess } from "./server-process.ts";
import { benchDatabase, benchRepository, benchTempDir } from "./support.ts";

const API = "/api/v1/coding-agent";
const RUNS = 30;
const ADMISSIONS = 90;
const REPEATS = 3;
const CLIENTS = 6;
const TURNS = 150;
const MODEL = "bench/ok";

/** The machine's 1-minute load average (other agents share it): said with each measurement. */
const load = () => os.loadavg()[0]!.toFixed(1);

/** Replicas on a fresh database; `close` stops them and drops it. */
async function startReplicas(
  n: number,
  base: { root: string; gitBase: string; model: ScriptedModel },
): Promise<{ replicas: ServerProcess[]; key: string; close(): Promise<void> }> {
  const db = await benchDatabase();
  const url = db.url;
  const secretKey = randomBytes(32).toString("base64");
  const replicas: ServerProcess[] = [];
  const start = (i: number) =>
    startServerProcess({
      env: {
        PORT: "0",
        PATCHBAY_DATA_DIR: fs.mkdtempSync(path.join(base.root, `replica${i}-`)),
        PATCHBAY_DATABASE_URL: url,
        PATCHBAY_SECRET_KEY: secretKey,
        PATCHBAY_SANDBOX: "local",
        PATCHBAY_SHARED_AGENT: "1",
        PATCHBAY_MODELS: MODEL,
        PATCHBAY_DEFAULT_MODEL: MODEL,
        PATCHBAY_GIT_BASE_URL: base.gitBase,
        PATCHBAY_OPENROUTER_BASE_URL: base.model.baseUrl,
        OPENROUTER_API_KEY: "sk-bench",
        PATCHBAY_WARM_POOL_SIZE: "0",
        PATCHBAY_HIBERNATE_AFTER_MS: "0",
        PATCHBAY_RATE_LIMIT_PER_MIN: "1000000",
        PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "10000",
        PATCHBAY_LOG_LEVEL: "info",
      },
    });
  const close = async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    await db.drop();
  };
  try {
    // The first start on an empty database creates the admin key; the others find it.
    replicas.push(await start(0));
    const key = /^\s+(pb_[A-Za-z0-9_-]+)\s*$/m.exec(replicas[0]!.output())?.[1];
    if (!key) throw new Error("the first replica printed no admin key");
    replicas.push(...(await Promise.all(Array.from({ length: n - 1 }, (_, i) => start(i + 1)))));
    return { replicas, key, close };
  } catch (e) {
    await close();
    throw e;
  }
}

// Answers are read field by field; typing each would restate the response schemas.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Answer = { status: number; json: any };

async function call(base: string, key: string, method: string, p: string, body?: unknown): Promise<Answer> {
  const res = await fetch(base + p, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

/** Resolves when the model receives the first agent request whose prompt carries `marker`. */
function firstRequest(model: ScriptedModel, marker: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + 300_000;
    const look = () => {
      const req = model.agentRequests(MODEL).find((r) => r.lastUser.includes(marker));
      if (req) return resolve(req.at);
      if (Date.now() > deadline) return reject(new Error(`no model request for ${marker}`));
      setTimeout(look, 2);
    };
    look();
  });
}

interface Burst {
  /** Runs accepted per second: from the first POST to the last 201 (each run `running`, its turn begun). */
  accepted: number;
  /** Runs started per second: from the first POST to the last run's first model request (full bursts). */
  started: number;
  /** POST /runs latency, p50. */
  postP50: number;
}

/** The burst with the median acceptance rate. */
function medianBurst(bursts: Burst[]): Burst {
  return [...bursts].sort((a, b) => a.accepted - b.accepted)[bursts.length >> 1]!;
}

/** Keys of `n` owners (the admin's, then new owners'), for clients that are different tenants. */
async function ownerKeys(url: string, adminKey: string, n: number): Promise<string[]> {
  const keys = [adminKey];
  for (let c = 1; c < n; c++) {
    const made = await call(url, adminKey, "POST", "/api/v1/keys", {
      name: `client${c}`,
      scopes: ["read:builder", "write:builder"],
      ownerId: `own_bench_${randomBytes(4).toString("hex")}`,
    });
    if (made.status !== 201) throw new Error(`POST /api/v1/keys: ${made.status} ${JSON.stringify(made.json)}`);
    keys.push(made.json.key as string);
  }
  return keys;
}

/**
 * A burst of `runs` runs POSTed by CLIENTS clients (client c with `keys[c % keys.length]`),
 * round-robin over `replicas`. `full`: runs of the bench repository, timed to their first
 * model request; otherwise runs of a repository that does not exist, whose turn fails at its
 * clone right after it began: what is left is admission, the store and the replicas.
 */
async function burst(
  model: ScriptedModel,
  replicas: ServerProcess[],
  keys: string[],
  o: { runs: number; full: boolean },
): Promise<Burst> {
  const repository = o.full ? "acme/bench" : "acme/missing";
  const markers = Array.from({ length: o.runs }, (_, i) => `run-${randomBytes(4).toString("hex")}-${i}`);
  const firsts = o.full ? markers.map((m) => firstRequest(model, m)) : [];
  let next = 0;
  const latencies: number[] = [];
  const t0 = Date.now();
  let lastPost = t0;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      for (let i = next++; i < o.runs; i = next++) {
        const sent = Date.now();
        const posted = await call(replicas[i % replicas.length]!.url, keys[c % keys.length]!, "POST", `${API}/runs`, {
          repository,
          prompt: markers[i],
          validationMode: "minimal",
        });
        if (posted.status !== 201 || posted.json.status !== "running")
          throw new Error(`POST /runs: ${posted.status} ${JSON.stringify(posted.json)}`);
        lastPost = Date.now();
        latencies.push(lastPost - sent);
      }
    }),
  );
  const lastFirst = o.full ? Math.max(...(await Promise.all(firsts))) : Number.NaN;
  return {
    accepted: o.runs / ((lastPost - t0) / 1000),
    started: o.runs / ((lastFirst - t0) / 1000),
    postP50: pct(latencies, 0.5),
  };
}

/** One run on each replica to its first model request: each replica's shared OpenCode server started. */
async function warmUp(model: ScriptedModel, replicas: ServerProcess[], key: string): Promise<void> {
  await Promise.all(
    replicas.map(async (r, i) => {
      const marker = `warm-${randomBytes(4).toString("hex")}-${i}`;
      const posted = await call(r.url, key, "POST", `${API}/runs`, {
        repository: "acme/bench",
        prompt: marker,
        validationMode: "minimal",
      });
      if (posted.status !== 201) throw new Error(`POST /runs: ${posted.status} ${JSON.stringify(posted.json)}`);
      await firstRequest(model, marker);
    }),
  );
}

interface Frame {
  id: number;
  event: string;
  data: string;
  at: number;
}

/** An SSE client: frames with their arrival time (performance.now()). */
function sseClient(url: string, key: string, after: number): { frames: Frame[]; stop(): void } {
  const frames: Frame[] = [];
  const ac = new AbortController();
  void (async () => {
    const res = await fetch(url, {
      headers: { authorization: `Bearer ${key}`, "last-event-id": String(after) },
      signal: ac.signal,
    });
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const at = performance.now();
      buf += dec.decode(value, { stream: true });
      let cut: number;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const field = (f: string) => new RegExp(`^${f}: ?(.*)$`, "m").exec(block)?.[1];
        const id = field("id");
        if (id !== undefined)
          frames.push({ id: Number(id), event: field("event") ?? "", data: field("data") ?? "", at });
      }
    }
  })().catch((e: unknown) => {
    if (!ac.signal.aborted) throw e;
  });
  return { frames, stop: () => ac.abort() };
}

async function until<T>(what: string, fn: () => T | undefined): Promise<T> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** POST a follow-up to A; ms until its first event's frame on a client of A and on a client of B. */
async function sseLatency(
  a: ServerProcess,
  b: ServerProcess,
  key: string,
): Promise<{ same: number[]; cross: number[] }> {
  const started = await call(a.url, key, "POST", `${API}/runs`, {
    repository: "acme/bench",
    prompt: "first",
    validationMode: "minimal",
  });
  const id = started.json.id as string;
  const idleAfter = async () => {
    for (;;) {
      const run = (await call(a.url, key, "GET", `${API}/runs/${id}?events=1`)).json;
      if (run.status === "idle") return (run.events as { id: number }[]).at(-1)!.id;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const last = await idleAfter();
  const onA = sseClient(`${a.url}${API}/runs/${id}/stream`, key, last);
  const onB = sseClient(`${b.url}${API}/runs/${id}/stream`, key, last);
  const same: number[] = [];
  const cross: number[] = [];
  try {
    let seen = last;
    for (let turn = 0; turn < TURNS; turn++) {
      const t0 = performance.now();
      const sent = await call(a.url, key, "POST", `${API}/runs/${id}/messages`, { prompt: `again ${turn}` });
      if (sent.status !== 202) throw new Error(`message: ${sent.status} ${JSON.stringify(sent.json)}`);
      const first = seen + 1;
      const atA = await until("the frame on A", () => onA.frames.find((f) => f.id === first)?.at);
      const atB = await until("the frame on B", () => onB.frames.find((f) => f.id === first)?.at);
      same.push(atA - t0);
      cross.push(atB - t0);
      // The turn's end, on both, before the next follow-up.
      const idle = await until("the turn's end on A", () =>
        onA.frames.find((f) => f.id > first && f.event === "run.status" && /"status":"idle"/.test(f.data)),
      );
      await until("the turn's end on B", () => onB.frames.find((f) => f.id === idle.id));
      seen = idle.id;
    }
  } finally {
    onA.stop();
    onB.stop();
  }
  return { same, cross };
}

export const replicasHttp: BenchModule = {
  name: "replicas-http",
  async run() {
    const root = benchTempDir("replicas-http");
    const gitBase = benchRepository(path.join(root, "repos"), "acme/bench", 20);
    const model = await startScriptedModel({ scripts: { [MODEL]: [[{ text: "ok" }]] } });
    const rows: Row[] = [];
    try {
      // Per replica count, on a fresh database: bursts of admission only (one owner, then an
      // owner per client), then a full burst.
      const results = new Map<number, { one: Burst; many: Burst; full: Burst; load: string }>();
      for (const n of [1, 3]) {
        const set = await startReplicas(n, { root, gitBase, model });
        try {
          await warmUp(model, set.replicas, set.key);
          // Untimed: each replica's database pool filled and its request path compiled, as in a
          // server that has been up a while (cold, 3 replicas pay it three times over).
          await burst(model, set.replicas, [set.key], { runs: ADMISSIONS, full: false });
          const before = load();
          const keys = await ownerKeys(set.replicas[0]!.url, set.key, CLIENTS);
          // Admission bursts are short: the median of REPEATS, alternating, evens out a neighbour's spike.
          const ones: Burst[] = [];
          const manys: Burst[] = [];
          for (let k = 0; k < REPEATS; k++) {
            ones.push(await burst(model, set.replicas, [set.key], { runs: ADMISSIONS, full: false }));
            manys.push(await burst(model, set.replicas, keys, { runs: ADMISSIONS, full: false }));
          }
          const one = medianBurst(ones);
          const many = medianBurst(manys);
          const full = await burst(model, set.replicas, [set.key], { runs: RUNS, full: true });
          results.set(n, { one, many, full, load: `${n} replica(s): load ${before} → ${load()}` });
        } finally {
          await set.close();
        }
      }
      const r1 = results.get(1)!;
      const r3 = results.get(3)!;
      const base = "baseline 1 replica, value 3";
      rows.push(
        row(
          "runs accepted per second, admission only, one owner",
          r1.one.accepted,
          r3.one.accepted,
          "runs/s",
          `${base}; ${ADMISSIONS} runs from ${CLIENTS} clients whose clone fails right after the turn began, median of ${REPEATS}; ${r1.load}, ${r3.load}`,
        ),
      );
      rows.push(row("POST /runs p50, admission only, one owner", r1.one.postP50, r3.one.postP50, "ms", base));
      rows.push(
        row(
          "runs accepted per second, admission only, an owner per client",
          r1.many.accepted,
          r3.many.accepted,
          "runs/s",
          `${base}; one owner's admissions wait for each other across replicas (its advisory lock)`,
        ),
      );
      rows.push(
        row(
          "runs started per second (to the model's first request)",
          r1.full.started,
          r3.full.started,
          "runs/s",
          `${base}; ${RUNS} runs from ${CLIENTS} clients, one owner: clone, OpenCode session (one shared server per replica), prompt`,
        ),
      );
      rows.push(row("POST /runs p50, full runs", r1.full.postP50, r3.full.postP50, "ms", base));

      const set = await startReplicas(2, { root, gitBase, model });
      try {
        const before = load();
        const { same, cross } = await sseLatency(set.replicas[0]!, set.replicas[1]!, set.key);
        const behind = cross.map((c, i) => c - same[i]!);
        const note = `${TURNS} follow-ups POSTed to A; to the turn's first SSE frame; B's frame after A's p50 ${pct(behind, 0.5).toFixed(1)} ms, p99 ${pct(behind, 0.99).toFixed(1)} ms; load ${before} → ${load()}`;
        rows.push(
          row(
            "SSE event latency p50",
            pct(same, 0.5),
            pct(cross, 0.5),
            "ms",
            `baseline client on A, value client on B; ${note}`,
          ),
        );
        rows.push(
          row(
            "SSE event latency p99",
            pct(same, 0.99),
            pct(cross, 0.99),
            "ms",
            "baseline client on A, value client on B",
          ),
        );
      } finally {
        await set.close();
      }
    } finally {
      await model.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
    return { name: "replicas-http", rows };
  },
};
