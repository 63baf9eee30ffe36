import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { NewRunEvent } from "../../../src/engine/events/schema.ts";
import { createLowdbStore } from "../../../src/engine/store/lowdb.ts";
import { tempDir } from "../../helpers.ts";

const text = (t: string): NewRunEvent => ({ type: "builder.event", turn: 1, data: { kind: "text", text: t } });

describe("event logs", () => {
  it("numbers events 1..n and reads exactly those after a cursor", async () => {
    const store = await createLowdbStore({
      dataDir: tempDir("events"),
      now: () => new Date("2026-01-02T03:04:05.000Z"),
    });
    try {
      expect(await store.lastEventId("run_1")).toBe(0);
      expect(await store.readEvents("run_1")).toEqual([]);
      const appended = await Promise.all(
        Array.from({ length: 10 }, (_, i) => store.appendEvent("run_1", text(`e${i + 1}`))),
      );
      expect(appended.map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      expect(appended[0]).toEqual({
        id: 1,
        runId: "run_1",
        at: "2026-01-02T03:04:05.000Z",
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
      // Logs are per run.
      expect((await store.appendEvent("run_2", text("other"))).id).toBe(1);
    } finally {
      await store.close();
    }
  });

  it("continues numbering after a reopen and serves old and new events alike", async () => {
    const dataDir = tempDir("events");
    const first = await createLowdbStore({ dataDir });
    for (let i = 1; i <= 5; i++) await first.appendEvent("run_1", text(`a${i}`));
    await first.close();

    const store = await createLowdbStore({ dataDir });
    try {
      expect(await store.lastEventId("run_1")).toBe(5);
      expect((await store.appendEvent("run_1", text("b6"))).id).toBe(6);
      // After the old last id: served from this process's own index, no pass over the file.
      expect((await store.readEvents("run_1", 5)).map((e) => e.id)).toEqual([6]);
      // Before it: the one-time pass over the file, then both parts in order.
      const all = await store.readEvents("run_1", 1, 4);
      expect(all.map((e) => [e.id, e.type === "builder.event" && e.data.kind === "text" ? e.data.text : ""])).toEqual([
        [2, "a2"],
        [3, "a3"],
        [4, "a4"],
        [5, "a5"],
      ]);
      expect((await store.appendEvent("run_1", text("c7"))).id).toBe(7);
      expect((await store.readEvents("run_1", 0)).map((e) => e.id)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    } finally {
      await store.close();
    }
  });

  it("after a restart, a read at any cursor returns exactly the events after it, however long the lines", async () => {
    const dataDir = tempDir("events");
    const first = await createLowdbStore({ dataDir });
    // ~1 MB over several read windows, with a few lines longer than a window.
    for (let i = 1; i <= 3000; i++)
      await first.appendEvent("run_1", text(i % 1000 === 0 ? "L".repeat(600_000) : `event ${i} `.repeat(20)));
    await first.close();

    const ids = (events: { id: number }[]) => events.map((e) => e.id);
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    const store = await createLowdbStore({ dataDir });
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
    const first = await createLowdbStore({ dataDir });
    for (let i = 1; i <= 3; i++) await first.appendEvent("run_1", text(`e${i}`));
    await first.close();
    const file = path.join(dataDir, "events", "run_1.jsonl");
    fs.appendFileSync(file, '{"id":4,"runId":"run_1","at":"2026-01-0');

    const store = await createLowdbStore({ dataDir });
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
    const first = await createLowdbStore({ dataDir });
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

    const store = await createLowdbStore({ dataDir });
    try {
      expect(await store.lastEventId("run_1")).toBe(1);
      expect((await store.appendEvent("run_1", text("e2"))).id).toBe(2);
      expect((await store.readEvents("run_1")).map((e) => e.id)).toEqual([1, 2]);
    } finally {
      await store.close();
    }
  });

  it("an event that does not match the schema is refused, not written", async () => {
    const store = await createLowdbStore({ dataDir: tempDir("events") });
    try {
      const bad = { type: "builder.event", turn: 1, data: { kind: "text" } } as unknown as NewRunEvent;
      await expect(store.appendEvent("run_1", bad)).rejects.toMatchObject({ code: "internal" });
      expect(await store.lastEventId("run_1")).toBe(0);
      expect((await store.appendEvent("run_1", text("ok"))).id).toBe(1);
    } finally {
      await store.close();
    }
  });
});
