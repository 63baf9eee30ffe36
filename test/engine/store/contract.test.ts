/**
 * The RunStore contract: one suite every store implementation passes unchanged. Add an
 * implementation with one more `describeStoreContract(...)` call at the bottom of this file.
 * What only one implementation does (the embedded store's files, modes, migration and
 * torn-line repair) is tested next to it (sqlite.test.ts, migrate.test.ts, events.test.ts).
 */
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { NewRunEvent, RunEvent } from "../../../src/engine/events/schema.ts";
import type { GroupRecord } from "../../../src/engine/run/group-schema.ts";
import type { RunRecord } from "../../../src/engine/run/schema.ts";
import { createPostgresStore } from "../../../src/engine/store/pg/postgres.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { ApiKeyRecord, RunStore } from "../../../src/engine/store/store.ts";
import type { DeliveryRecord, WebhookRecord } from "../../../src/engine/webhooks/schema.ts";
import { tempDir } from "../../helpers.ts";
import { createTestDatabase, emptyDatabase, type TestDatabase } from "../../support/postgres.ts";
import { runRecord, turnRecord } from "./fixtures.ts";

/** A store opened for one test. */
interface StoreUnderTest {
  store: RunStore;
  /** Close the store and open the same data again, as a restart does. Omitted by a store that keeps nothing. */
  reopen?: () => Promise<RunStore>;
  /**
   * Restart as after a crash in the middle of appending the next event of `runId` (for a
   * file, a torn last line; for a database, a transaction that never committed).
   */
  crashDuringAppend?: (runId: string) => Promise<RunStore>;
  /** Close whichever store is open (close is idempotent) and remove its data. */
  cleanup: () => Promise<void>;
}

interface StoreOpenOptions {
  /** The clock that stamps events (`at`). */
  now: () => Date;
}

const NOW = "2026-01-02T03:04:05.000Z";
const text = (t: string): NewRunEvent => ({ type: "builder.event", turn: 1, data: { kind: "text", text: t } });
const textOf = (e: RunEvent) => (e.type === "builder.event" && e.data.kind === "text" ? e.data.text : "");
const ids = (events: { id: number }[]) => events.map((e) => e.id);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const statusEvent = (run: Pick<RunRecord, "status" | "turnCount">): NewRunEvent => ({
  type: "run.status",
  turn: run.turnCount,
  data: { status: run.status, turn: run.turnCount },
});

function keyRecord(over: Partial<ApiKeyRecord> & { id: string }): ApiKeyRecord {
  return {
    name: "ci",
    ownerId: "own_a",
    hash: "ab".repeat(32),
    prefix: "pb_abc",
    scopes: ["read:builder"],
    createdAt: "2026-01-01T00:00:00.000Z",
    revokedAt: null,
    ...over,
  };
}

function describeStoreContract(name: string, open: (opts: StoreOpenOptions) => Promise<StoreUnderTest>): void {
  describe(`RunStore contract: ${name}`, () => {
    let h: StoreUnderTest;
    let store: RunStore;
    beforeEach(async () => {
      h = await open({ now: () => new Date(NOW) });
      store = h.store;
    });
    afterEach(async () => {
      await h.cleanup();
    });

    /** The store after a restart, or the same store when this implementation keeps nothing. */
    async function restarted(): Promise<RunStore> {
      if (h.reopen) store = await h.reopen();
      return store;
    }

    describe("runs", () => {
      it("a created run reads back equal; an unknown id reads as undefined; an id is created once", async () => {
        const run = runRecord({ id: "run_1", idempotencyKey: "idem-1", idempotencyHash: "h1" });
        await store.createRun(run);
        expect(await store.getRun("run_1")).toEqual(run);
        expect(await store.getRun("run_2")).toBeUndefined();
        await expect(store.createRun(runRecord({ id: "run_1" }))).rejects.toThrow();
        expect(await store.getRun("run_1")).toEqual(run);
      });

      it("an update applies a partial patch, returns the updated record and keeps the id", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        const updated = await store.updateRun("run_1", { status: "running", turnCount: 1, id: "run_other" });
        expect(updated).toMatchObject({ id: "run_1", status: "running", turnCount: 1, modelId: "test/model" });
        expect(await store.getRun("run_1")).toEqual(updated);
        expect(await store.getRun("run_other")).toBeUndefined();
      });

      it("returns copies: changing a returned run does not change the store", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        const run = (await store.getRun("run_1"))!;
        run.status = "failed";
        expect((await store.getRun("run_1"))!.status).toBe("queued");
      });

      it("updates of a missing run fail with run_not_found", async () => {
        await expect(store.updateRun("nope", { status: "running" })).rejects.toMatchObject({ code: "run_not_found" });
        await expect(store.updateTurn("nope", 1, { status: "done" })).rejects.toMatchObject({ code: "run_not_found" });
      });

      it("refuses an invalid record instead of storing what would not load again", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        await expect(store.updateRun("run_1", { status: "bogus" as never })).rejects.toMatchObject({
          code: "internal",
          message: expect.stringContaining("status"),
        });
        expect((await store.getRun("run_1"))!.status).toBe("queued");
      });

      it("lists an owner's runs newest first, page by page, with an opaque cursor", async () => {
        // Two runs share a createdAt: the id breaks the tie so no run is skipped or repeated.
        const times = [
          "2026-01-01T00:00:01Z",
          "2026-01-01T00:00:03Z",
          "2026-01-01T00:00:02Z",
          "2026-01-01T00:00:03Z",
          "2026-01-01T00:00:05Z",
        ];
        for (const [i, t] of times.entries()) await store.createRun(runRecord({ id: `run_${i}`, createdAt: t }));
        await store.createRun(runRecord({ id: "run_other", ownerId: "own_b", createdAt: "2026-01-01T00:00:09Z" }));

        const seen: string[] = [];
        let cursor: string | undefined;
        let pages = 0;
        do {
          const page = await store.listRuns("own_a", { limit: 2, ...(cursor ? { cursor } : {}) });
          seen.push(...page.runs.map((r) => r.id));
          cursor = page.nextCursor ?? undefined;
          pages++;
        } while (cursor);
        expect(seen).toEqual(["run_4", "run_3", "run_1", "run_2", "run_0"]);
        expect(pages).toBe(3);

        const exact = await store.listRuns("own_a", { limit: 5 });
        expect(exact.nextCursor).toBeNull();
        expect((await store.listRuns("own_c", { limit: 5 })).runs).toEqual([]);
        await expect(store.listRuns("own_a", { limit: 2, cursor: "not-a-cursor" })).rejects.toMatchObject({
          code: "invalid_request",
        });
        await expect(store.listRuns("own_a", { limit: 0 })).rejects.toMatchObject({ code: "invalid_request" });
      });

      it("a cursor stays valid when runs are created after the page it came from", async () => {
        for (let i = 1; i <= 4; i++)
          await store.createRun(runRecord({ id: `run_${i}`, createdAt: `2026-01-01T00:00:0${i}Z` }));
        const first = await store.listRuns("own_a", { limit: 2 });
        expect(first.runs.map((r) => r.id)).toEqual(["run_4", "run_3"]);
        await store.createRun(runRecord({ id: "run_5", createdAt: "2026-01-01T00:00:05Z" }));
        const second = await store.listRuns("own_a", { limit: 2, cursor: first.nextCursor! });
        expect(second.runs.map((r) => r.id)).toEqual(["run_2", "run_1"]);
        expect(second.nextCursor).toBeNull();
      });

      it("finds runs by status across owners and counts an owner's active runs", async () => {
        const statuses = ["queued", "running", "idle", "completed", "failed", "cancelled"] as const;
        for (const [i, status] of statuses.entries()) await store.createRun(runRecord({ id: `run_${i}`, status }));
        await store.createRun(runRecord({ id: "run_b", ownerId: "own_b", status: "running" }));
        expect((await store.runsByStatus(["running"])).map((r) => r.id).sort()).toEqual(["run_1", "run_b"]);
        expect(await store.countActiveRuns("own_a")).toBe(3);
        expect(await store.countActiveRuns("own_b")).toBe(1);
        // Counts follow updates.
        await store.updateRun("run_1", { status: "completed" });
        expect(await store.countActiveRuns("own_a")).toBe(2);
        expect((await store.runsByStatus(["queued", "idle"])).map((r) => r.id).sort()).toEqual(["run_0", "run_2"]);
      });

      it("finds the runs updated since a time, of every owner and status", async () => {
        await store.createRun(runRecord({ id: "run_old", updatedAt: "2026-01-01T00:00:00.000Z", status: "completed" }));
        await store.createRun(runRecord({ id: "run_new", updatedAt: "2026-01-03T00:00:00.000Z", status: "failed" }));
        await store.createRun(runRecord({ id: "run_b", ownerId: "own_b", updatedAt: "2026-01-02T00:00:00.000Z" }));
        const since = async (t: string) => (await store.runsUpdatedSince(t)).map((r) => r.id).sort();
        expect(await since("2026-01-02T00:00:00.000Z")).toEqual(["run_b", "run_new"]);
        await store.updateRun("run_old", { updatedAt: "2026-01-04T00:00:00.000Z" });
        expect(await since("2026-01-02T00:00:00.000Z")).toEqual(["run_b", "run_new", "run_old"]);
        expect(await since("2027-01-01T00:00:00.000Z")).toEqual([]);
      });

      it("finds a run by its owner's idempotency key, never another owner's", async () => {
        await store.createRun(runRecord({ id: "run_1", idempotencyKey: "idem-1", idempotencyHash: "h1" }));
        await store.createRun(runRecord({ id: "run_2", ownerId: "own_b", idempotencyKey: "idem-2" }));
        expect(await store.findRunByIdempotencyKey("own_a", "idem-1")).toMatchObject({
          id: "run_1",
          idempotencyHash: "h1",
        });
        expect(await store.findRunByIdempotencyKey("own_b", "idem-1")).toBeUndefined();
        expect(await store.findRunByIdempotencyKey("own_a", "idem-2")).toBeUndefined();
        expect(await store.findRunByIdempotencyKey("own_b", "idem-2")).toMatchObject({ id: "run_2" });
      });
    });

    describe("turns, keys, repositories and secrets", () => {
      it("lists a run's turns in order of n and updates one; a turn number is added once", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        await store.addTurn(turnRecord({ runId: "run_1", n: 2, prompt: "second" }));
        await store.addTurn(turnRecord({ runId: "run_1", n: 1, prompt: "first" }));
        await store.addTurn(turnRecord({ runId: "run_2", n: 1, prompt: "other run" }));
        await expect(store.addTurn(turnRecord({ runId: "run_1", n: 1 }))).rejects.toThrow();
        await store.updateTurn("run_1", 1, { status: "done", summary: "ok" });
        expect(await store.listTurns("run_1")).toEqual([
          turnRecord({ runId: "run_1", n: 1, prompt: "first", status: "done", summary: "ok" }),
          turnRecord({ runId: "run_1", n: 2, prompt: "second" }),
        ]);
        expect(await store.listTurns("run_9")).toEqual([]);
        await expect(store.updateTurn("run_1", 3, { status: "done" })).rejects.toMatchObject({
          code: "run_not_found",
        });
      });

      it("finds a key by hash, lists keys, and updates one without changing its hash", async () => {
        await store.createKey(keyRecord({ id: "key_1" }));
        await store.createKey(keyRecord({ id: "key_2", hash: "cd".repeat(32), name: "other" }));
        expect(await store.findKeyByHash("ab".repeat(32))).toEqual(keyRecord({ id: "key_1" }));
        expect(await store.findKeyByHash("ef".repeat(32))).toBeUndefined();
        expect((await store.listKeys()).map((k) => k.id).sort()).toEqual(["key_1", "key_2"]);
        const revoked = await store.updateKey("key_1", {
          revokedAt: "2026-01-03T00:00:00.000Z",
          hash: "ff".repeat(32),
        });
        expect(revoked).toMatchObject({ id: "key_1", revokedAt: "2026-01-03T00:00:00.000Z", hash: "ab".repeat(32) });
        expect(await store.findKeyByHash("ab".repeat(32))).toEqual(revoked);
        expect(await store.findKeyByHash("ff".repeat(32))).toBeUndefined();
        expect(await store.updateKey("key_9", { name: "x" })).toBeUndefined();
      });

      it("keeps a key's repository allow-list, and refuses a malformed one", async () => {
        const scoped = keyRecord({ id: "key_r", hash: "cd".repeat(32), repos: ["acme/*", "org/name"] });
        await store.createKey(scoped);
        expect(await store.findKeyByHash("cd".repeat(32))).toEqual(scoped);
        expect((await store.listKeys()).find((k) => k.id === "key_r")!.repos).toEqual(["acme/*", "org/name"]);
        await expect(
          store.createKey(keyRecord({ id: "key_bad", hash: "ee".repeat(32), repos: ["https://evil/*"] })),
        ).rejects.toThrow();
        expect(await store.findKeyByHash("ee".repeat(32))).toBeUndefined();
      });

      it("finds a repository by id and by name in any case; a rename forgets the old name", async () => {
        await store.upsertRepository({ id: "42", fullName: "Octo/Demo", updatedAt: "2026-01-01T00:00:00.000Z" });
        expect(await store.getRepositoryById("42")).toMatchObject({ fullName: "Octo/Demo" });
        expect(await store.getRepositoryByName("octo/demo")).toMatchObject({ id: "42" });
        expect(await store.getRepositoryByName("OCTO/DEMO")).toMatchObject({ id: "42" });
        await store.upsertRepository({ id: "42", fullName: "octo/renamed", updatedAt: "2026-01-02T00:00:00.000Z" });
        expect(await store.getRepositoryByName("octo/demo")).toBeUndefined();
        expect(await store.getRepositoryByName("Octo/Renamed")).toMatchObject({ id: "42" });
        expect(await store.getRepositoryById("43")).toBeUndefined();
      });

      it("keeps a run's secrets by name, replaces one by name, and deletes all of a run's at once", async () => {
        const secret = (runId: string, name: string, data: string) => ({
          runId,
          name,
          iv: "aXY=",
          tag: "dGFn",
          data,
        });
        await store.putSecret(secret("run_1", "openrouter", "b2xk"));
        await store.putSecret(secret("run_1", "openrouter", "bmV3"));
        await store.putSecret(secret("run_1", "resume", "cmVz"));
        await store.putSecret(secret("run_2", "openrouter", "b3RoZXI="));
        expect(await store.getSecret("run_1", "openrouter")).toEqual(secret("run_1", "openrouter", "bmV3"));
        expect(await store.getSecret("run_1", "missing")).toBeUndefined();
        await store.deleteSecrets("run_1");
        expect(await store.getSecret("run_1", "openrouter")).toBeUndefined();
        expect(await store.getSecret("run_1", "resume")).toBeUndefined();
        expect(await store.getSecret("run_2", "openrouter")).toMatchObject({ data: "b3RoZXI=" });
        await store.deleteSecrets("run_9"); // nothing to delete is not an error
      });

      it("keeps an owner's secrets by name, apart from other owners', across a reopen, and deletes one", async () => {
        const secret = (ownerId: string, name: string, data: string, updatedAt = "2026-01-01T00:00:00.000Z") => ({
          ownerId,
          name,
          iv: "aXY=",
          tag: "dGFn",
          data,
          createdAt: "2026-01-01T00:00:00.000Z",
          updatedAt,
        });
        await store.putOwnerSecret(secret("own_a", "NPM_TOKEN", "b2xk"));
        await store.putOwnerSecret(secret("own_a", "NPM_TOKEN", "bmV3", "2026-01-02T00:00:00.000Z"));
        await store.putOwnerSecret(secret("own_a", "API_KEY", "YQ=="));
        await store.putOwnerSecret(secret("own_b", "NPM_TOKEN", "b3RoZXI="));
        expect(await store.getOwnerSecret("own_a", "NPM_TOKEN")).toEqual(
          secret("own_a", "NPM_TOKEN", "bmV3", "2026-01-02T00:00:00.000Z"),
        );
        expect(await store.getOwnerSecret("own_c", "NPM_TOKEN")).toBeUndefined();
        expect((await store.listOwnerSecrets("own_a")).map((s) => s.name)).toEqual(["API_KEY", "NPM_TOKEN"]);
        expect(await store.listOwnerSecrets("own_c")).toEqual([]);
        // A run's secrets and an owner's are kept apart: deleting a run's leaves the owner's.
        await store.deleteSecrets("own_a");

        store = await restarted();
        expect(await store.getOwnerSecret("own_b", "NPM_TOKEN")).toMatchObject({ data: "b3RoZXI=" });
        expect(await store.deleteOwnerSecret("own_a", "NPM_TOKEN")).toBe(true);
        expect(await store.deleteOwnerSecret("own_a", "NPM_TOKEN")).toBe(false);
        expect(await store.deleteOwnerSecret("own_b", "MISSING")).toBe(false);
        expect((await store.listOwnerSecrets("own_a")).map((s) => s.name)).toEqual(["API_KEY"]);

        store = await restarted();
        expect(await store.getOwnerSecret("own_a", "NPM_TOKEN")).toBeUndefined();
        expect(await store.getOwnerSecret("own_b", "NPM_TOKEN")).toBeDefined();
        await expect(store.putOwnerSecret({ ...secret("own_a", "X", "eA=="), iv: 1 } as never)).rejects.toMatchObject({
          code: "internal",
        });
      });

      it("keeps an owner's budget apart from other owners', replaces it whole, and keeps it and a run's limits across a reopen", async () => {
        const budget = (ownerId: string, spentUsd: number) => ({
          ownerId,
          dailyCostUsd: 5,
          spentDay: "2026-01-01",
          spentUsd,
          updatedAt: "2026-01-01T00:00:00.000Z",
        });
        expect(await store.getOwnerBudget("own_a")).toBeUndefined();
        await store.putOwnerBudget(budget("own_a", 1));
        await store.putOwnerBudget(budget("own_a", 2.5));
        await store.putOwnerBudget({ ...budget("own_b", 0), dailyCostUsd: null, spentDay: null });
        await store.createRun(
          runRecord({
            id: "run_limits",
            limits: { maxTokens: 100, onExceeded: "pause" },
            usage: { inputTokens: 1, outputTokens: 2, costUsd: 0.5, costKnown: false, durationMs: 30 },
          }),
        );

        store = await restarted();
        expect(await store.getOwnerBudget("own_a")).toEqual(budget("own_a", 2.5));
        expect(await store.getOwnerBudget("own_b")).toMatchObject({ dailyCostUsd: null, spentDay: null });
        expect(await store.getRun("run_limits")).toMatchObject({
          limits: { maxTokens: 100, onExceeded: "pause" },
          usage: { costKnown: false, durationMs: 30 },
        });
        await expect(store.putOwnerBudget({ ...budget("own_c", 0), spentUsd: "1" } as never)).rejects.toMatchObject({
          code: "internal",
        });
      });

      it("keeps a group of attempts, updates it partially, across a reopen; a missing one is group_not_found", async () => {
        const group: GroupRecord = {
          id: "grp_1",
          ownerId: "own_a",
          runIds: ["run_1", "run_2", "run_3"],
          validationMode: "tests",
          status: "running",
          ranking: null,
          bestRunId: null,
          createdAt: NOW,
          settledAt: null,
        };
        await store.createGroup(group);
        await expect(store.createGroup(group)).rejects.toMatchObject({ code: "internal" });
        expect(await store.getGroup("grp_1")).toEqual(group);
        expect(await store.getGroup("grp_2")).toBeUndefined();
        const ranking = [
          { runId: "run_2", rank: 1, validation: "passed" as const, diffSize: 3 },
          { runId: "run_1", rank: 2, validation: "failed" as const, diffSize: 1 },
          { runId: "run_3", rank: 3, validation: null, diffSize: 0 },
        ];
        const settled = await store.updateGroup("grp_1", {
          status: "settled",
          ranking,
          bestRunId: "run_2",
          settledAt: NOW,
        });
        expect(settled).toEqual({ ...group, status: "settled", ranking, bestRunId: "run_2", settledAt: NOW });
        settled.runIds.push("run_4"); // a copy: the store does not change
        store = await restarted();
        expect(await store.getGroup("grp_1")).toEqual({
          ...group,
          status: "settled",
          ranking,
          bestRunId: "run_2",
          settledAt: NOW,
        });
        await expect(store.updateGroup("grp_9", { status: "settled" })).rejects.toMatchObject({
          code: "group_not_found",
        });
        await expect(store.updateGroup("grp_1", { status: "done" as never })).rejects.toMatchObject({
          code: "internal",
        });
      });

      it("keeps runs, turns, keys, repositories, secrets and patches across a reopen", async () => {
        await store.createRun(runRecord({ id: "run_1", idempotencyKey: "idem-1" }));
        await store.updateRun("run_1", { status: "running", startedAt: "2026-01-01T00:00:01.000Z" });
        await store.addTurn(turnRecord({ runId: "run_1", n: 1 }));
        await store.updateTurn("run_1", 1, { status: "done", summary: "ok" });
        await store.createKey(keyRecord({ id: "key_1" }));
        await store.createKey(keyRecord({ id: "key_2", hash: "cd".repeat(32), repos: ["acme/*", "org/name"] }));
        await store.upsertRepository({ id: "42", fullName: "Octo/Demo", updatedAt: "2026-01-01T00:00:00.000Z" });
        await store.putSecret({ runId: "run_1", name: "openrouter", iv: "aXY=", tag: "dGFn", data: "ZGF0YQ==" });
        await store.putPatch("run_1", {
          text: "diff --git a/x b/x\n",
          binary: "diff --git a/x b/x\nGIT binary patch\n",
        });

        store = await restarted();
        expect(await store.getRun("run_1")).toMatchObject({ status: "running", startedAt: "2026-01-01T00:00:01.000Z" });
        expect(await store.listTurns("run_1")).toEqual([
          expect.objectContaining({ n: 1, status: "done", summary: "ok" }),
        ]);
        expect(await store.findKeyByHash("ab".repeat(32))).toMatchObject({ id: "key_1", name: "ci" });
        expect((await store.findKeyByHash("ab".repeat(32)))!.repos).toBeUndefined();
        expect((await store.findKeyByHash("cd".repeat(32)))!.repos).toEqual(["acme/*", "org/name"]);
        expect(await store.getRepositoryByName("octo/demo")).toMatchObject({ id: "42" });
        expect(await store.getRepositoryById("42")).toMatchObject({ fullName: "Octo/Demo" });
        expect(await store.getSecret("run_1", "openrouter")).toMatchObject({ data: "ZGF0YQ==" });
        expect(await store.getPatch("run_1")).toBe("diff --git a/x b/x\n");
        expect(await store.getBinaryPatch("run_1")).toBe("diff --git a/x b/x\nGIT binary patch\n");
        expect(await store.findRunByIdempotencyKey("own_a", "idem-1")).toMatchObject({ id: "run_1" });
        expect(await store.findRunByIdempotencyKey("own_b", "idem-1")).toBeUndefined();
        await store.deleteSecrets("run_1");

        store = await restarted();
        expect(await store.getSecret("run_1", "openrouter")).toBeUndefined();
      });

      it("updates not awaited before close are all kept after a reopen", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        const updates = Array.from({ length: 200 }, (_, i) => store.updateRun("run_1", { turnCount: i + 1 }));
        store = await restarted();
        await Promise.all(updates);
        expect((await store.getRun("run_1"))!.turnCount).toBe(200);
      });

      it("a closed store refuses further use", async () => {
        await store.close();
        await expect(store.getRun("x")).rejects.toMatchObject({ code: "shutting_down" });
        await expect(store.appendEvent("run_1", text("late"))).rejects.toMatchObject({ code: "shutting_down" });
      });
    });

    describe("events", () => {
      it("numbers events 1..n and reads exactly those after a cursor", async () => {
        expect(await store.lastEventId("run_1")).toBe(0);
        expect(await store.readEvents("run_1")).toEqual([]);
        const appended = await Promise.all(
          Array.from({ length: 10 }, (_, i) => store.appendEvent("run_1", text(`e${i + 1}`))),
        );
        expect(appended.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        expect(appended[0]).toEqual({
          id: 1,
          runId: "run_1",
          at: NOW,
          turn: 1,
          type: "builder.event",
          data: { kind: "text", text: "e1" },
        });
        expect(await store.lastEventId("run_1")).toBe(10);

        expect((await store.readEvents("run_1", 0)).map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        expect((await store.readEvents("run_1", 7)).map((e) => e.id)).toEqual([8, 9, 10]);
        expect((await store.readEvents("run_1", 2, 3)).map((e) => e.id)).toEqual([3, 4, 5]);
        expect(await store.readEvents("run_1", 10)).toEqual([]);
        expect(await store.readEvents("run_1", 0, 0)).toEqual([]);
        // What is read back is what the append returned.
        expect(await store.readEvents("run_1")).toEqual(appended);
        // Logs are per run.
        expect((await store.appendEvent("run_2", text("other"))).id).toBe(1);
      });

      it("a page bounded by maxBytes holds whole events within the bound, and always at least one", async () => {
        const appended: RunEvent[] = [];
        for (let i = 1; i <= 20; i++) appended.push(await store.appendEvent("run_1", text(`${i}:${"x".repeat(1000)}`)));
        const big = await store.appendEvent("run_1", text("y".repeat(50_000)));
        const one = Buffer.byteLength(JSON.stringify(appended[0])) + 1;
        const bytes = (events: RunEvent[]) => events.reduce((n, e) => n + Buffer.byteLength(JSON.stringify(e)) + 1, 0);

        const page = await store.readEvents("run_1", 0, undefined, { maxBytes: one * 5.5 });
        expect(page.length).toBeGreaterThan(1);
        expect(page.length).toBeLessThan(20);
        expect(bytes(page)).toBeLessThanOrEqual(one * 5.5);
        expect(page).toEqual(appended.slice(0, page.length));
        // limit still applies under a generous bound.
        expect(ids(await store.readEvents("run_1", 2, 3, { maxBytes: 1e9 }))).toEqual([3, 4, 5]);
        // An event larger than the bound comes alone, so a reader paging by bytes moves on.
        expect(await store.readEvents("run_1", 20, undefined, { maxBytes: 100 })).toEqual([big]);
        expect(await store.readEvents("run_1", 19, undefined, { maxBytes: one * 2 })).toEqual([appended[19]]);

        // Paging through by bytes yields the whole log, in order.
        const all: RunEvent[] = [];
        for (let after = 0, next; (next = await store.readEvents("run_1", after, 500, { maxBytes: 4096 })).length;) {
          expect(next.length === 1 || bytes(next) <= 4096).toBe(true);
          all.push(...next);
          after = next.at(-1)!.id;
        }
        expect(all).toEqual([...appended, big]);
      });

      it("appends not awaited one by one get ids 1..n in call order, with no gap or duplicate", async () => {
        const calls: Promise<RunEvent>[] = [];
        for (let i = 1; i <= 300; i++) {
          calls.push(store.appendEvent("run_1", text(`a${i}`)));
          // Another run's appends in between must not disturb the numbering.
          if (i % 3 === 0) calls.push(store.appendEvent("run_2", text(`b${i / 3}`)));
        }
        const done = await Promise.all(calls);
        const ofRun1 = done.filter((e) => e.runId === "run_1");
        expect(ofRun1.map((e) => [e.id, textOf(e)])).toEqual(range(1, 300).map((i) => [i, `a${i}`]));
        const read = await store.readEvents("run_1");
        expect(read.map((e) => [e.id, textOf(e)])).toEqual(range(1, 300).map((i) => [i, `a${i}`]));
        expect(ids(await store.readEvents("run_2"))).toEqual(range(1, 100));
        expect(await store.lastEventId("run_1")).toBe(300);
        expect(await store.lastEventId("run_2")).toBe(100);
      });

      it("continues numbering after a reopen and serves old and new events alike", async () => {
        for (let i = 1; i <= 5; i++) await store.appendEvent("run_1", text(`a${i}`));
        store = await restarted();
        expect(await store.lastEventId("run_1")).toBe(5);
        expect((await store.appendEvent("run_1", text("b6"))).id).toBe(6);
        expect((await store.readEvents("run_1", 5)).map((e) => e.id)).toEqual([6]);
        const all = await store.readEvents("run_1", 1, 4);
        expect(all.map((e) => [e.id, textOf(e)])).toEqual([
          [2, "a2"],
          [3, "a3"],
          [4, "a4"],
          [5, "a5"],
        ]);
        expect((await store.appendEvent("run_1", text("c7"))).id).toBe(7);
        expect((await store.readEvents("run_1", 0)).map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      });

      it("an event that does not match the schema is refused, not written", async () => {
        const bad = { type: "builder.event", turn: 1, data: { kind: "text" } } as unknown as NewRunEvent;
        await expect(store.appendEvent("run_1", bad)).rejects.toMatchObject({ code: "internal" });
        expect(await store.lastEventId("run_1")).toBe(0);
        expect((await store.appendEvent("run_1", text("ok"))).id).toBe(1);
      });

      it("a crash in the middle of an append loses at most that event; ids go on from the last one kept", async (ctx) => {
        if (!h.crashDuringAppend) return ctx.skip();
        for (let i = 1; i <= 3; i++) await store.appendEvent("run_1", text(`e${i}`));
        store = await h.crashDuringAppend("run_1");
        expect(ids(await store.readEvents("run_1"))).toEqual([1, 2, 3]);
        expect(await store.lastEventId("run_1")).toBe(3);
        expect((await store.appendEvent("run_1", text("e4"))).id).toBe(4);
        expect((await store.readEvents("run_1")).map((e) => [e.id, textOf(e)])).toEqual([
          [1, "e1"],
          [2, "e2"],
          [3, "e3"],
          [4, "e4"],
        ]);
      });
    });

    describe("transition", () => {
      it("updates the run and appends the event built from the updated record", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        await store.appendEvent("run_1", statusEvent({ status: "queued", turnCount: 0 }));
        const seen: unknown[] = [];
        const { run, event } = await store.transition("run_1", { status: "running", turnCount: 1 }, (r) => {
          seen.push(r);
          return statusEvent(r);
        });
        expect(seen).toEqual([run]);
        expect(run).toMatchObject({ id: "run_1", status: "running", turnCount: 1 });
        expect(event).toEqual({
          id: 2,
          runId: "run_1",
          at: NOW,
          type: "run.status",
          turn: 1,
          data: { status: "running", turn: 1 },
        });
        expect(await store.getRun("run_1")).toEqual(run);
        expect(await store.readEvents("run_1", 1)).toEqual([event]);
        expect(await store.lastEventId("run_1")).toBe(2);
      });

      it("no reader sees the update without the event, or the event without the update", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        for (let round = 1; round <= 20; round++) {
          const status = round % 2 ? "running" : "idle";
          const pending = store.transition("run_1", { status, turnCount: round }, statusEvent);
          // Readers racing the transition: whichever half they see first, the other is there too.
          const readers = Array.from({ length: 5 }, async () => {
            const run = (await store.getRun("run_1"))!;
            const events = await store.readEvents("run_1");
            if (run.turnCount === round) expect(events.at(-1)).toMatchObject({ turn: round, data: { status } });
            const last = (await store.readEvents("run_1")).at(-1);
            if (last?.turn === round) expect((await store.getRun("run_1"))!.turnCount).toBe(round);
          });
          await Promise.all([pending, ...readers]);
        }
        const events = await store.readEvents("run_1");
        expect(ids(events)).toEqual(range(1, 20));
        expect(events.map((e) => e.turn)).toEqual(range(1, 20));
        expect(await store.getRun("run_1")).toMatchObject({ status: "idle", turnCount: 20 });
      });

      it("transitions and appends not awaited keep call order on one run", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        const calls = [
          store.appendEvent("run_1", text("before")),
          store.transition("run_1", { status: "running", turnCount: 1 }, statusEvent).then((t) => t.event),
          store.appendEvent("run_1", text("during")),
          store.transition("run_1", { status: "idle" }, statusEvent).then((t) => t.event),
          store.appendEvent("run_1", text("after")),
        ];
        expect(ids(await Promise.all(calls))).toEqual([1, 2, 3, 4, 5]);
        const read = await store.readEvents("run_1");
        expect(read.map((e) => (e.type === "run.status" ? e.data.status : textOf(e)))).toEqual([
          "before",
          "running",
          "during",
          "idle",
          "after",
        ]);
        expect((await store.getRun("run_1"))!.status).toBe("idle");
      });

      it("a refused update or event stores neither; a missing run is run_not_found", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        await expect(store.transition("run_1", { status: "bogus" as never }, statusEvent)).rejects.toMatchObject({
          code: "internal",
        });
        const bad = () => ({ type: "run.status", turn: 1, data: { status: "exploded" } }) as unknown as NewRunEvent;
        await expect(store.transition("run_1", { status: "running", turnCount: 1 }, bad)).rejects.toMatchObject({
          code: "internal",
        });
        expect(await store.getRun("run_1")).toMatchObject({ status: "queued", turnCount: 0 });
        expect(await store.lastEventId("run_1")).toBe(0);
        await expect(store.transition("nope", { status: "running" }, statusEvent)).rejects.toMatchObject({
          code: "run_not_found",
        });
        expect(await store.lastEventId("nope")).toBe(0);
      });

      it("a transition's run and event are both there after a reopen", async () => {
        await store.createRun(runRecord({ id: "run_1" }));
        const { run, event } = await store.transition("run_1", { status: "running", turnCount: 1 }, statusEvent);
        store = await restarted();
        expect(await store.getRun("run_1")).toEqual(run);
        expect(await store.readEvents("run_1")).toEqual([event]);
      });
    });

    describe("webhooks and deliveries", () => {
      const hook = (id: string, ownerId: string, runId?: string): WebhookRecord => ({
        id,
        ownerId,
        ...(runId ? { runId } : {}),
        url: `https://hooks.example.com/${id}`,
        events: ["run.status", "turn.finished"],
        secret: { iv: "aXY=", tag: "dGFn", data: "c2VhbGVk" },
        createdAt: NOW,
      });
      const delivery = (
        id: string,
        runId: string,
        seq: number,
        over: Partial<DeliveryRecord> = {},
      ): DeliveryRecord => ({
        id,
        runId,
        ownerId: "own_a",
        webhookId: "wh_1",
        url: "https://hooks.example.com/wh_1",
        seq,
        type: "run.status",
        body: JSON.stringify({ type: "run.status", id, seq }),
        status: "pending",
        attempts: [],
        nextAttemptAt: null,
        createdAt: NOW,
        ...over,
      });

      it("keeps an owner's webhooks apart from other owners', across a reopen, and deletes one", async () => {
        await store.putWebhook(hook("wh_1", "own_a"));
        await store.putWebhook(hook("wh_2", "own_a", "run_1"));
        await store.putWebhook(hook("wh_3", "own_b"));
        store = await restarted();
        expect((await store.listWebhooks("own_a")).map((w) => w.id).sort()).toEqual(["wh_1", "wh_2"]);
        expect(await store.getWebhook("wh_2")).toEqual(hook("wh_2", "own_a", "run_1"));
        expect(await store.getWebhook("wh_none")).toBeUndefined();
        expect(await store.deleteWebhook("wh_1")).toBe(true);
        expect(await store.deleteWebhook("wh_1")).toBe(false);
        store = await restarted();
        expect((await store.listWebhooks("own_a")).map((w) => w.id)).toEqual(["wh_2"]);
      });

      it("lists a run's deliveries by seq, replaces one by id, and finds the pending ones of every run after a reopen", async () => {
        await store.putDelivery(delivery("msg_b", "run_1", 2));
        await store.putDelivery(delivery("msg_a", "run_1", 1));
        await store.putDelivery(delivery("msg_c", "run_2", 1));
        const attempt = { attempt: 1, at: NOW, statusCode: 204, latencyMs: 12 };
        await store.putDelivery(delivery("msg_a", "run_1", 1, { status: "delivered", attempts: [attempt] }));
        store = await restarted();
        expect((await store.listDeliveries("run_1")).map((d) => [d.id, d.status])).toEqual([
          ["msg_a", "delivered"],
          ["msg_b", "pending"],
        ]);
        expect((await store.getDelivery("msg_a"))!.attempts).toEqual([attempt]);
        expect((await store.pendingDeliveries()).map((d) => d.id)).toEqual(["msg_b", "msg_c"]);
        expect(await store.listDeliveries("run_none")).toEqual([]);
      });

      it("refuses a malformed delivery", async () => {
        await expect(
          store.putDelivery({ ...delivery("msg_x", "run_1", 1), status: "lost" as never }),
        ).rejects.toThrow();
        expect(await store.getDelivery("msg_x")).toBeUndefined();
      });
    });

    describe("deleting runs", () => {
      const secret = (runId: string) => ({ runId, name: "openrouter", iv: "aXY=", tag: "dGFn", data: "c2VhbGVk" });
      /** A run with something of every kind kept for it. */
      async function fullRun(id: string, over: Partial<RunRecord> = {}): Promise<void> {
        await store.createRun(runRecord({ id, ...over }));
        await store.addTurn(turnRecord({ runId: id, n: 1 }));
        await store.appendEvent(id, text(`${id} event`));
        await store.putPatch(id, { text: `${id} text\n`, binary: `${id} binary\n` });
        await store.putSummary(id, `${id} summary`);
        await store.putSecret(secret(id));
        await store.putWebhook({
          id: `wh_${id}`,
          ownerId: "own_a",
          runId: id,
          url: "https://hooks.example.com/x",
          events: ["run.status"],
          secret: { iv: "aXY=", tag: "dGFn", data: "c2VhbGVk" },
          createdAt: NOW,
        });
        await store.putDelivery({
          id: `msg_${id}`,
          runId: id,
          ownerId: "own_a",
          webhookId: `wh_${id}`,
          url: "https://hooks.example.com/x",
          seq: 1,
          type: "run.status",
          body: "{}",
          status: "pending",
          attempts: [],
          nextAttemptAt: null,
          createdAt: NOW,
        });
      }
      async function expectGone(id: string): Promise<void> {
        expect(await store.getRun(id)).toBeUndefined();
        expect(await store.listTurns(id)).toEqual([]);
        expect(await store.lastEventId(id)).toBe(0);
        expect(await store.readEvents(id)).toEqual([]);
        expect(await store.getPatch(id)).toBeUndefined();
        expect(await store.getBinaryPatch(id)).toBeUndefined();
        expect(await store.getSummary(id)).toBeUndefined();
        expect(await store.getSecret(id, "openrouter")).toBeUndefined();
        expect(await store.getWebhook(`wh_${id}`)).toBeUndefined();
        expect(await store.listDeliveries(id)).toEqual([]);
        expect(await store.getDelivery(`msg_${id}`)).toBeUndefined();
      }
      async function expectKept(id: string): Promise<void> {
        expect(await store.getRun(id)).toMatchObject({ id });
        expect(await store.listTurns(id)).toHaveLength(1);
        expect((await store.readEvents(id)).map(textOf)).toEqual([`${id} event`]);
        expect(await store.getBinaryPatch(id)).toBe(`${id} binary\n`);
        expect(await store.getSummary(id)).toBe(`${id} summary`);
        expect(await store.getSecret(id, "openrouter")).toBeDefined();
        expect(await store.getWebhook(`wh_${id}`)).toBeDefined();
        expect((await store.listDeliveries(id)).map((d) => d.id)).toEqual([`msg_${id}`]);
      }

      it("deletes a run with its turns, events, patch, summary, secrets, webhooks and deliveries, and nothing else", async () => {
        await fullRun("run_1", { status: "completed" });
        await fullRun("run_2", { status: "completed" });
        expect(await store.deleteRun("run_1")).toBe(true);
        await expectGone("run_1");
        await expectKept("run_2");
        expect((await store.listRuns("own_a", { limit: 10 })).runs.map((r) => r.id)).toEqual(["run_2"]);
        expect((await store.pendingDeliveries()).map((d) => d.id)).toEqual(["msg_run_2"]);
        expect(await store.deleteRun("run_1")).toBe(false);
        store = await restarted();
        await expectGone("run_1");
        await expectKept("run_2");
        // The id is free again; a new log starts at 1.
        await store.createRun(runRecord({ id: "run_1" }));
        expect((await store.appendEvent("run_1", text("new"))).id).toBe(1);
      });

      it("purges finished runs last updated before the cutoff, oldest first, at most `limit` at a time", async () => {
        const old = (d: number) => `2026-01-0${d}T00:00:00.000Z`;
        await fullRun("run_done", { status: "completed", updatedAt: old(1) });
        await fullRun("run_failed", { status: "failed", updatedAt: old(2) });
        await fullRun("run_cancelled", { status: "cancelled", updatedAt: old(3) });
        // idle with its session over (expired, or none) is finished; idle with a session still open is not.
        await fullRun("run_idle_ended", { status: "idle", sessionExpiresAt: old(1), updatedAt: old(4) });
        await fullRun("run_idle_live", {
          status: "idle",
          sessionExpiresAt: "2999-01-01T00:00:00.000Z",
          updatedAt: old(1),
        });
        await fullRun("run_running", { status: "running", updatedAt: old(1) });
        await fullRun("run_queued", { status: "queued", updatedAt: old(1) });
        await fullRun("run_recent", { status: "completed", updatedAt: "2026-02-01T00:00:00.000Z" });
        const cutoff = "2026-01-15T00:00:00.000Z";

        expect(await store.purgeFinishedBefore(cutoff, 2)).toEqual(["run_done", "run_failed"]);
        expect((await store.purgeFinishedBefore(cutoff, 10)).sort()).toEqual(["run_cancelled", "run_idle_ended"]);
        expect(await store.purgeFinishedBefore(cutoff, 10)).toEqual([]);
        for (const id of ["run_done", "run_failed", "run_cancelled", "run_idle_ended"]) await expectGone(id);
        for (const id of ["run_idle_live", "run_running", "run_queued", "run_recent"]) await expectKept(id);
        store = await restarted();
        expect(await store.purgeFinishedBefore(cutoff, 10)).toEqual([]);
        await expectKept("run_recent");
      });
    });

    describe("summaries", () => {
      it("keeps a run's whole summary, megabytes of any text, replaced by the next and across a reopen", async () => {
        expect(await store.getSummary("run_1")).toBeUndefined();
        const whole = Array.from({ length: 100_000 }, (_, i) => `line ${i} "ünïcode" ✓ 😀`).join("\n");
        await store.putSummary("run_1", "first");
        await store.putSummary("run_1", whole);
        await store.putSummary("run_2", "other");
        store = await restarted();
        expect(await store.getSummary("run_1")).toBe(whole);
        expect(await store.getSummary("run_2")).toBe("other");
      });
    });

    describe("patches", () => {
      it("keeps both forms of a run's patch as one record and replaces them together", async () => {
        expect(await store.getPatch("run_1")).toBeUndefined();
        expect(await store.getBinaryPatch("run_1")).toBeUndefined();
        await store.putPatch("run_1", { text: "text one\n", binary: "binary one\n" });
        await store.putPatch("run_2", { text: "text two\n", binary: "binary two\n" });
        expect(await store.getPatch("run_1")).toBe("text one\n");
        expect(await store.getBinaryPatch("run_1")).toBe("binary one\n");
        await store.putPatch("run_1", { text: "", binary: "" });
        expect(await store.getPatch("run_1")).toBe("");
        expect(await store.getBinaryPatch("run_1")).toBe("");
        expect(await store.getPatch("run_2")).toBe("text two\n");
        // A run whose id ends like the old "_bin" suffix is a run of its own.
        expect(await store.getPatch("run_2_bin")).toBeUndefined();
      });

      it("a large patch with any bytes git may print reads back unchanged", async () => {
        const body = Array.from({ length: 20_000 }, (_, i) => `+line ${i} "quoted" \\ tab\t ünïcode ✓`).join("\n");
        const patch = { text: `diff --git a/f b/f\n${body}\n`, binary: `GIT binary patch\nliteral 3\n${body}\n` };
        await store.putPatch("run_1", patch);
        store = await restarted();
        expect(await store.getPatch("run_1")).toBe(patch.text);
        expect(await store.getBinaryPatch("run_1")).toBe(patch.binary);
      });
    });
  });
}

describeStoreContract("sqlite (embedded)", async ({ now }) => {
  const dataDir = tempDir("contract");
  let store = await createSqliteStore({ dataDir, now });
  return {
    store,
    async reopen() {
      await store.close();
      return (store = await createSqliteStore({ dataDir, now }));
    },
    async crashDuringAppend(runId) {
      await store.close();
      // What kill -9 halfway through appendFileSync leaves: the start of a line, no newline.
      fs.appendFileSync(path.join(dataDir, "events", `${runId}.jsonl`), `{"id":999,"runId":"${runId}","at":"2026-01-0`);
      return (store = await createSqliteStore({ dataDir, now }));
    },
    async cleanup() {
      await store.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
});

// One database for the file, emptied for each test: creating and migrating one per test costs
// about a second each on a loaded machine.
let sharedDb: Promise<TestDatabase> | undefined;
afterAll(async () => {
  await (await sharedDb)?.drop();
});

describeStoreContract("postgres", async ({ now }) => {
  const db = await (sharedDb ??= createTestDatabase());
  await emptyDatabase(db.url);
  const open = () => createPostgresStore({ url: db.url, now });
  let store: RunStore = await open();
  return {
    store,
    async reopen() {
      await store.close();
      return (store = await open());
    },
    async crashDuringAppend(runId) {
      // A transaction that appended the next event and never committed: its connection dies.
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      await c.query("BEGIN");
      await c.query("UPDATE run_event_heads SET last_id = last_id + 1 WHERE run_id = $1", [runId]);
      await c.query(
        "INSERT INTO run_events (run_id, id, data) SELECT $1, last_id, '{}' FROM run_event_heads WHERE run_id = $1",
        [runId],
      );
      await store.close();
      await c.query("SELECT pg_terminate_backend(pg_backend_pid())").catch(() => undefined);
      await c.end().catch(() => undefined);
      return (store = await open());
    },
    async cleanup() {
      await store.close();
    },
  };
});
