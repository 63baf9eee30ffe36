/**
 * `engine.follow`: a run's stored events after a cursor, then the live ones, with nothing
 * missed or repeated. The real engine (local sandbox, real `opencode serve`, scripted model),
 * and then `followRun` itself over the real store and a bus it drives, for the gap and
 * release paths a run cannot be made to take on demand.
 */
import { EventEmitter } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError } from "../../../src/engine/errors.ts";
import type { RunEvent } from "../../../src/engine/events/schema.ts";
import type { RunFollow } from "../../../src/engine/index.ts";
import { followRun, PAGE_BYTES, type FollowDeps } from "../../../src/engine/run/follow.ts";
import { createStreamSlots } from "../../../src/engine/run/streams.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { makeRepo, tempDir, waitFor } from "../../helpers.ts";
import { startScriptedModel, type ScriptedModel } from "../../fixtures/scripted-model.ts";
import { openTestPatchbay, type TestPatchbay } from "../../support/patchbay.ts";

const OWNER = "owner-1";
const STEPS = 6;

let model: ScriptedModel;
let pb: TestPatchbay;
let runId: string;

beforeAll(async () => {
  model = await startScriptedModel();
  const repoBase = tempDir("repos");
  makeRepo(repoBase, "acme/web", { "README.md": "# Web\n" });
  pb = await openTestPatchbay({
    PATCHBAY_GIT_BASE_URL: `file://${repoBase}`,
    PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
    OPENROUTER_API_KEY: "sk-or-v1-follow-0123456789abcdef",
    PATCHBAY_SESSION_TTL_MS: "60000",
    PATCHBAY_TURN_TIMEOUT_MS: "60000",
  });
  // Slow steps, so a follow started mid-turn replays some events and receives the rest live.
  model.script("test/steps", [
    [
      ...Array.from({ length: STEPS }, (_, i) => ({
        toolCalls: [{ name: "bash", args: { command: `echo step ${i}`, description: `step ${i}` } }],
        delayMs: 300,
      })),
      { text: "All steps done." },
    ],
  ]);
});

afterAll(async () => {
  await pb?.close();
  await model?.close();
});

/** Every event of a follow, with a deadline so a follow that never ends fails the test instead of hanging it. */
async function drain(follow: RunFollow, timeoutMs = 150_000): Promise<RunEvent[]> {
  const timer = setTimeout(() => follow.close(), timeoutMs);
  const events: RunEvent[] = [];
  try {
    for await (const ev of follow) events.push(ev);
  } finally {
    clearTimeout(timer);
  }
  return events;
}

const statusOf = (ev: RunEvent | undefined) => (ev?.type === "run.status" ? ev.data.status : undefined);

describe("engine.follow", () => {
  it("replays the stored events and continues live, with no gap and no duplicate, until the turn ends at idle", async () => {
    const run = await pb.engine.startRun(OWNER, { repository: "acme/web", prompt: "steps", modelId: "test/steps" });
    runId = run.id;
    // One follow from the start at once, one from the start once a few events are stored.
    const early = drain(await pb.engine.follow(OWNER, runId, { until: "turn" }));
    await waitFor(async () => (await pb.engine.events(OWNER, runId, 0)).length >= 6, {
      what: "a few events",
      timeoutMs: 120_000,
    });
    const storedBefore = (await pb.engine.events(OWNER, runId, 0)).length;
    const late = await drain(await pb.engine.follow(OWNER, runId, { until: "turn" }));
    expect((await pb.engine.getRun(OWNER, runId)).status).toBe("idle");
    const stored = await pb.engine.events(OWNER, runId, 0);
    expect(stored.length).toBeGreaterThan(storedBefore); // some of it did arrive live
    for (const events of [late, await early]) {
      expect(events.map((e) => e.id)).toEqual(stored.map((_, i) => i + 1));
      expect(events).toEqual(stored);
      expect(statusOf(events.at(-1))).toBe("idle");
    }
  }, 300_000);

  it("resumes after a cursor in the middle of the log", async () => {
    const stored = await pb.engine.events(OWNER, runId, 0);
    const cursor = Math.floor(stored.length / 2);
    const events = await drain(await pb.engine.follow(OWNER, runId, { after: cursor, until: "turn" }));
    expect(events).toEqual(stored.slice(cursor));
  });

  it("started on an idle run with nothing after the cursor, until turn ends at once", async () => {
    const last = (await pb.engine.events(OWNER, runId, 0)).at(-1)!.id;
    const started = Date.now();
    expect(await drain(await pb.engine.follow(OWNER, runId, { after: last, until: "turn" }), 5000)).toEqual([]);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("a cursor past the end is event_not_found, another owner's run is run_not_found, both before it resolves", async () => {
    const last = (await pb.engine.events(OWNER, runId, 0)).at(-1)!.id;
    await expect(pb.engine.follow(OWNER, runId, { after: last + 1 })).rejects.toMatchObject({
      code: "event_not_found",
      details: { lastEventId: last },
    });
    await expect(pb.engine.follow(OWNER, runId, { after: -1 })).rejects.toMatchObject({ code: "event_not_found" });
    await expect(pb.engine.follow("someone-else", runId)).rejects.toMatchObject({ code: "run_not_found" });
    await expect(pb.engine.follow(OWNER, "run_nope")).rejects.toMatchObject({ code: "run_not_found" });
  });

  it("aborting the signal ends the iteration without an error; so does close()", async () => {
    const last = (await pb.engine.events(OWNER, runId, 0)).at(-1)!.id;
    const abort = new AbortController();
    const aborted = drain(await pb.engine.follow(OWNER, runId, { after: last, signal: abort.signal }));
    setTimeout(() => abort.abort(), 200);
    expect(await aborted).toEqual([]);

    const follow = await pb.engine.follow(OWNER, runId, { after: last });
    const closed = drain(follow);
    setTimeout(() => follow.close(), 200);
    expect(await closed).toEqual([]);
  });

  it("until terminal ends after the completed status; a later follow of the finished run ends at once", async () => {
    const last = (await pb.engine.events(OWNER, runId, 0)).at(-1)!.id;
    const following = drain(await pb.engine.follow(OWNER, runId, { after: last }));
    await pb.engine.endSession(OWNER, runId);
    const events = await following;
    expect(events).toEqual(await pb.engine.events(OWNER, runId, last));
    expect(statusOf(events.at(-1))).toBe("completed");
    const end = events.at(-1)!.id;
    expect(await drain(await pb.engine.follow(OWNER, runId, { after: end }), 5000)).toEqual([]);
  });
});

describe("followRun over the store and a bus", () => {
  /** A run of its own in the engine's store, whose events the test appends and publishes itself. */
  async function ownRun() {
    const template = (await pb.store.getRun(runId))!;
    const id = `run_follow${Math.random().toString(36).slice(2, 10)}`;
    await pb.store.createRun({ ...template, id, status: "running", idempotencyKey: undefined });
    const bus = new EventEmitter();
    const deps: FollowDeps = {
      store: pb.store,
      slots: createStreamSlots({ max: 3 }),
      subscribe: (rid, listener) => {
        bus.on(rid, listener);
        return () => void bus.off(rid, listener);
      },
      ownedRun: async (owner, rid) => {
        const r = await pb.store.getRun(rid);
        if (!r || r.ownerId !== owner) throw new EngineError("run_not_found", `run ${rid} not found`);
        return r;
      },
    };
    const append = async (message: string, publish = true) => {
      const ev = await pb.store.appendEvent(id, { type: "builder.event", turn: 1, data: { kind: "log", message } });
      if (publish) bus.emit(id, ev);
      return ev;
    };
    const finish = async () => {
      const ev = await pb.store.appendEvent(id, {
        type: "run.status",
        turn: 1,
        data: { status: "completed", turn: 1 },
      });
      bus.emit(id, ev);
    };
    return { id, bus, deps, append, finish };
  }

  it("reads a gap in the live events from the store before going on", async () => {
    const r = await ownRun();
    await r.append("one");
    const follow = await followRun(r.deps, OWNER, r.id);
    const it = follow[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ id: 1 });
    const pending = it.next(); // waits live
    await r.append("two", false); // stored, never published
    await r.append("three");
    expect((await pending).value).toMatchObject({ id: 2 });
    expect((await it.next()).value).toMatchObject({ id: 3 });
    await r.finish();
    expect((await it.next()).value).toMatchObject({ id: 4, type: "run.status" });
    expect((await it.next()).done).toBe(true);
  });

  it("a consumer far behind still gets every event once, and the subscription ends with the iteration", async () => {
    const r = await ownRun();
    const follow = await followRun(r.deps, OWNER, r.id);
    expect(r.bus.listenerCount(r.id)).toBe(1);
    for (let i = 0; i < 2500; i++) await r.append(`event ${i}`); // more than the live buffer holds
    await r.finish();
    const events = await drain(follow);
    expect(events.map((e) => e.id)).toEqual(Array.from({ length: 2501 }, (_, i) => i + 1));
    expect(r.bus.listenerCount(r.id)).toBe(0);
  });

  it("breaking out, close() and a refused cursor each release the subscription", async () => {
    const r = await ownRun();
    await r.append("one");
    await r.append("two");
    for await (const ev of await followRun(r.deps, OWNER, r.id)) if (ev.id === 1) break;
    expect(r.bus.listenerCount(r.id)).toBe(0);
    (await followRun(r.deps, OWNER, r.id)).close();
    expect(r.bus.listenerCount(r.id)).toBe(0);
    await expect(followRun(r.deps, OWNER, r.id, { after: 3 })).rejects.toMatchObject({ code: "event_not_found" });
    expect(r.bus.listenerCount(r.id)).toBe(0);
  });

  it("a status the record shows before its event is appended is waited for, not assumed", async () => {
    const r = await ownRun();
    await r.append("one");
    // The record says completed; the completed event is not in the log yet.
    await pb.store.updateRun(r.id, { status: "completed" });
    const following = drain(await followRun(r.deps, OWNER, r.id, { after: 1 }), 5000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await r.finish();
    expect((await following).map((e) => e.id)).toEqual([2]);
  });

  it("each open follow holds one of its owner's slots: past the cap too_many_streams, freed however the follow ends", async () => {
    const r = await ownRun();
    await r.append("one");
    const open = [await followRun(r.deps, OWNER, r.id), await followRun(r.deps, OWNER, r.id)];
    const third = await followRun(r.deps, OWNER, r.id);
    await expect(followRun(r.deps, OWNER, r.id)).rejects.toMatchObject({
      code: "too_many_streams",
      details: { limit: 3, retryAfterSeconds: expect.any(Number) },
    });
    // Another owner has slots of its own (and the run is not theirs).
    await expect(followRun(r.deps, "someone-else", r.id)).rejects.toMatchObject({ code: "run_not_found" });
    // Freed by close(), by a refused cursor (never taken for long), and by the end of the run.
    open[0]!.close();
    await expect(followRun(r.deps, OWNER, r.id, { after: 9 })).rejects.toMatchObject({ code: "event_not_found" });
    const fourth = await followRun(r.deps, OWNER, r.id);
    const ending = Promise.all([drain(open[1]!), drain(third), drain(fourth)]);
    await r.finish();
    await ending;
    expect(r.deps.slots.open(OWNER)).toBe(0);
    // At the end of a finished run a follow is finished at once and takes no slot.
    await pb.store.updateRun(r.id, { status: "completed" });
    const done = await followRun(r.deps, OWNER, r.id, { after: 2 });
    expect(done.finished).toBe(true);
    expect(r.deps.slots.open(OWNER)).toBe(0);
    expect(await drain(done)).toEqual([]);
  });

  it("replays a log of large events in pages bounded by bytes", async () => {
    const r = await ownRun();
    const big = "x".repeat(200 * 1024);
    for (let i = 0; i < 30; i++)
      await pb.store.appendEvent(r.id, { type: "builder.event", turn: 1, data: { kind: "text", text: big } });
    await r.finish();
    const pages: number[] = [];
    const store: RunStore = Object.create(pb.store);
    store.readEvents = async (...args) => {
      const page = await pb.store.readEvents(...args);
      pages.push(page.reduce((n, e) => n + JSON.stringify(e).length, 0));
      return page;
    };
    const events = await drain(await followRun({ ...r.deps, store }, OWNER, r.id));
    expect(events.map((e) => e.id)).toEqual(Array.from({ length: 31 }, (_, i) => i + 1));
    expect(pages.length).toBeGreaterThan(5);
    expect(Math.max(...pages)).toBeLessThanOrEqual(PAGE_BYTES);
  });
});
