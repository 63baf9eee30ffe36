import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { NewRunEvent } from "../../../src/engine/events/schema.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import { tempDir } from "../../helpers.ts";

const text = (t: string): NewRunEvent => ({ type: "builder.event", turn: 1, data: { kind: "text", text: t } });

describe("event logs", () => {
  it("after a restart, a read at any cursor returns exactly the events after it, however long the lines", async () => {
    const dataDir = tempDir("events");
    const first = await createSqliteStore({ dataDir });
    // ~1 MB over several read windows, with a few lines longer than a window.
    for (let i = 1; i <= 3000; i++)
      await first.appendEvent("run_1", text(i % 1000 === 0 ? "L".repeat(600_000) : `event ${i} `.repeat(20)));
    await first.close();

    const ids = (events: { id: number }[]) => events.map((e) => e.id);
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    const store = await createSqliteStore({ dataDir });
    try {
      expect(ids(await store.readEvents("run_1", 2995))).toEqual(range(2996, 3000));
      expect(ids(await store.readEvents("run_1", 1995, 10))).toEqual(range(1996, 2005));
      // Two reads reaching back at once share the index without losing or repeating events.
      const [a, b] = await Promise.all([store.readEvents("run_1", 10, 5), store.readEvents("run_1", 500, 3)]);
      expect(ids(a)).toEqual(range(11, 15));
      expect(ids(b)).toEqual(range(501, 503));
      const all = await store.readEvents("run_1", 0);
      expect(ids(all)).toEqual(range(1, 3000));
      expect(all[999]!.type === "builder.event" && all[999]!.data.kind === "text" && all[999]!.data.text.length).toBe(
        600_000,
      );
    } finally {
      await store.close();
    }
  });

  it("a torn last line (kill -9 mid-write) is ignored on read and on id recovery", async () => {
    const dataDir = tempDir("events");
    const first = await createSqliteStore({ dataDir });
    for (let i = 1; i <= 3; i++) await first.appendEvent("run_1", text(`e${i}`));
    await first.close();
    const file = path.join(dataDir, "events", "run_1.jsonl");
    fs.appendFileSync(file, '{"id":4,"runId":"run_1","at":"2026-01-0');

    const store = await createSqliteStore({ dataDir });
    try {
      expect((await store.readEvents("run_1")).map((e) => e.id)).toEqual([1, 2, 3]);
      expect(await store.lastEventId("run_1")).toBe(3);
      // The next event takes id 4 and lands on a line of its own, not glued to the torn bytes.
      expect((await store.appendEvent("run_1", text("e4"))).id).toBe(4);
      const lines = fs.readFileSync(file, "utf8").trimEnd().split("\n");
      expect(lines.map((l) => JSON.parse(l).id)).toEqual([1, 2, 3, 4]);
    } finally {
      await store.close();
    }
  });

  it("a garbled or foreign line in the middle is skipped, and ids keep growing past it", async () => {
    const dataDir = tempDir("events");
    const first = await createSqliteStore({ dataDir });
    await first.appendEvent("run_1", text("e1"));
    await first.close();
    const file = path.join(dataDir, "events", "run_1.jsonl");
    fs.appendFileSync(file, "not json\n");
    fs.appendFileSync(
      file,
      JSON.stringify({ id: 2, runId: "run_1", at: "x", turn: 1, type: "builder.event", data: { kind: "nope" } }) + "\n",
    );
    fs.appendFileSync(
      file,
      JSON.stringify({
        id: 2,
        runId: "run_9",
        at: "x",
        turn: 1,
        type: "builder.event",
        data: { kind: "text", text: "foreign" },
      }) + "\n",
    );

    const store = await createSqliteStore({ dataDir });
    try {
      expect(await store.lastEventId("run_1")).toBe(1);
      expect((await store.appendEvent("run_1", text("e2"))).id).toBe(2);
      expect((await store.readEvents("run_1")).map((e) => e.id)).toEqual([1, 2]);
    } finally {
      await store.close();
    }
  });
});
