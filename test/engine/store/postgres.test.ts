/**
 * What only the shared Postgres store does, beyond the contract suite (contract.test.ts):
 * replicas starting together, appenders on several replicas, NOTIFY between them, retention.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NewRunEvent, RunEvent } from "../../../src/engine/events/schema.ts";
import { createPostgresStore, type PostgresStore } from "../../../src/engine/store/pg/postgres.ts";
import { createTestDatabase, type TestDatabase } from "../../support/postgres.ts";
import { runRecord, turnRecord } from "./fixtures.ts";

const text = (t: string): NewRunEvent => ({ type: "builder.event", turn: 1, data: { kind: "text", text: t } });
const textOf = (e: RunEvent) => (e.type === "builder.event" && e.data.kind === "text" ? e.data.text : "");

describe("Postgres store shared by replicas", () => {
  let db: TestDatabase;
  const stores: PostgresStore[] = [];
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const s of stores) await s.close();
    await db.drop();
  });

  it("replicas that start together on an empty database migrate it once, in one transaction", async () => {
    stores.push(...(await Promise.all([1, 2, 3].map(() => createPostgresStore({ url: db.url })))));
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const { rows } = await c.query<{ name: string }>("SELECT name FROM patchbay_migrations");
    await c.end();
    expect(rows.map((r) => r.name)).toEqual([
      "0001_store",
      "0002_replicas",
      "0003_mcp_sessions",
      "0004_runs_updated",
      "0005_mcp_events",
    ]);
    expect(new Set(stores.map((s) => s.replicaId)).size).toBe(3);
  });

  it("appenders on three replicas of one run get ids 1..n, none lost or repeated, each replica's in its call order", async () => {
    const [a, b, c] = stores as [PostgresStore, PostgresStore, PostgresStore];
    await a.createRun(runRecord({ id: "run_multi" }));
    const calls: Promise<RunEvent>[] = [];
    for (let i = 1; i <= 150; i++)
      for (const [name, s] of [
        ["a", a],
        ["b", b],
        ["c", c],
      ] as const)
        calls.push(s.appendEvent("run_multi", text(`${name}${i}`)));
    // Transitions from two replicas in the middle of it.
    const moves = [a, b].map((s, k) =>
      s.transition("run_multi", { turnCount: k + 1 }, (r) => ({
        type: "run.status",
        turn: r.turnCount,
        data: { status: r.status, turn: r.turnCount },
      })),
    );
    const appended = await Promise.all(calls);
    await Promise.all(moves);
    const read = await c.readEvents("run_multi");
    expect(read.map((e) => e.id)).toEqual(Array.from({ length: 452 }, (_, i) => i + 1));
    expect(await b.lastEventId("run_multi")).toBe(452);
    // Exactly what was appended, each once; and each replica's appends in its own call order.
    const byId = new Map(read.map((e) => [e.id, e]));
    for (const e of appended) expect(byId.get(e.id)).toEqual(e);
    for (const name of ["a", "b", "c"]) {
      const mine = read.filter((e) => textOf(e).startsWith(name)).map((e) => Number(textOf(e).slice(1)));
      expect(mine).toEqual(Array.from({ length: 150 }, (_, i) => i + 1));
    }
  });

  it("an append on one replica reaches another's watcher at commit, and never the appender's own", async () => {
    const [a, b] = stores as [PostgresStore, PostgresStore];
    const heardByB: [string, number][] = [];
    const heardByA: [string, number][] = [];
    const stopB = b.watchEvents((run, id) => heardByB.push([run, id]));
    const stopA = a.watchEvents((run, id) => heardByA.push([run, id]));
    const last = await a.appendEvent("run_notify", text("hello"));
    await expect.poll(() => heardByB, { timeout: 30_000 }).toContainEqual(["run_notify", last.id]);
    stopA();
    stopB();
    expect(heardByA).toEqual([]);
  });

  it("deletes a run with everything kept for it, and purges finished runs last updated before a cutoff", async () => {
    const [a] = stores as [PostgresStore];
    const old = "2026-01-01T00:00:00.000Z";
    await a.createRun(runRecord({ id: "run_done", status: "completed", updatedAt: old }));
    await a.createRun(runRecord({ id: "run_ended", status: "idle", updatedAt: old, sessionExpiresAt: old }));
    await a.createRun(
      runRecord({ id: "run_warm", status: "idle", updatedAt: old, sessionExpiresAt: "2027-01-01T00:00:00.000Z" }),
    );
    await a.createRun(runRecord({ id: "run_new", status: "failed", updatedAt: "2026-06-01T00:00:00.000Z" }));
    await a.createRun(runRecord({ id: "run_live", status: "running", updatedAt: old }));
    await a.appendEvent("run_done", text("x"));
    await a.putPatch("run_done", { text: "p", binary: "b" });
    await a.putSummary("run_done", "s");
    await a.addTurn(turnRecord({ runId: "run_done", n: 1 }));
    expect(await a.purgeFinishedBefore("2026-03-01T00:00:00.000Z", 10)).toEqual(
      expect.arrayContaining(["run_done", "run_ended"]),
    );
    expect(await a.getRun("run_done")).toBeUndefined();
    expect(await a.readEvents("run_done")).toEqual([]);
    expect(await a.lastEventId("run_done")).toBe(0);
    expect(await a.getPatch("run_done")).toBeUndefined();
    expect(await a.getSummary("run_done")).toBeUndefined();
    for (const kept of ["run_warm", "run_new", "run_live"]) expect(await a.getRun(kept)).toBeDefined();
    expect(await a.deleteRun("run_new")).toBe(true);
    expect(await a.deleteRun("run_new")).toBe(false);
  });
});
