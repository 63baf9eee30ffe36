/**
 * Three real `patchbay serve` replicas on one Postgres database, behind a round-robin proxy
 * with no sticky sessions: the REST flow with follow-ups handed to the replica that holds the
 * session, SSE resumed on another replica with Last-Event-ID, an MCP call's stream cut off from
 * one replica and resumed on another, Idempotency-Key and the request rate held across
 * replicas, runs placed by capacity, a replica stopped (SIGSTOP) past its lease while running
 * a turn (its run taken over, and fenced off from it once it wakes), and kill -9 of the
 * replica running a turn (its run settled by another, no event lost or repeated).
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers.ts";
import type { RoundRobin } from "../fixtures/round-robin.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { parseSse } from "../support/http.ts";
import { pollHttp, pollUntilTurnOver } from "../support/poll.ts";
import type { TestDatabase } from "../support/postgres.ts";
import { API, follow, opencodeUnder, type ServeChild } from "../support/serve.ts";
import { startCluster, type Cluster } from "./cluster.ts";

let fx: Fixtures;
let cluster: Cluster;
let db: TestDatabase;
let lb: RoundRobin;
let replicas: ServeChild[];
let dataDirs: string[];
let key: string;

const RATE_LIMIT = 400;
const body = (modelId: string, prompt = "write notes") => ({
  repository: "acme/web",
  prompt,
  modelId,
  validationMode: "minimal",
});

/** Through the proxy: each call may land on any replica. */
const viaLb: Cluster["viaLb"] = (method, p, o) => cluster.viaLb(method, p, o);
const leaseOf = (runId: string) => cluster.leaseOf(runId);
/** The replica (index) whose lease the run is on. */
const replicaIndexOf = (runId: string) => cluster.replicaIndexOf(runId);

/**
 * An MCP client whose requests all go to replica `a` and whose resumes (GET with Last-Event-ID)
 * go to `b`, once `resumesWait` settles; `cut()` drops the connection of its last tool call.
 */
async function splitMcpClient(a: ServeChild, b: ServeChild, resumesWait: Promise<void> = Promise.resolve()) {
  let call: AbortController | undefined;
  const resumes: { url: string; status: number }[] = [];
  const routed: FetchLike = async (url, init) => {
    const resuming = init?.method === "GET" && new Headers(init.headers).has("last-event-id");
    const target = new URL(new URL(url).pathname, resuming ? b.url : a.url);
    const own = new AbortController();
    init?.signal?.addEventListener("abort", () => own.abort());
    if (typeof init?.body === "string" && init.body.includes('"tools/call"')) call = own;
    if (resuming) await resumesWait;
    const res = await fetch(target, { ...init, signal: own.signal });
    if (resuming) resumes.push({ url: target.origin, status: res.status });
    return res;
  };
  const client = new Client({ name: "replicas-resume", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(`${lb.url}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
    fetch: routed,
  });
  await client.connect(transport);
  return { client, transport, resumes, cut: () => call!.abort() };
}

/** The stored frames' ids of the MCP stream `key`, in order. */
async function streamIds(streamKey: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    const { rows } = await c.query<{ seq: string }>("SELECT seq FROM mcp_events WHERE stream_key = $1 ORDER BY seq", [
      streamKey,
    ]);
    return rows.map((r) => `${streamKey}-${r.seq}`);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        "test/ok": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "notes\n" } }] },
            { text: "Wrote NOTES.md." },
          ],
        ],
        "test/hang": [[{ hang: true }]],
        // Two writes (progress notifications), the second late enough to come after a cut, then a hang.
        "test/resume": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "ONE.md", content: "one\n" } }] },
            { toolCalls: [{ name: "write", args: { filePath: "TWO.md", content: "two\n" } }], delayMs: 1500 },
            { hang: true },
          ],
        ],
      },
    },
  });
  cluster = await startCluster({
    count: 3,
    env: () => ({
      ...fx.env,
      // Generous: a replica on a loaded CI machine may stall for seconds, and must not look dead.
      PATCHBAY_LEASE_MS: "15000",
      PATCHBAY_MAX_ACTIVE_RUNS: "2",
      PATCHBAY_RATE_LIMIT_PER_MIN: String(RATE_LIMIT),
      PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "50",
      // One OpenCode server per replica, shared by its runs: three in all, whatever the run count.
      PATCHBAY_SHARED_AGENT: "1",
      // The shared server serves the models it lists; a run of any other gets a server of its own.
      PATCHBAY_DEFAULT_MODEL: "test/ok",
      PATCHBAY_MODELS: "test/ok,test/hang,test/resume",
      PATCHBAY_WARM_POOL_SIZE: "0",
    }),
  });
  ({ db, lb, replicas, key, dataDirs } = cluster);
}, LOADED.hookMs);

afterAll(async () => {
  await cluster?.close();
  await fx?.close();
}, LOADED.hookMs);

describe("three replicas on one database behind a round-robin proxy", { timeout: LOADED.testMs }, () => {
  it("every replica is ready and reports the database", async () => {
    for (const r of replicas) expect((await r.api("GET", "/readyz")).json).toEqual({ ready: true });
  });

  it("the REST flow: start, a follow-up and an endSession on whichever replica, answered as on one machine", async () => {
    const started = await viaLb("POST", `${API}/runs`, { body: body("test/ok") });
    expect(started.status).toBe(201);
    const id = started.json.id as string;
    const idle = await pollUntilTurnOver(() => viaLb("GET", `${API}/runs/${id}`), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the first turn",
    });
    expect(idle.status).toBe("idle");
    const owner = await replicaIndexOf(id);
    // A follow-up sent straight to another replica is handed to the owner.
    const other = replicas[(owner + 1) % 3]!;
    const message = await other.api("POST", `${API}/runs/${id}/messages`, {
      key,
      body: { prompt: "One more thing." },
    });
    expect(message.status).toBe(202);
    expect(message.json).toMatchObject({ id, status: "running", turnCount: 2 });
    // While it runs, a second follow-up on a third replica gets the one-machine 409, or lands after the turn.
    const again = await replicas[(owner + 2) % 3]!.api("POST", `${API}/runs/${id}/messages`, {
      key,
      body: { prompt: "And another." },
    });
    expect([202, 409]).toContain(again.status);
    if (again.status === 409) expect(again.json.error.code).toBe("session_busy");
    await pollUntilTurnOver(() => viaLb("GET", `${API}/runs/${id}`), { timeoutMs: LOADED.turnWaitMs, what: "turn 2" });
    const patch = await viaLb("GET", `${API}/runs/${id}?patch=1`);
    expect(patch.status).toBe(200);
    expect(patch.json.patch).toContain("NOTES.md");
    const ended = await other.api("POST", `${API}/runs/${id}/messages`, { key, body: { endSession: true } });
    expect(ended.status).toBe(200);
    expect(ended.json.status).toBe("completed");
    expect(await leaseOf(id)).toBeNull();
  });

  it("a client cut off from one replica resumes on another with Last-Event-ID and misses nothing", async () => {
    const seen = fx.model.nextRequest("test/hang");
    const started = await viaLb("POST", `${API}/runs`, { body: body("test/hang", "hang") });
    await seen;
    const id = started.json.id as string;
    const owner = await replicaIndexOf(id);
    const a = replicas[(owner + 1) % 3]!;
    const b = replicas[(owner + 2) % 3]!;
    const first = follow(a.url, key, id);
    await waitFor(() => first.frames().length >= 2, { what: "frames on the first replica" });
    first.stop();
    await first.done;
    const kept = first.frames();
    const lastId = kept.at(-1)!.id!;
    // The rest of the run happens while no one listens, on the owner.
    const second = (async () => {
      const res = await fetch(`${b.url}${API}/runs/${id}/stream`, {
        headers: { authorization: `Bearer ${key}`, "last-event-id": lastId },
      });
      return parseSse(await res.text()).filter((f) => f.id !== undefined);
    })();
    const cancelled = await a.api("POST", `${API}/runs/${id}/cancel`, { key });
    expect(cancelled.status).toBe(200);
    expect(cancelled.json.status).toBe("cancelled");
    const rest = await second;
    const log = (await viaLb("GET", `${API}/runs/${id}?events=1`)).json.events as { id: number }[];
    expect([...kept, ...rest].map((f) => Number(f.id))).toEqual(log.map((e) => e.id));
  });

  it("an MCP client drives start_run, stream_events and send_message through the proxy, with no sticky session", async () => {
    const client = new Client({ name: "replicas-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(new URL(`${lb.url}/mcp`), {
      requestInit: { headers: { Authorization: `Bearer ${key}` } },
    });
    const firstPick = lb.picks.length;
    await client.connect(transport);
    try {
      const started = await client.callTool({
        name: "start_run",
        arguments: { ...body("test/ok"), wait: true },
      });
      expect(started.isError).toBeFalsy();
      const run = started.structuredContent as { id: string; status: string };
      expect(run.status).toBe("idle");
      const events = await client.callTool({ name: "stream_events", arguments: { runId: run.id, after: 0 } });
      expect(events.isError).toBeFalsy();
      expect((events.structuredContent as { events: unknown[] }).events.length).toBeGreaterThan(0);
      const more = await client.callTool({
        name: "send_message",
        arguments: { runId: run.id, prompt: "again", wait: true },
      });
      expect(more.isError).toBeFalsy();
      expect(more.structuredContent).toMatchObject({ id: run.id, turnCount: 2, status: "idle" });
      const ended = await client.callTool({ name: "send_message", arguments: { runId: run.id, endSession: true } });
      expect(ended.structuredContent).toMatchObject({ status: "completed" });
      // One session, its requests spread over every replica by the proxy.
      expect(new Set(lb.picks.slice(firstPick)).size).toBe(3);
    } finally {
      await client.close();
    }
  });

  it("an MCP call's stream cut off from one replica resumes on another: what the first stored after the cut arrives once", async () => {
    // Every request goes to replica A, but a resume (GET with Last-Event-ID) to B, once let through.
    const [A, B] = [replicas[0]!, replicas[1]!];
    let letResumeThrough!: () => void;
    const resumeLetThrough = new Promise<void>((r) => (letResumeThrough = r));
    const { client, transport, resumes, cut } = await splitMcpClient(A, B, resumeLetThrough);
    try {
      const progress: number[] = [];
      const ids: string[] = [];
      let firstProgress!: () => void;
      const progressed = new Promise<void>((r) => (firstProgress = r));
      const result = client.callTool(
        { name: "start_run", arguments: { ...body("test/resume", "two notes"), wait: true } },
        undefined,
        {
          timeout: LOADED.turnWaitMs,
          onprogress: (p) => {
            progress.push(p.progress);
            firstProgress();
          },
          onresumptiontoken: (id) => void ids.push(id),
        },
      );
      await progressed;
      // The connection to A drops; the client reconnects with the last id it holds.
      cut();
      const cursor = ids.at(-1)!;
      // A goes on: the second write, then the model hangs; all stored while no client listens.
      await waitFor(() => fx.model.agentRequests("test/resume").length >= 3, { what: "the hanging step" });
      letResumeThrough();
      await waitFor(() => resumes.length > 0, { what: "the resume on B" });
      expect(resumes[0]).toEqual({ url: B.url, status: 200 });
      // B now waits on A's stream: the result A stores once the run is cancelled reaches the client through B.
      const runs = await viaLb("GET", `${API}/runs?limit=1`);
      const run = runs.json.runs[0] as { id: string; modelId: string };
      expect(run.modelId).toBe("test/resume");
      expect((await viaLb("POST", `${API}/runs/${run.id}/cancel`)).status).toBe(200);
      const done = await result;
      expect(done.isError).toBeFalsy();
      expect(done.structuredContent).toMatchObject({ id: run.id, status: "cancelled", waited: true });
      // Every frame of the stream reached the client once, in order, the later ones through B.
      const stored = await streamIds(cursor.split("-")[0]!);
      expect(stored.map((id) => Number(id.split("-")[1]))).toEqual(
        Array.from({ length: stored.length }, (_, i) => i + 1),
      );
      expect(ids).toEqual(stored);
      expect(ids.indexOf(cursor)).toBeLessThan(ids.length - 1);
      // Progress counts 1..n: none lost, none repeated.
      expect(progress.length).toBeGreaterThanOrEqual(2);
      expect(progress).toEqual(Array.from({ length: progress.length }, (_, i) => i + 1));

      // The session ends on A (DELETE): B, which revived it to serve the resume, lets it go too.
      const sid = transport.sessionId!;
      await transport.terminateSession();
      const ping = await fetch(`${B.url}/mcp`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${key}`,
          accept: "application/json, text/event-stream",
          "content-type": "application/json",
          "mcp-session-id": sid,
          "mcp-protocol-version": transport.protocolVersion!,
        },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
      });
      expect(ping.status).toBe(404);
      const left = new pg.Client({ connectionString: db.url });
      await left.connect();
      const streams = await left
        .query("SELECT key FROM mcp_streams WHERE session_id = $1", [sid])
        .finally(() => left.end());
      expect(streams.rows).toEqual([]);
    } finally {
      await client.close();
    }
  });

  it("an Idempotency-Key replayed on every replica at once makes one run, and the request rate holds across replicas", async () => {
    const answers = await Promise.all(
      replicas.map((r) =>
        r.api("POST", `${API}/runs`, { key, body: body("test/ok"), headers: { "idempotency-key": "same-one" } }),
      ),
    );
    const ids = new Set(answers.map((a) => a.json.id));
    expect(answers.map((a) => a.status).every((s) => s === 201 || s === 200)).toBe(true);
    expect(ids.size).toBe(1);
    const [id] = [...ids] as [string];
    await pollUntilTurnOver(() => viaLb("GET", `${API}/runs/${id}`), { timeoutMs: LOADED.turnWaitMs, what: "the run" });
    await viaLb("POST", `${API}/runs/${id}/messages`, { body: { endSession: true } });

    const fresh = await viaLb("POST", "/api/v1/keys", { body: { name: "rate", scopes: ["read:builder"] } });
    expect(fresh.status).toBe(201);
    let ok = 0;
    let limited = 0;
    // In parallel batches: the window (a minute from the key's first request) must hold all of
    // them, which one request after another on a loaded machine did not.
    const t0 = Date.now();
    for (let sent = 0; sent < RATE_LIMIT + 30 && limited < 5; sent += 20) {
      const batch = await Promise.all(
        Array.from({ length: 20 }, () => viaLb("GET", `${API}/runs?limit=1`, { key: fresh.json.key })),
      );
      for (const r of batch) {
        if (r.status === 200) ok++;
        else if (r.status === 429) limited++;
      }
    }
    expect(Date.now() - t0, "the requests outlasted the rate window").toBeLessThan(60_000);
    expect(ok).toBe(RATE_LIMIT);
    expect(limited).toBeGreaterThan(0);
  });

  it("runs past every replica's room wait queued, and start when a replica frees one", async () => {
    const hangs: string[] = [];
    try {
      await placeAndFree(hangs);
    } finally {
      for (const id of hangs) await viaLb("POST", `${API}/runs/${id}/cancel`);
    }
  });

  async function placeAndFree(hangs: string[]): Promise<void> {
    for (let i = 0; i < 7; i++) {
      const r = await viaLb("POST", `${API}/runs`, { body: body("test/hang", `hang ${i}`) });
      expect(r.status).toBe(201);
      hangs.push(r.json.id);
    }
    // Three replicas with room for two each (runs an earlier test left idle count too): each
    // fills up to two, and what does not fit waits queued.
    const held = async () => {
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        const { rows } = await c.query<{ owner: string; n: string }>(
          "SELECT lease_owner AS owner, count(*) AS n FROM runs WHERE status IN ('running', 'idle') GROUP BY lease_owner",
        );
        return rows.map((r) => Number(r.n));
      } finally {
        await c.end();
      }
    };
    await waitFor(async () => (await held()).join() === "2,2,2", {
      timeoutMs: LOADED.turnWaitMs,
      what: "every replica holding two runs",
    });
    const statuses = await Promise.all(hangs.map(async (id) => (await viaLb("GET", `${API}/runs/${id}`)).json.status));
    expect(statuses.filter((st) => st === "queued").length).toBeGreaterThanOrEqual(1);
    const running = hangs.filter((_, i) => statuses[i] === "running");
    const queued = hangs[statuses.indexOf("queued")]!;
    await viaLb("POST", `${API}/runs/${running[0]}/cancel`);
    await waitFor(async () => (await viaLb("GET", `${API}/runs/${queued}`)).json.status === "running", {
      timeoutMs: LOADED.turnWaitMs,
      what: "the queued run to start",
    });
  }

  it("a replica stopped past its lease while running a turn: another takes the run over (server_restart), and once woken it writes nothing more for the run and stops its agent", async () => {
    const seen = fx.model.nextRequest("test/hang");
    // A secret gives the run an OpenCode server of its own, in its sandbox (not the replica's shared one).
    const started = await viaLb("POST", `${API}/runs`, {
      body: { ...body("test/hang", "hang before the stall"), environment: { secrets: { STALL_TOKEN: "stall-1234" } } },
    });
    expect(started.status).toBe(201);
    await seen;
    const id = started.json.id as string;
    const owner = await replicaIndexOf(id);
    const stalled = replicas[owner]!;
    const other = replicas[(owner + 1) % 3]!;
    const sandbox = path.join(dataDirs[owner]!, "sandboxes", id);
    expect(opencodeUnder(sandbox)).not.toEqual([]);
    const runOf = async () => (await other.api("GET", `${API}/runs/${id}?events=1`, { key })).json;
    lb.drop(owner);
    stalled.proc.kill("SIGSTOP");
    let taken: { status: string; error: { code: string }; updatedAt: string; events: { id: number; type: string }[] };
    try {
      taken = await pollHttp(
        () => other.api("GET", `${API}/runs/${id}?events=1`, { key }),
        (run: typeof taken) => (run.status === "failed" ? run : undefined),
        { timeoutMs: LOADED.turnWaitMs, what: "another replica to take the stopped replica's run over" },
      );
    } finally {
      stalled.proc.kill("SIGCONT");
    }
    expect(taken.error.code).toBe("server_restart");
    expect(await leaseOf(id)).toBeNull();
    // Woken, it learns it lost the run (its heartbeat, or a write refused), says so once, and stops the run's agent.
    const lostLines = () =>
      stalled
        .stderr()
        .split("\n")
        .filter((l) => l.includes("another replica took over a run") && l.includes(id));
    await waitFor(() => lostLines().length > 0, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the woken replica to find it lost the run",
    });
    await waitFor(() => opencodeUnder(sandbox).length === 0, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the woken replica to stop the run's agent",
    });
    lb.restore(owner);
    expect((await stalled.api("GET", "/readyz")).json).toEqual({ ready: true });
    // The run and its log are exactly as the taker left them: nothing appended after its ending.
    const after = await runOf();
    expect([after.status, after.error, after.updatedAt]).toEqual([taken.status, taken.error, taken.updatedAt]);
    expect(after.events).toEqual(taken.events);
    const ids = taken.events.map((e) => e.id);
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1));
    expect(taken.events.at(-1)).toMatchObject({ type: "run.status", data: { status: "failed" } });
    expect(lostLines()).toHaveLength(1);
  });

  it("kill -9 of the replica running a turn: another settles the run (server_restart), no event lost or repeated", async () => {
    const seen = fx.model.nextRequest("test/hang");
    const started = await viaLb("POST", `${API}/runs`, { body: body("test/hang", "hang before the crash") });
    await seen;
    const id = started.json.id as string;
    const owner = await replicaIndexOf(id);
    const watcher = replicas[(owner + 1) % 3]!;
    const stream = follow(watcher.url, key, id);
    await waitFor(() => stream.frames().length >= 2, { what: "the stream to replay" });
    replicas[owner]!.proc.kill("SIGKILL");
    lb.drop(owner);
    await stream.done;
    const run = (await watcher.api("GET", `${API}/runs/${id}?events=1`, { key })).json;
    expect(run.status).toBe("failed");
    expect(run.error.code).toBe("server_restart");
    const log = (run.events as { id: number }[]).map((e) => e.id);
    expect(log).toEqual(Array.from({ length: log.length }, (_, i) => i + 1));
    expect(stream.frames().map((f) => Number(f.id))).toEqual(log);
    expect(await leaseOf(id)).toBeNull();
  });

  it("kill -9 of the replica writing an MCP call's stream: the client resumes on another, which answers the call once the writer is gone", async () => {
    // After the kill above, two replicas are left: A writes the call's stream, then dies.
    const live = replicas.filter((r) => r.proc.exitCode === null && r.proc.signalCode === null);
    expect(live).toHaveLength(2);
    const [A, B] = live as [ServeChild, ServeChild];
    const { client, transport, resumes } = await splitMcpClient(A, B);
    try {
      const ids: string[] = [];
      const seen = fx.model.nextRequest("test/hang");
      const result = client.callTool(
        { name: "start_run", arguments: { ...body("test/hang", "hang for an MCP client"), wait: true } },
        undefined,
        { timeout: LOADED.turnWaitMs, onresumptiontoken: (id) => void ids.push(id) },
      );
      await seen;
      // The call waits on its run (recorded, so another replica can answer with it), which runs on A.
      const sid = transport.sessionId!;
      const runId = await waitFor(
        async () => {
          const c = new pg.Client({ connectionString: db.url });
          await c.connect();
          const { rows } = await c
            .query<{ data: { calls: { runId?: string }[] } }>("SELECT data FROM mcp_sessions WHERE id = $1", [sid])
            .finally(() => c.end());
          return rows[0]?.data.calls[0]?.runId;
        },
        { what: "the call's run in its session record" },
      );
      expect(await replicaIndexOf(runId)).toBe(replicas.indexOf(A));
      A.proc.kill("SIGKILL");
      lb.drop(replicas.indexOf(A));
      // B serves the resume, waits out A's lease, and answers with the run as the takeover leaves it.
      const done = await result;
      expect(resumes[0]).toEqual({ url: B.url, status: 200 });
      expect(done.isError).toBeFalsy();
      expect(done.structuredContent).toMatchObject({
        id: runId,
        status: "failed",
        error: { code: "server_restart" },
        waited: true,
      });
      expect(ids).toEqual(await streamIds(ids[0]!.split("-")[0]!));
    } finally {
      await client.close();
    }
  });
});
