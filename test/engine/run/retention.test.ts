/**
 * Retention (PATCHBAY_RETENTION_DAYS) against the real embedded store: finished runs older
 * than the limit go in batches, with their files; live and recent ones stay.
 */
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../../src/engine/log.ts";
import { createRetention } from "../../../src/engine/run/retention.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { tempDir } from "../../helpers.ts";
import { runRecord } from "../store/fixtures.ts";

const NOW = new Date("2026-06-01T00:00:00.000Z");
const daysAgo = (d: number) => new Date(NOW.getTime() - d * 86_400_000).toISOString();
let store: RunStore | undefined;
afterEach(async () => {
  await store?.close();
});

describe("retention", () => {
  it("deletes every finished run older than the limit, with its events, patch and summary; keeps the rest", async () => {
    const dataDir = tempDir("retention");
    store = await createSqliteStore({ dataDir, now: () => NOW });
    // More old runs than one batch, so the sweep loops.
    for (let i = 0; i < 450; i++) {
      const id = `run_old_${i}`;
      await store.createRun(runRecord({ id, status: "completed", updatedAt: daysAgo(40) }));
      await store.appendEvent(id, { type: "run.status", turn: 1, data: { status: "completed", turn: 1 } });
      await store.putPatch(id, { text: "diff\n", binary: "diff\n" });
      await store.putSummary(id, "done");
    }
    await store.createRun(runRecord({ id: "run_recent", status: "failed", updatedAt: daysAgo(5) }));
    await store.createRun(runRecord({ id: "run_running", status: "running", updatedAt: daysAgo(40) }));
    await store.createRun(
      runRecord({ id: "run_warm", status: "idle", sessionExpiresAt: daysAgo(-1), updatedAt: daysAgo(40) }),
    );

    const retention = createRetention({ store, days: 30, now: () => NOW, log: silentLogger });
    expect(await retention.sweep()).toBe(450);
    expect(await retention.sweep()).toBe(0);
    expect(await store.getRun("run_old_0")).toBeUndefined();
    expect(await store.getRun("run_old_449")).toBeUndefined();
    for (const id of ["run_recent", "run_running", "run_warm"]) expect(await store.getRun(id)).toBeDefined();
    for (const dir of ["events", "patches", "summaries"])
      expect(fs.readdirSync(path.join(dataDir, dir)).filter((f) => f.startsWith("run_old"))).toEqual([]);
    await retention.stop();
  });

  it("without a limit keeps everything", async () => {
    store = await createSqliteStore({ dataDir: tempDir("retention"), now: () => NOW });
    await store.createRun(runRecord({ id: "run_ancient", status: "completed", updatedAt: daysAgo(4000) }));
    const retention = createRetention({ store, days: undefined, now: () => NOW, log: silentLogger });
    retention.start();
    expect(await retention.sweep()).toBe(0);
    await retention.stop();
    expect(await store.getRun("run_ancient")).toBeDefined();
  });
});
