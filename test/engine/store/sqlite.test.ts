import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { tempDir } from "../../helpers.ts";
import { runRecord } from "./fixtures.ts";

async function withStore<T>(dataDir: string, fn: (store: RunStore) => Promise<T>): Promise<T> {
  const store = await createSqliteStore({ dataDir });
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

describe("embedded store (SQLite)", () => {
  it("writes store.db (and its WAL), event logs, patches and summaries readable by the owner only", async () => {
    const dataDir = tempDir("store");
    const mode = (p: string) => fs.statSync(p).mode & 0o777;
    await withStore(dataDir, async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
      await store.appendEvent("run_1", { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } });
      await store.putPatch("run_1", { text: "diff", binary: "diff" });
      await store.putSummary("run_1", "all of it");
      for (const f of ["store.db", "store.db-wal", "store.db-shm"]) expect(mode(path.join(dataDir, f))).toBe(0o600);
    });
    expect(mode(path.join(dataDir, "store.db"))).toBe(0o600);
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

  it("a transition's event line and its record are both on disk when it returns, the line first", async () => {
    const dataDir = tempDir("store");
    await withStore(dataDir, async (store) => {
      await store.createRun(runRecord({ id: "run_1" }));
      // Another connection sees only what was committed.
      const reader = new Database(path.join(dataDir, "store.db"), { readonly: true });
      const statusOnDisk = () =>
        JSON.parse((reader.prepare("SELECT data FROM runs WHERE id = ?").get("run_1") as { data: string }).data).status;
      try {
        expect(statusOnDisk()).toBe("queued");
        let lineBeforeRecord = false;
        await store.transition("run_1", { status: "running" }, (run) => {
          lineBeforeRecord = statusOnDisk() === "queued";
          return { type: "run.status", turn: run.turnCount, data: { status: run.status, turn: run.turnCount } };
        });
        expect(lineBeforeRecord).toBe(true);
        const line = fs.readFileSync(path.join(dataDir, "events", "run_1.jsonl"), "utf8").trimEnd();
        expect(JSON.parse(line)).toMatchObject({ id: 1, type: "run.status", data: { status: "running" } });
        expect(statusOnDisk()).toBe("running");
      } finally {
        reader.close();
      }
    });
  });

  it("many updates in one tick all reach the disk before close returns", async () => {
    const dataDir = tempDir("store");
    const store = await createSqliteStore({ dataDir });
    await store.createRun(runRecord({ id: "run_1" }));
    const updates = Array.from({ length: 200 }, (_, i) => store.updateRun("run_1", { turnCount: i + 1 }));
    await store.close();
    await Promise.all(updates);
    await withStore(dataDir, async (again) => expect((await again.getRun("run_1"))!.turnCount).toBe(200));
  });
});
