import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createLowdbStore } from "../../../src/engine/store/lowdb.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { tempDir } from "../../helpers.ts";
import { runRecord, turnRecord } from "./fixtures.ts";

async function withStore<T>(dataDir: string, fn: (store: RunStore) => Promise<T>): Promise<T> {
  const store = await createLowdbStore({ dataDir });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

describe("lowdb store", () => {
  it("keeps runs, turns, keys, repositories, secrets and patches across a reopen", async () => {
    const dataDir = tempDir("store");
    await withStore(dataDir, async (store) => {
      await store.createRun(runRecord({ id: "run_1", idempotencyKey: "idem-1" }));
      await store.updateRun("run_1", { status: "running", startedAt: "2026-01-01T00:00:01.000Z" });
      await store.addTurn(turnRecord({ runId: "run_1", n: 1 }));
      await store.updateTurn("run_1", 1, { status: "done", summary: "ok" });
      await store.createKey({
        id: "key_1",
        name: "ci",
        ownerId: "own_a",
        hash: "ab".repeat(32),
        prefix: "pb_abc",
        scopes: ["read:builder"],
        createdAt: "2026-01-01T00:00:00.000Z",
        revokedAt: null,
      });
      await store.upsertRepository({ id: "42", fullName: "Octo/Demo", updatedAt: "2026-01-01T00:00:00.000Z" });
      await store.putSecret({ runId: "run_1", name: "openrouter", iv: "aXY=", tag: "dGFn", data: "ZGF0YQ==" });
      await store.putPatch("run_1", { text: "diff --git a/x b/x\n", binary: "diff --git a/x b/x\nGIT binary patch\n" });
    });
    await withStore(dataDir, async (store) => {
      expect(await store.getRun("run_1")).toMatchObject({ status: "running", startedAt: "2026-01-01T00:00:01.000Z" });
      expect(await store.listTurns("run_1")).toEqual([
        expect.objectContaining({ n: 1, status: "done", summary: "ok" }),
      ]);
      expect(await store.findKeyByHash("ab".repeat(32))).toMatchObject({ id: "key_1", name: "ci" });
      expect(await store.getRepositoryByName("octo/demo")).toMatchObject({ id: "42" });
      expect(await store.getRepositoryById("42")).toMatchObject({ fullName: "Octo/Demo" });
      expect(await store.getSecret("run_1", "openrouter")).toMatchObject({ data: "ZGF0YQ==" });
      expect(await store.getPatch("run_1")).toBe("diff --git a/x b/x\n");
      expect(await store.getBinaryPatch("run_1")).toBe("diff --git a/x b/x\nGIT binary patch\n");
      expect(await store.findRunByIdempotencyKey("own_a", "idem-1")).toMatchObject({ id: "run_1" });
      expect(await store.findRunByIdempotencyKey("own_b", "idem-1")).toBeUndefined();
      await store.deleteSecrets("run_1");
    });
    await withStore(dataDir, async (store) => {
      expect(await store.getSecret("run_1", "openrouter")).toBeUndefined();
    });
  });

  it("writes store.json, event logs and patches readable by the owner only", async () => {
    const dataDir = tempDir("store");
    await withStore(dataDir, async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
      await store.appendEvent("run_1", { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } });
      await store.putPatch("run_1", { text: "diff", binary: "diff" });
    });
    const mode = (p: string) => fs.statSync(p).mode & 0o777;
    expect(mode(path.join(dataDir, "store.json"))).toBe(0o600);
    expect(mode(path.join(dataDir, "events", "run_1.jsonl"))).toBe(0o600);
    expect(mode(path.join(dataDir, "patches", "run_1.json"))).toBe(0o600);
    expect(mode(path.join(dataDir, "events"))).toBe(0o700);
    expect(mode(path.join(dataDir, "patches"))).toBe(0o700);
    // No temp files left behind by the atomic writes.
    expect(fs.readdirSync(dataDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("returns copies: changing a returned run does not change the store", async () => {
    await withStore(tempDir("store"), async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
      const run = (await store.getRun("run_1"))!;
      run.status = "failed";
      expect((await store.getRun("run_1"))!.status).toBe("queued");
    });
  });

  it("updates of a missing run fail with run_not_found", async () => {
    await withStore(tempDir("store"), async (store) => {
      await expect(store.updateRun("nope", { status: "running" })).rejects.toMatchObject({ code: "run_not_found" });
      await expect(store.updateTurn("nope", 1, { status: "done" })).rejects.toMatchObject({ code: "run_not_found" });
    });
  });

  it("refuses an invalid record instead of writing a file that would not load again", async () => {
    await withStore(tempDir("store"), async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
      await expect(store.updateRun("run_1", { status: "bogus" as never })).rejects.toMatchObject({
        code: "internal",
        message: expect.stringContaining("status"),
      });
      expect((await store.getRun("run_1"))!.status).toBe("queued");
    });
  });

  it("refuses run ids that could escape the data dir", async () => {
    await withStore(tempDir("store"), async (store) => {
      for (const id of ["../x", "a/b", "", "x".repeat(65), "run 1", "run.1"]) {
        await expect(store.createRun(runRecord({ id }))).rejects.toMatchObject({ code: "invalid_request" });
        await expect(store.putPatch(id, { text: "x", binary: "x" })).rejects.toMatchObject({ code: "invalid_request" });
        await expect(store.getBinaryPatch(id)).rejects.toMatchObject({ code: "invalid_request" });
        await expect(store.readEvents(id)).rejects.toMatchObject({ code: "invalid_request" });
        await expect(
          store.appendEvent(id, { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } }),
        ).rejects.toMatchObject({ code: "invalid_request" });
      }
    });
  });

  it("a corrupt store.json gives a clear error naming the file and the bad field", async () => {
    const dataDir = tempDir("store");
    await withStore(dataDir, async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
    });
    const file = path.join(dataDir, "store.json");
    const json = JSON.parse(fs.readFileSync(file, "utf8"));
    json.runs[0].status = "exploded";
    fs.writeFileSync(file, JSON.stringify(json));
    await expect(createLowdbStore({ dataDir })).rejects.toMatchObject({
      code: "internal",
      message: expect.stringMatching(/store\.json is corrupt: runs\.0\.status/),
    });

    fs.writeFileSync(file, '{"version": 1, "runs": [');
    await expect(createLowdbStore({ dataDir })).rejects.toMatchObject({
      code: "internal",
      message: expect.stringContaining("is not valid JSON"),
    });
    // The failed opens released the lock: a good file opens again.
    fs.writeFileSync(file, JSON.stringify({ ...json, runs: [] }));
    await withStore(dataDir, async (store) => expect(await store.getRun("run_1")).toBeUndefined());
  });

  it("many updates in one tick all reach the disk before close returns", async () => {
    const dataDir = tempDir("store");
    const store = await createLowdbStore({ dataDir });
    await store.createRun(runRecord({ id: "run_1" }));
    const updates = Array.from({ length: 200 }, (_, i) => store.updateRun("run_1", { turnCount: i + 1 }));
    await store.close();
    await Promise.all(updates);
    const json = JSON.parse(fs.readFileSync(path.join(dataDir, "store.json"), "utf8"));
    expect(json.runs[0].turnCount).toBe(200);
  });

  it("a closed store refuses further use", async () => {
    const store = await createLowdbStore({ dataDir: tempDir("store") });
    await store.close();
    await expect(store.getRun("x")).rejects.toMatchObject({ code: "shutting_down" });
  });

  it("lists an owner's runs newest first, page by page, with an opaque cursor", async () => {
    await withStore(tempDir("store"), async (store) => {
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
  });

  it("finds runs by status across owners and counts an owner's active runs", async () => {
    await withStore(tempDir("store"), async (store) => {
      const statuses = ["queued", "running", "idle", "completed", "failed", "cancelled"] as const;
      for (const [i, status] of statuses.entries()) await store.createRun(runRecord({ id: `run_${i}`, status }));
      await store.createRun(runRecord({ id: "run_b", ownerId: "own_b", status: "running" }));
      expect((await store.runsByStatus(["running"])).map((r) => r.id).sort()).toEqual(["run_1", "run_b"]);
      expect(await store.countActiveRuns("own_a")).toBe(3);
      expect(await store.countActiveRuns("own_b")).toBe(1);
    });
  });
});
