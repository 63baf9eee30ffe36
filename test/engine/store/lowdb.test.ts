import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createLowdbStore } from "../../../src/engine/store/lowdb.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { tempDir } from "../../helpers.ts";
import { runRecord } from "./fixtures.ts";

async function withStore<T>(dataDir: string, fn: (store: RunStore) => Promise<T>): Promise<T> {
  const store = await createLowdbStore({ dataDir });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

describe("lowdb store", () => {
  it("writes store.json, event logs, patches and summaries readable by the owner only", async () => {
    const dataDir = tempDir("store");
    await withStore(dataDir, async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
      await store.appendEvent("run_1", { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } });
      await store.putPatch("run_1", { text: "diff", binary: "diff" });
      await store.putSummary("run_1", "all of it");
    });
    const mode = (p: string) => fs.statSync(p).mode & 0o777;
    expect(mode(path.join(dataDir, "store.json"))).toBe(0o600);
    expect(mode(path.join(dataDir, "events", "run_1.jsonl"))).toBe(0o600);
    expect(mode(path.join(dataDir, "patches", "run_1.json"))).toBe(0o600);
    expect(mode(path.join(dataDir, "events"))).toBe(0o700);
    expect(mode(path.join(dataDir, "patches"))).toBe(0o700);
    expect(mode(path.join(dataDir, "summaries", "run_1.txt"))).toBe(0o600);
    expect(mode(path.join(dataDir, "summaries"))).toBe(0o700);
    // No temp files left behind by the atomic writes.
    expect(fs.readdirSync(dataDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
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

  it("reads a repository id an older version stored as a string as GitHub's number", async () => {
    const dataDir = tempDir("store");
    await withStore(dataDir, async (store) => {
      await store.createRun(
        runRecord({ id: "run_old", repository: { fullName: "octo/demo", owner: "octo", name: "demo", id: 42 } }),
      );
    });
    const file = path.join(dataDir, "store.json");
    const json = JSON.parse(fs.readFileSync(file, "utf8"));
    expect(json.runs[0].repository.id).toBe(42);
    json.runs[0].repository.id = "42";
    fs.writeFileSync(file, JSON.stringify(json));
    await withStore(dataDir, async (store) => {
      expect((await store.getRun("run_old"))!.repository).toEqual({
        fullName: "octo/demo",
        owner: "octo",
        name: "demo",
        id: 42,
      });
    });
  });

  it("keeps serving patches an older version wrote as <id>.diff and <id>_bin.diff", async () => {
    const dataDir = tempDir("store");
    fs.mkdirSync(path.join(dataDir, "patches"), { recursive: true });
    fs.writeFileSync(path.join(dataDir, "patches", "run_old.diff"), "text form\n");
    fs.writeFileSync(path.join(dataDir, "patches", "run_old_bin.diff"), "binary form\n");
    await withStore(dataDir, async (store) => {
      expect(await store.getPatch("run_old")).toBe("text form\n");
      expect(await store.getBinaryPatch("run_old")).toBe("binary form\n");
      // A new patch replaces both forms.
      await store.putPatch("run_old", { text: "new text\n", binary: "new binary\n" });
      expect(await store.getPatch("run_old")).toBe("new text\n");
      expect(await store.getBinaryPatch("run_old")).toBe("new binary\n");
    });
  });

  it("a transition writes its event line before store.json, so a crash between them keeps the event", async () => {
    const dataDir = tempDir("store");
    await withStore(dataDir, async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
      const statusOnDisk = () => JSON.parse(fs.readFileSync(path.join(dataDir, "store.json"), "utf8")).runs[0].status;
      const pending = store.transition("run_1", { status: "running" }, (run) => ({
        type: "run.status",
        turn: run.turnCount,
        data: { status: run.status, turn: run.turnCount },
      }));
      const line = fs.readFileSync(path.join(dataDir, "events", "run_1.jsonl"), "utf8").trimEnd();
      expect(JSON.parse(line)).toMatchObject({ id: 1, type: "run.status", data: { status: "running" } });
      expect(statusOnDisk()).toBe("queued");
      await pending;
      expect(statusOnDisk()).toBe("running");
    });
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
});
