/**
 * What only the shared Postgres store does, beyond the contract suite (contract.test.ts):
 * replicas starting together, appenders on several replicas, NOTIFY between them, retention,
 * and fencing: the writes of a replica that lost a run's lease to another are refused.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError } from "../../../src/engine/errors.ts";
import type { NewRunEvent, RunEvent } from "../../../src/engine/events/schema.ts";
import type { RunRecord } from "../../../src/engine/run/schema.ts";
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
      "0006_lease_epoch",
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

  describe("fencing: a replica that lost a run's lease", () => {
    /** Two replicas of their own: `stalled` never registers, so the other takes its runs as a dead replica's. */
    let stalled: PostgresStore;
    let taker: PostgresStore;
    const lost: string[] = [];
    const status = (r: RunRecord): NewRunEvent => ({
      type: "run.status",
      turn: r.turnCount,
      data: { status: r.status, turn: r.turnCount },
    });
    const refused = (p: Promise<unknown>) =>
      expect(p).rejects.toSatisfy((e) => e instanceof EngineError && e.code === "lease_lost");
    beforeAll(async () => {
      stalled = await createPostgresStore({ url: db.url });
      taker = await createPostgresStore({ url: db.url });
      stores.push(stalled, taker);
      stalled.replicas.onLeaseLost((runId) => lost.push(runId));
      await taker.replicas.register("http://127.0.0.1:1");
    });

    it("has its writes and appends refused once another replica took the run, leaving the run and its log as the new owner left them", async () => {
      await stalled.createRun(runRecord({ id: "run_fenced", status: "running", turnCount: 1 }));
      await stalled.appendEvent("run_fenced", text("before the stall"));
      // The taker settles the run as a take-over does: failed, server_restart.
      expect(await taker.replicas.takeOrphans()).toContain("run_fenced");
      await taker.transition(
        "run_fenced",
        { status: "failed", error: { code: "server_restart", message: "taken over" } },
        status,
      );
      const run = await taker.getRun("run_fenced");
      const events = await taker.readEvents("run_fenced");
      const heard: [string, number][] = [];
      const stopWatch = taker.watchEvents((runId, id) => heard.push([runId, id]));
      try {
        // What the stalled replica had pending when it woke: one batch, refused whole.
        const late = [
          stalled.appendEvent("run_fenced", text("after the stall")),
          stalled.updateRun("run_fenced", { summary: "stale" }),
          stalled.transition("run_fenced", { status: "idle" }, status),
          stalled.appendEvent("run_fenced", text("after the stall, again")),
        ];
        for (const settled of await Promise.allSettled(late)) {
          expect(settled.status).toBe("rejected");
          expect(settled.status === "rejected" && (settled.reason as EngineError).code).toBe("lease_lost");
        }
        // And whatever it writes later, to the run, its turns, its patch or its secrets.
        await refused(stalled.appendEvent("run_fenced", text("later")));
        await refused(stalled.updateTurn("run_fenced", 1, { status: "cancelled" }));
        await refused(stalled.putPatch("run_fenced", { text: "stale patch", binary: "stale patch" }));
        await refused(stalled.putSummary("run_fenced", "stale summary"));
        await refused(stalled.deleteSecrets("run_fenced"));
        expect(await taker.getRun("run_fenced")).toEqual(run);
        expect(await taker.readEvents("run_fenced")).toEqual(events);
        expect(await taker.lastEventId("run_fenced")).toBe(events.length);
        expect(await taker.getPatch("run_fenced")).toBeUndefined();
        expect(events.map((e) => e.id)).toEqual([1, 2]);
        // No NOTIFY for what was refused: the stalled replica's next commit is the first the taker hears.
        const marker = await stalled.appendEvent("run_marker", text("marker"));
        await expect.poll(() => heard, { timeout: 30_000 }).toContainEqual(["run_marker", marker.id]);
        expect(heard.filter(([runId]) => runId === "run_fenced")).toEqual([]);
      } finally {
        stopWatch();
      }
      expect(lost.filter((id) => id === "run_fenced")).toEqual(["run_fenced"]);
    });

    it("names the run's holder to the others: stale while it waits to be taken over, then the taker", async () => {
      await stalled.createRun(runRecord({ id: "run_holder", status: "running", turnCount: 1 }));
      // Its holder never heartbeats: a request there now must wait for the take-over, not serve it.
      expect(await taker.replicas.ownerElsewhere("run_holder")).toBe("stale");
      expect(await taker.replicas.takeOrphans()).toContain("run_holder");
      expect(await taker.replicas.ownerElsewhere("run_holder")).toBeUndefined();
      expect(await stalled.replicas.ownerElsewhere("run_holder")).toEqual({
        id: taker.replicas.replicaId,
        url: "http://127.0.0.1:1",
      });
      await taker.transition("run_holder", { status: "completed" }, status);
      expect(await stalled.replicas.ownerElsewhere("run_holder")).toBeUndefined();
      expect(await stalled.replicas.heartbeat()).toEqual(["run_holder"]);
      await stalled.replicas.letGo("run_holder");
    });

    it("learns from its heartbeat which runs it lost when no write is pending, once, and not those it finished itself", async () => {
      await stalled.createRun(runRecord({ id: "run_hb_lost", status: "running", turnCount: 1 }));
      await stalled.createRun(runRecord({ id: "run_hb_done", status: "running", turnCount: 1 }));
      await stalled.transition("run_hb_done", { status: "completed" }, status);
      const taken = await taker.replicas.takeOrphans();
      expect(taken).toContain("run_hb_lost");
      expect(taken).not.toContain("run_hb_done");
      expect(await stalled.replicas.heartbeat()).toEqual(["run_hb_lost"]);
      expect(await stalled.replicas.heartbeat()).toEqual([]);
      expect(lost.filter((id) => id.startsWith("run_hb"))).toEqual(["run_hb_lost"]);
      // Once its session here is gone, the run is forgotten: a later request here is not fenced.
      await stalled.replicas.letGo("run_hb_lost");
      await stalled.appendEvent("run_hb_lost", text("a request served here later"));
    });

    it("holds a run it created until it starts or queues it: no take-over loop takes it for an orphan meanwhile", async () => {
      await stalled.replicas.register("http://127.0.0.1:2");
      await stalled.createRun(runRecord({ id: "run_created", status: "queued" }));
      expect(await taker.replicas.takeOrphans()).not.toContain("run_created");
      // Queued for any replica: leased to none until one claims it.
      await stalled.replicas.enqueue("run_created", { prompt: "p" });
      expect(await taker.replicas.takeOrphans()).not.toContain("run_created");
      expect((await taker.replicas.claimQueued(10)).map((c) => c.runId)).toEqual(["run_created"]);
      await taker.transition("run_created", { status: "running" }, status);
      // The creator let it go when it queued it: its heartbeat does not count it lost.
      expect(await stalled.replicas.heartbeat()).toEqual([]);
    });
  });
});
