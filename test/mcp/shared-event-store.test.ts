/**
 * The MCP event log replicas share in Postgres, on a real database with two replicas' stores:
 * a stream one replica writes replays on the other after a cursor, a reader there is woken by
 * each frame the writer stores and learns when the writer is gone, one answer per request
 * whoever writes it, a view's writes in call order, and the bounds.
 */
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../src/engine/log.ts";
import { createSharedMcpEvents, type SharedMcpEvents } from "../../src/engine/store/pg/mcp-events.ts";
import { createPostgresStore, type PostgresStore } from "../../src/engine/store/pg/postgres.ts";
import type { McpEventLog, SessionEventStore } from "../../src/mcp/event-store.ts";
import { createSharedEventLog } from "../../src/mcp/shared-event-store.ts";
import { createTestDatabase, type TestDatabase } from "../support/postgres.ts";

const note = (n: number): JSONRPCMessage => ({ jsonrpc: "2.0", method: "notifications/progress", params: { n } });
const PRIMING = {} as JSONRPCMessage;
const S1 = "11111111-1111-4111-8111-111111111111";
const S2 = "22222222-2222-4222-8222-222222222222";

let db: TestDatabase;
const stores: PostgresStore[] = [];
const shared: SharedMcpEvents[] = [];
const logs: McpEventLog[] = [];

/** A replica: its store (registered, so it heartbeats as live) and its event log. */
async function replica(name: string, opts: { maxEvents?: number; maxBytes?: number; retentionMs?: number } = {}) {
  const store = await createPostgresStore({ url: db.url, leaseMs: 60_000 });
  stores.push(store);
  await store.replicas.register(`http://${name}.invalid`);
  const events = createSharedMcpEvents({
    db: store.db,
    url: db.url,
    replicaId: store.replicaId,
    leaseMs: 60_000,
    recheckMs: 50,
    log: silentLogger,
  });
  shared.push(events);
  const log = createSharedEventLog(events, { ...opts, sweepMs: 3_600_000, log: silentLogger });
  logs.push(log);
  return { store, events, log };
}

async function replay(store: SessionEventStore, after: string) {
  const sent: [string, JSONRPCMessage][] = [];
  const stream = await store.replayEventsAfter(after, { send: async (id, m) => void sent.push([id, m]) });
  return { stream, sent };
}

async function sql<T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    return (await c.query<T>(text, params)).rows;
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  for (const l of logs) await l.close();
  for (const e of shared) await e.close();
  for (const s of stores) await s.close();
  await db?.drop();
});

describe("MCP event log shared by replicas", () => {
  it("a stream one replica writes replays on another after a cursor, with the writer's ids, and is foreign there", async () => {
    const a = await replica("a");
    const b = await replica("b");
    const onA = a.log.forSession(S1, { currentRequests: () => [7, "x"] });
    const onB = b.log.forSession(S1);
    const priming = await onA.storeEvent("post-1", PRIMING);
    const one = await onA.storeEvent("post-1", note(1));
    await onA.storeEvent("post-2", note(99));
    const two = await onA.storeEvent("post-1", note(2));
    expect(priming).toMatch(/^[0-9a-f]{16}-1$/);
    expect(await onB.getStreamIdForEventId!(priming)).toBe("post-1");
    expect(await replay(onB, priming)).toEqual({
      stream: "post-1",
      sent: [
        [one, note(1)],
        [two, note(2)],
      ],
    });
    expect(await onB.foreign(one)).toEqual({ id: "post-1", requestIds: [7, "x"], answered: new Set() });
    // The writer's own streams are not foreign to it.
    expect(await onA.foreign(one)).toBeUndefined();
    // Another session's cursor, or one naming nothing, is unknown.
    const other = b.log.forSession(S2);
    expect(await other.getStreamIdForEventId!(one)).toBeUndefined();
    expect(await other.foreign(one)).toBeUndefined();
    await expect(replay(other, one)).rejects.toThrow(/cannot be resumed/);
    const key = one.split("-")[0]!;
    for (const bad of ["", "x-1", `${key}-0`, `${key}-99`, "0123456789abcdef-1"])
      expect(await onB.getStreamIdForEventId!(bad)).toBeUndefined();
  });

  it("a reader on another replica is woken by each frame the writer stores, and told when the writer is gone", async () => {
    const a = await replica("a");
    const b = await replica("b");
    const onA = a.log.forSession(S1, { currentRequests: () => [1] });
    const onB = b.log.forSession(S1);
    const priming = await onA.storeEvent("post", PRIMING);
    const never = new AbortController().signal;

    const woken = onB.next(priming, never);
    const one = await onA.storeEvent("post", note(1));
    expect(await woken).toBe("more");
    expect((await replay(onB, priming)).sent).toEqual([[one, note(1)]]);
    // Nothing new after `one`: the reader waits until the writer's view closes.
    const released = onB.next(one, never);
    await onA.release();
    expect(await released).toBe("orphaned");

    // A writer whose replica stopped heartbeating is gone too.
    const onA2 = a.log.forSession(S2, { currentRequests: () => [2] });
    const onB2 = b.log.forSession(S2);
    const start = await onA2.storeEvent("post", PRIMING);
    const stop = new AbortController();
    const aborted = onB2.next(start, stop.signal);
    stop.abort();
    expect(await aborted).toBe("aborted");
    const dead = onB2.next(start, never);
    await a.store.replicas.leave();
    expect(await dead).toBe("orphaned");
    // Its session ended: the streams go, and a reader learns that.
    await onA2.dispose();
    expect(await onB2.next(start, never)).toBe("gone");
    expect(await onB2.foreign(start)).toBeUndefined();
  });

  it("one answer per request, whichever replica writes it first; the pending call is cleared", async () => {
    const a = await replica("a");
    const b = await replica("b");
    const cleared: unknown[] = [];
    const onA = a.log.forSession(S1, { currentRequests: () => [5] });
    const onB = b.log.forSession(S1, { answered: async (id) => void cleared.push(id) });
    const priming = await onA.storeEvent("call", PRIMING);
    const fromB = { jsonrpc: "2.0" as const, id: 5, result: { by: "b" } };
    const fromA = { jsonrpc: "2.0" as const, id: 5, result: { by: "a" } };
    const ids = await Promise.all([onB.storeAnswer(priming, fromB), onA.storeEvent("call", fromA)]);
    expect(ids[0]).toBe(ids[1]);
    const { sent } = await replay(onB, priming);
    expect(sent).toHaveLength(1);
    expect(sent[0]![0]).toBe(ids[0]);
    expect(cleared).toEqual([5]);
    expect([...(await onB.foreign(priming))!.answered]).toEqual([5]);
  });

  it("a view's writes to one stream keep their call order, and every frame is stored once", async () => {
    const a = await replica("a");
    const onA = a.log.forSession(S1);
    const ids = await Promise.all(Array.from({ length: 60 }, (_, i) => onA.storeEvent("many", i ? note(i) : PRIMING)));
    expect(ids.map((id) => Number(id.split("-")[1]))).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    const { sent } = await replay(onA, ids[0]!);
    expect(sent.map(([, m]) => (m as unknown as { params: { n: number } }).params.n)).toEqual(
      Array.from({ length: 59 }, (_, i) => i + 1),
    );
  });

  it("muted frames are not stored; a session's end deletes its streams", async () => {
    const a = await replica("a");
    const onA = a.log.forSession(S2);
    const before = await a.events.size();
    expect(await onA.muted(() => onA.storeEvent("m", note(1)))).toBe("0-0");
    expect(await a.events.size()).toEqual(before);
    await onA.storeEvent("m", note(2));
    await onA.dispose();
    expect(await sql("SELECT key FROM mcp_streams WHERE session_id = $1", [S2])).toEqual([]);
  });

  it("stays within its bounds, oldest frames first, and a cursor whose successors were dropped cannot resume; stale streams go", async () => {
    await sql("TRUNCATE mcp_streams CASCADE");
    const a = await replica("a", { maxEvents: 3, maxBytes: 100_000 });
    const onA = a.log.forSession(S1);
    const ids = [];
    for (let i = 1; i <= 5; i++) ids.push(await onA.storeEvent("s", note(i)));
    await a.events.sweep({ maxEvents: 3, maxBytes: 100_000, retentionMs: 3_600_000 });
    expect(await a.events.size()).toMatchObject({ events: 3, streams: 1 });
    expect(await onA.getStreamIdForEventId!(ids[0]!)).toBeUndefined();
    expect((await replay(onA, ids[1]!)).sent.map(([id]) => id)).toEqual(ids.slice(2));

    await sql("TRUNCATE mcp_streams CASCADE");
    const b = await replica("b", { maxEvents: 100_000, maxBytes: 1_000 });
    const onB = b.log.forSession(S1);
    for (let i = 0; i < 40; i++) await onB.storeEvent(`t${i % 4}`, note(i));
    await b.events.sweep({ maxEvents: 100_000, maxBytes: 1_000, retentionMs: 3_600_000 });
    const { bytes } = await b.events.size();
    expect(bytes).toBeLessThanOrEqual(1_000);
    expect(bytes).toBeGreaterThan(900);

    // A stream not written for the retention window goes, frames and all.
    await sql("UPDATE mcp_streams SET written_at = now() - interval '2 hours' WHERE stream_id = 't0'");
    await b.events.sweep({ maxEvents: 100_000, maxBytes: 100_000, retentionMs: 3_600_000 });
    expect(await sql("SELECT key FROM mcp_streams WHERE stream_id = 't0'")).toEqual([]);
    expect(await sql("SELECT key FROM mcp_streams WHERE stream_id = 't1'")).toHaveLength(1);
    // Its view starts it again under a new key.
    const again = await onB.storeEvent("t0", note(1));
    expect(again).toMatch(/-1$/);
  });
});
