/**
 * A replica that loses its database: one Patchbay on the Postgres store, reaching it through a
 * TCP proxy the test cuts (every connection reset, new ones refused) and restores. While cut,
 * `/readyz` says why, requests answer 503 `storage_failed` (REST; MCP over HTTP, whose key
 * cannot be checked; a tool error where no key is checked), the queued run stays queued, the
 * process neither crashes nor logs every retry, an open SSE stream stays open, and a turn that
 * ends meanwhile waits for the database. Restored, the replica is ready again, hears another
 * store's appends (LISTEN again), ends that turn's run failed (`storage_failed`), and places
 * the queued run, which completes against the scripted model.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NewRunEvent } from "../../src/engine/events/schema.ts";
import { createPostgresStore, isPostgresStore, type PostgresStore } from "../../src/engine/store/pg/postgres.ts";
import { createMcpMount, type McpMount } from "../../src/http/mcp-mount.ts";
import { ERROR_META } from "../../src/mcp/errors.ts";
import { createMcpServer, type PatchbayMcpServer } from "../../src/mcp/server.ts";
import { tempDir, waitFor } from "../helpers.ts";
import { startCutProxy, type CutProxy } from "../support/cut-proxy.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { API, callApi, serveApp } from "../support/http.ts";
import { follow } from "../support/serve.ts";
import { pollHttp, pollUntilTurnOver } from "../support/poll.ts";
import { openTestPatchbay, type TestPatchbay } from "../support/patchbay.ts";
import { createTestDatabase, type TestDatabase } from "../support/postgres.ts";

let fx: Fixtures;
let db: TestDatabase;
let proxy: CutProxy;
let pb: TestPatchbay;
let mcp: McpMount;
let served: { base: string; close(): Promise<void> };
/** Another replica's store on the same database, reached directly (not through the proxy). */
let other: PostgresStore;
let key: string;
let mcpClient: Client;
/** An MCP client of the engine in-process, with no key to check (as `patchbay mcp` is). */
let localMcp: Client;
let localServer: PatchbayMcpServer;

/** A bound for any one request while the database is gone: an answer, never a hang. */
const REQUEST_BOUND_MS = 30_000;
const api = (method: string, p: string, body?: unknown) => callApi(served.base, key, method, p, body);
const text = (t: string): NewRunEvent => ({ type: "builder.event", turn: 1, data: { kind: "text", text: t } });

/** The SSE stream of a run, read in the background: its text events so far, and whether it ended. */
function openStream(runId: string) {
  const s = follow(served.base, key, runId);
  return {
    ended: s.ended,
    texts: () =>
      s
        .frames()
        .filter((f) => f.event === "builder.event" && f.data)
        .map((f) => (JSON.parse(f.data!) as { data: { kind: string; text?: string } }).data)
        .filter((d) => d.kind === "text")
        .map((d) => d.text),
    async close() {
      s.stop();
      await s.done;
    },
  };
}

/** Backends on the database listening for run events (this replica's and the other store's). */
async function eventListeners(): Promise<number> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    const { rows } = await c.query<{ n: string }>(
      "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND query = 'LISTEN patchbay_events'",
      [db.name],
    );
    return Number(rows[0]!.n);
  } finally {
    await c.end();
  }
}

let openGate: () => void;
const gate = new Promise<void>((resolve) => (openGate = resolve));

const logged = () => pb.logLines.map((l) => JSON.parse(l) as { level: string; msg: string; runId?: string });

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
        // Held at its first answer until the database is cut: the turn then ends while it is gone.
        "test/gated": [
          [
            { after: gate, answer: { toolCalls: [{ name: "write", args: { filePath: "LOST.md", content: "x\n" } }] } },
            { text: "Wrote LOST.md." },
          ],
        ],
      },
    },
  });
  db = await createTestDatabase();
  // Migrated here, directly: the replica then finds nothing to do.
  other = await createPostgresStore({ url: db.url });
  proxy = await startCutProxy({ host: "127.0.0.1", port: 5432 });
  const viaProxy = new URL(db.url);
  viaProxy.port = String(proxy.port);
  pb = await openTestPatchbay({
    ...fx.env,
    PATCHBAY_DATABASE_URL: viaProxy.toString(),
    PATCHBAY_SECRET_KEY: randomBytes(32).toString("base64"),
    // Two runs at a time here: a third waits in the queue for the placement loop.
    PATCHBAY_MAX_ACTIVE_RUNS: "2",
    PATCHBAY_SHARED_AGENT: "1",
    PATCHBAY_DEFAULT_MODEL: "test/ok",
    PATCHBAY_MODELS: "test/ok,test/hang,test/gated",
    PATCHBAY_WARM_POOL_SIZE: "0",
  });
  mcp = createMcpMount({
    engine: pb.engine,
    log: pb.log,
    host: "127.0.0.1",
    dataDir: pb.dataDir,
    ...(pb.mcpSessions ? { sharedRecords: pb.mcpSessions } : {}),
    ...(pb.mcpEvents ? { sharedEvents: pb.mcpEvents } : {}),
  });
  served = await serveApp(pb, {
    mountMcp: mcp.mount,
    ...(pb.counters ? { rateCounters: pb.counters } : {}),
    // As `patchbay serve` answers it.
    isReady: async () => {
      const store = await pb.storeReady();
      return store.ok || { reason: store.reason };
    },
  });
  await pb.engine.replicas!.advertise(served.base);
  key = (await pb.keys.create({ name: "rw", scopes: ["read:builder", "write:builder"], ownerId: "owner-a" })).key;
  mcpClient = new Client({ name: "database-lost", version: "1.0.0" });
  await mcpClient.connect(
    new StreamableHTTPClientTransport(new URL(`${served.base}/mcp`), {
      requestInit: { headers: { Authorization: `Bearer ${key}` } },
    }),
  );
  localServer = createMcpServer(pb.engine, { ownerId: "owner-a", log: pb.log });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await localServer.connect(serverSide);
  localMcp = new Client({ name: "database-lost-local", version: "1.0.0" });
  await localMcp.connect(clientSide);
}, LOADED.hookMs);

afterAll(async () => {
  // What the replica logged, for a failure's post-mortem.
  if (pb) fs.writeFileSync(path.join(tempDir("database-lost-log"), "replica.log"), pb.logLines.join(""));
  proxy?.restore();
  await mcpClient?.close().catch(() => undefined);
  await localMcp?.close();
  localServer?.dispose();
  await mcp?.close();
  await served?.close();
  await pb?.close();
  await other?.close();
  await proxy?.close();
  await db?.drop();
  await fx?.close();
}, LOADED.hookMs);

describe("a replica that loses its database", { timeout: LOADED.testMs }, () => {
  let held: string;
  let gated: string;
  let queued: string;
  let stream: ReturnType<typeof openStream>;
  const start = async (body: Record<string, unknown>) => {
    const res = await api("POST", `${API}/runs`, { repository: "acme/web", ...body });
    expect(res.status).toBe(201);
    return res.json as { id: string; status: string };
  };

  it("holds two runs waiting on the model, a third queued for room, and a follower on the first", async () => {
    expect((await api("GET", "/readyz")).json).toEqual({ ready: true });
    held = (await start({ prompt: "hang", modelId: "test/hang" })).id;
    gated = (await start({ prompt: "write, later", modelId: "test/gated" })).id;
    const third = await start({ prompt: "write notes" });
    queued = third.id;
    expect(third.status).toBe("queued");
    stream = openStream(held);
    // Both turns wait on the model: nothing of theirs is being written when the cut comes.
    await waitFor(() => fx.model.agentRequests("test/hang").length && fx.model.agentRequests("test/gated").length, {
      timeoutMs: LOADED.turnWaitMs,
      what: "both runs' first model requests",
    });
    // The follower hears another replica's append live (NOTIFY), before any cut.
    await other.appendEvent(held, text("before the cut"));
    await waitFor(() => stream.texts().includes("before the cut"), { what: "the follower to hear the append" });
  });

  it("cut off: /readyz, REST and MCP answer storage_failed with the reason; nothing crashes, the outage is logged once", async () => {
    const linesBefore = pb.logLines.length;
    // Cut while connections are held (a transaction, an admission's advisory lock): pg emits
    // their loss on the client holding them, which must not end the process.
    const store = pb.store;
    if (!isPostgresStore(store)) throw new Error("expected the Postgres store");
    const heldAcross = store.db.tx(async (q) => {
      await q.rows("SELECT 1");
      await store.exclusive("database-lost", async () => {
        proxy.cut({ refuse: true });
        await waitFor(() => logged().some((l) => l.msg === "lost the database"), { what: "the loss to be noticed" });
      });
    });
    await expect(heldAcross).rejects.toMatchObject({ code: "storage_failed" });
    const ready = await callApi(served.base, key, "GET", "/readyz");
    expect(ready.status).toBe(503);
    expect(ready.json.error.code).toBe("storage_failed");
    expect(ready.json.error.message).toMatch(/database/);

    const refused = await fetch(`${served.base}${API}/runs`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ repository: "acme/web", prompt: "write notes" }),
      signal: AbortSignal.timeout(REQUEST_BOUND_MS),
    });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("storage_failed");

    // MCP over HTTP: the key cannot be checked, so the request answers 503 before any tool runs.
    const startRun = { name: "start_run", arguments: { repository: "acme/web", prompt: "write notes" } };
    await expect(mcpClient.callTool(startRun, undefined, { timeout: REQUEST_BOUND_MS })).rejects.toThrow(
      /storage_failed/,
    );
    // MCP with no key to check (as `patchbay mcp` serves it): the tool runs and answers a tool error.
    const tool = await localMcp.callTool(startRun, undefined, { timeout: REQUEST_BOUND_MS });
    expect(tool.isError).toBe(true);
    expect((tool._meta?.[ERROR_META] as { code: string }).code).toBe("storage_failed");

    // The gated turn goes on now, and ends while the database is gone: its end waits for it.
    openGate();
    await waitFor(
      () =>
        logged().some((l) => l.msg === "this turn's end waits for the database to answer again" && l.runId === gated),
      { timeoutMs: LOADED.turnWaitMs, what: "the gated turn to end" },
    );
    // The loops (heartbeat, placement, LISTEN) keep trying meanwhile: a few of their tries refused.
    const tries = proxy.refused();
    await waitFor(() => proxy.refused() >= tries + 6, { what: "the replica's loops to try again" });
    const rows = await other.db.rows<{ run_id: string }>("SELECT run_id FROM run_queue");
    expect(rows.map((r) => r.run_id)).toEqual([queued]);
    // The outage is said once; nothing repeats with each try of a loop (the requests above are
    // each logged as failed, and a model call answered meanwhile could not be metered).
    const warned = logged()
      .slice(linesBefore)
      .filter((l) => (l.level === "warn" || l.level === "error") && l.msg !== "request failed")
      .map((l) => l.msg);
    expect(warned.filter((m) => m === "lost the database")).toHaveLength(1);
    expect(warned.filter((m) => m !== "could not record usage")).toEqual(["lost the database"]);
    expect(stream.ended()).toBe(false);
  });

  it("restored: ready again, hears other replicas again, ends the cut-off turn's run and places the queued one", async () => {
    proxy.restore();
    await waitFor(async () => (await callApi(served.base, key, "GET", "/readyz")).status === 200, {
      what: "/readyz to answer 200 again",
    });
    expect(logged().some((l) => l.msg === "the database answers again")).toBe(true);
    // Two listeners again (the other store's and the replica's), then two appends: the second
    // comes after the replica read its gap, so only a NOTIFY brings it.
    await waitFor(async () => (await eventListeners()) >= 2, { what: "the replica to LISTEN again" });
    await other.appendEvent(held, text("after the cut 1"));
    await waitFor(() => stream.texts().includes("after the cut 1"), { what: "the follower to hear the first append" });
    await other.appendEvent(held, text("after the cut 2"));
    await waitFor(() => stream.texts().includes("after the cut 2"), { what: "the follower to hear the second append" });
    expect(stream.ended()).toBe(false);

    // The turn that ended while the database was gone: its run failed, and says why.
    const lost = await pollHttp(
      () => api("GET", `${API}/runs/${gated}`),
      (run: { status: string }) => run.status !== "running" && run,
      { timeoutMs: LOADED.turnWaitMs, what: "the cut-off turn's run to end" },
    );
    expect(lost).toMatchObject({ status: "failed", error: { code: "storage_failed" } });
    // Its room goes to the queued run, which runs end to end.
    const run = await pollUntilTurnOver(() => api("GET", `${API}/runs/${queued}`), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the queued run's turn",
    });
    expect(run).toMatchObject({ status: "idle", changedPaths: ["NOTES.md"] });
    expect((await api("POST", `${API}/runs/${held}/cancel`)).json.status).toBe("cancelled");
    await stream.close();
  });
});
