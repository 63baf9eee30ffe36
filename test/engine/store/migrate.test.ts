/**
 * Migration of a data dir from the previous embedded store (every record in store.json) to
 * store.db. test/fixtures/store-v1 was written by that version's store (commit a065f07):
 * three runs with turns, events, patches, summaries and sealed secrets, keys, a repository,
 * an owner secret and budget, a group, two webhooks and two deliveries.
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createSecretBox } from "../../../src/engine/secrets/secrets.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { tempDir } from "../../helpers.ts";

const FIXTURE = path.resolve(import.meta.dirname, "../../fixtures/store-v1");
// The key the fixture's secrets were sealed with.
const box = createSecretBox(Buffer.alloc(32, 7));

function v1DataDir(): string {
  const dir = tempDir("v1");
  fs.cpSync(FIXTURE, dir, { recursive: true });
  return dir;
}

async function withStore<T>(dataDir: string, fn: (store: RunStore) => Promise<T>): Promise<T> {
  const store = await createSqliteStore({ dataDir });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Everything the fixture holds, read through the store. */
async function expectEverything(store: RunStore): Promise<void> {
  const page = await store.listRuns("own_a", { limit: 1 });
  expect(page.runs.map((r) => r.id)).toEqual(["run_v1_2"]);
  expect((await store.listRuns("own_a", { limit: 5, cursor: page.nextCursor! })).runs.map((r) => r.id)).toEqual([
    "run_v1_1",
  ]);
  expect(await store.getRun("run_v1_3")).toMatchObject({ ownerId: "own_b", status: "completed", turnCount: 1 });
  expect(await store.findRunByIdempotencyKey("own_a", "idem-1")).toMatchObject({ id: "run_v1_1" });
  expect((await store.runsByStatus(["completed"])).length).toBe(3);
  for (const i of [1, 2, 3]) {
    const id = `run_v1_${i}`;
    expect(await store.listTurns(id)).toMatchObject([{ n: 1, prompt: `prompt ${i}`, status: "done" }]);
    expect(await store.lastEventId(id)).toBe(4);
    expect((await store.readEvents(id, 2)).map((e) => e.id)).toEqual([3, 4]);
    expect(await store.getPatch(id)).toBe(`diff --git a/a.txt b/a.txt\n+${id}\n`);
    expect(await store.getBinaryPatch(id)).toBe(`diff --git a/a.txt b/a.txt\n+${id} bin\n`);
    expect(await store.getSummary(id)).toBe(`${id} whole summary`);
    expect(box.open((await store.getSecret(id, "openrouter"))!)).toBe(`sk-or-CANARY-${i}`);
  }
  expect(await store.findKeyByHash("ab".repeat(32))).toMatchObject({ id: "key_v1", scopes: expect.any(Array) });
  expect(await store.findKeyByHash("cd".repeat(32))).toMatchObject({ id: "key_v1b", repos: ["octo/*"] });
  expect((await store.listKeys()).map((k) => k.id)).toEqual(["key_v1", "key_v1b"]);
  expect(await store.getRepositoryByName("octo/demo")).toMatchObject({ id: "42", defaultBranch: "main" });
  const ownerSecret = (await store.getOwnerSecret("own_a", "NPM_TOKEN"))!;
  expect(
    box.open({
      runId: "own_a",
      name: ownerSecret.name,
      iv: ownerSecret.iv,
      tag: ownerSecret.tag,
      data: ownerSecret.data,
    }),
  ).toBe("npm-CANARY");
  expect(await store.getOwnerBudget("own_a")).toMatchObject({ dailyCostUsd: 5, spentUsd: 1.25 });
  expect(await store.getGroup("grp_v1")).toMatchObject({ bestRunId: "run_v1_1", status: "settled" });
  expect((await store.listWebhooks("own_a")).map((w) => w.id)).toEqual(["wh_v1", "wh_v1_run"]);
  expect(await store.listDeliveries("run_v1_1")).toMatchObject([
    { id: "msg_v1_1", status: "delivered", body: '{"type":"run.status","n":1}' },
  ]);
  expect((await store.pendingDeliveries()).map((d) => [d.id, d.body])).toEqual([
    ["msg_v1_2", '{"type":"run.status","n":2}'],
  ]);
}

describe("migrating store.json to store.db", () => {
  it("opens a data dir the previous version wrote with every record readable, keeping store.json as a backup", async () => {
    const dataDir = v1DataDir();
    const original = fs.readFileSync(path.join(dataDir, "store.json"));
    await withStore(dataDir, async (store) => {
      await expectEverything(store);
      // Writes go on from where the old store left off.
      expect(
        (await store.appendEvent("run_v1_1", { type: "run.status", turn: 1, data: { status: "completed", turn: 1 } }))
          .id,
      ).toBe(5);
    });
    expect(fs.existsSync(path.join(dataDir, "store.json"))).toBe(false);
    expect(fs.readFileSync(path.join(dataDir, "store.json.migrated"))).toEqual(original);
    expect(fs.statSync(path.join(dataDir, "store.db")).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dataDir).filter((f) => f.includes("migrating"))).toEqual([]);
  });

  it("a second start does not migrate again: changes made since are kept", async () => {
    const dataDir = v1DataDir();
    await withStore(dataDir, async (store) => {
      await store.updateRun("run_v1_1", { summary: "changed after the migration" });
      await store.deleteOwnerSecret("own_a", "NPM_TOKEN");
    });
    const files = fs.readdirSync(dataDir).sort();
    await withStore(dataDir, async (store) => {
      expect((await store.getRun("run_v1_1"))!.summary).toBe("changed after the migration");
      expect(await store.getOwnerSecret("own_a", "NPM_TOKEN")).toBeUndefined();
    });
    expect(fs.readdirSync(dataDir).sort()).toEqual(files);
  });

  it("a crash before the new file was in place loses nothing: the next start builds it again from store.json", async () => {
    const dataDir = v1DataDir();
    // What a kill -9 mid-migration leaves: a half-built database beside the untouched store.json.
    fs.writeFileSync(path.join(dataDir, "store.db.migrating"), "SQLite format 3\0 half written");
    fs.writeFileSync(path.join(dataDir, "store.db.migrating-journal"), "torn");
    await withStore(dataDir, expectEverything);
    expect(fs.readdirSync(dataDir).filter((f) => f.includes("migrating"))).toEqual([]);
  });

  it("a crash after the new file was in place only sets store.json aside: the database is not rebuilt over newer changes", async () => {
    const dataDir = v1DataDir();
    const json = fs.readFileSync(path.join(dataDir, "store.json"));
    await withStore(dataDir, async (store) => {
      await store.updateRun("run_v1_2", { summary: "newer" });
    });
    // As if the process died between renaming store.db into place and renaming store.json away.
    fs.renameSync(path.join(dataDir, "store.json.migrated"), path.join(dataDir, "store.json"));
    await withStore(dataDir, async (store) => {
      expect((await store.getRun("run_v1_2"))!.summary).toBe("newer");
      await expectEverything(store);
    });
    expect(fs.existsSync(path.join(dataDir, "store.json"))).toBe(false);
    expect(fs.readFileSync(path.join(dataDir, "store.json.migrated"))).toEqual(json);
  });

  it("a corrupt store.json stops the start with an error naming the file and the field, and is left as it was", async () => {
    const dataDir = v1DataDir();
    const file = path.join(dataDir, "store.json");
    const json = JSON.parse(fs.readFileSync(file, "utf8"));
    json.runs[0].status = "exploded";
    fs.writeFileSync(file, JSON.stringify(json));
    await expect(createSqliteStore({ dataDir })).rejects.toMatchObject({
      code: "internal",
      message: expect.stringMatching(/store\.json is corrupt: runs\.0\.status/),
    });
    fs.writeFileSync(file, '{"version": 1, "runs": [');
    await expect(createSqliteStore({ dataDir })).rejects.toMatchObject({
      code: "internal",
      message: expect.stringContaining("is not valid JSON"),
    });
    expect(fs.existsSync(path.join(dataDir, "store.db"))).toBe(false);
    expect(fs.readFileSync(file, "utf8")).toBe('{"version": 1, "runs": [');
    // The failed opens released the lock: a good file opens again.
    json.runs[0].status = "completed";
    fs.writeFileSync(file, JSON.stringify(json));
    await withStore(dataDir, expectEverything);
  });

  it("reads a repository id an older version stored as a string as GitHub's number", async () => {
    const dataDir = v1DataDir();
    const file = path.join(dataDir, "store.json");
    const json = JSON.parse(fs.readFileSync(file, "utf8"));
    json.runs[0].repository.id = "42";
    fs.writeFileSync(file, JSON.stringify(json));
    await withStore(dataDir, async (store) => {
      expect((await store.getRun(json.runs[0].id))!.repository).toEqual({
        fullName: "octo/demo",
        owner: "octo",
        name: "demo",
        id: 42,
      });
    });
  });
});
