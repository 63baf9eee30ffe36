/**
 * The MCP event log Streamable HTTP resumes from: per-session ids, replay after a cursor,
 * bounds in frames and bytes on disk, and what a new process reads back from the data dir.
 */
import fs from "node:fs";
import path from "node:path";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { describe, expect, it } from "vitest";
import { createMcpEventLog, type SessionEventStore } from "../../src/mcp/event-store.ts";
import { tempDir } from "../helpers.ts";

const note = (n: number): JSONRPCMessage => ({ jsonrpc: "2.0", method: "notifications/progress", params: { n } });
const S1 = "11111111-1111-4111-8111-111111111111";
const S2 = "22222222-2222-4222-8222-222222222222";

async function replay(store: SessionEventStore, after: string) {
  const sent: [string, JSONRPCMessage][] = [];
  const stream = await store.replayEventsAfter(after, { send: async (id, m) => void sent.push([id, m]) });
  return { stream, sent };
}

/** Bytes and lines of every segment file in `dir`. */
function onDisk(dir: string): { bytes: number; lines: number } {
  let bytes = 0;
  let lines = 0;
  for (const name of fs.readdirSync(dir)) {
    const text = fs.readFileSync(path.join(dir, name), "utf8");
    bytes += Buffer.byteLength(text);
    lines += text.split("\n").filter(Boolean).length;
  }
  return { bytes, lines };
}

describe("MCP event log", () => {
  it("replays a stream's frames after a cursor, skipping the priming frame and other streams", async () => {
    const store = createMcpEventLog(tempDir("mcp-events")).forSession(S1);
    const priming = await store.storeEvent("s1", {} as JSONRPCMessage);
    const a = await store.storeEvent("s1", note(1));
    await store.storeEvent("s2", note(99));
    const b = await store.storeEvent("s1", note(2));
    expect(await store.getStreamIdForEventId!(priming)).toBe("s1");
    expect(await replay(store, priming)).toEqual({
      stream: "s1",
      sent: [
        [a, note(1)],
        [b, note(2)],
      ],
    });
    expect((await replay(store, a)).sent).toEqual([[b, note(2)]]);
    expect((await replay(store, b)).sent).toEqual([]);
  });

  it("a cursor from another session, or one that names nothing, is unknown", async () => {
    const log = createMcpEventLog(tempDir("mcp-events"));
    const mine = log.forSession(S1);
    const theirs = log.forSession(S2);
    const id = await theirs.storeEvent("_GET_stream", note(1));
    await mine.storeEvent("_GET_stream", note(2));
    expect(await mine.getStreamIdForEventId!(id)).toBeUndefined();
    await expect(replay(mine, id)).rejects.toThrow(/cannot be resumed/);
    for (const bad of ["", "1", "x-1", "999-1", "1-999", "0123456789ab-1", `${id.split("-")[0]}-999`])
      expect(await mine.getStreamIdForEventId!(bad)).toBeUndefined();
  });

  it("stays within its bounds in frames and bytes on disk, oldest first; a cursor whose successors were dropped cannot resume", async () => {
    const dir = tempDir("mcp-events");
    const log = createMcpEventLog(dir, { maxEvents: 3, maxBytes: 100_000 });
    const store = log.forSession(S1);
    const ids = [];
    for (let i = 1; i <= 5; i++) ids.push(await store.storeEvent("s", note(i)));
    expect(log.size()).toMatchObject({ events: 3, streams: 1 });
    expect(onDisk(dir).lines).toBe(3);
    // Frame 2 is gone: resuming after frame 1 would skip it, so it is refused.
    expect(await store.getStreamIdForEventId!(ids[0]!)).toBeUndefined();
    expect((await replay(store, ids[1]!)).sent.map(([id]) => id)).toEqual(ids.slice(2));

    const bytesDir = tempDir("mcp-events");
    const bytes = createMcpEventLog(bytesDir, { maxEvents: 100_000, maxBytes: 4_000 });
    const big = bytes.forSession(S1);
    for (let i = 0; i < 500; i++) {
      await big.storeEvent(`s${i % 7}`, note(i));
      expect(onDisk(bytesDir).bytes).toBeLessThanOrEqual(4_000);
    }
    expect(bytes.size().bytes).toBe(onDisk(bytesDir).bytes);
    // Whole segments go (a sixteenth of the bound each): the log stays near its bound.
    expect(bytes.size().bytes).toBeGreaterThan(3_000);
    expect(bytes.size().segments).toBeLessThanOrEqual(17);
    for (const name of fs.readdirSync(bytesDir))
      expect(fs.statSync(path.join(bytesDir, name)).mode & 0o777).toBe(0o600);
    expect(fs.statSync(bytesDir).mode & 0o777).toBe(0o700);
  });

  it("a new process reads the log back: the same session resumes, its streams are inherited, a torn last line is cut off", async () => {
    const dir = tempDir("mcp-events");
    const first = createMcpEventLog(dir);
    const before = first.forSession(S1, { currentRequests: () => [7] });
    const priming = await before.storeEvent("post-1", {} as JSONRPCMessage);
    const progress = await before.storeEvent("post-1", note(1));
    await first.forSession(S2).storeEvent("post-2", note(2));
    first.close();
    // A kill mid-append leaves half a line.
    const last = fs.readdirSync(dir).sort().at(-1)!;
    fs.appendFileSync(path.join(dir, last), '{"s":"');

    const second = createMcpEventLog(dir);
    const after = second.forSession(S1);
    expect(second.size()).toMatchObject({ events: 3, streams: 2 });
    expect((await replay(after, priming)).sent).toEqual([[progress, note(1)]]);
    expect(await after.foreign(priming)).toMatchObject({ id: "post-1", requestIds: [7] });
    expect([...(await after.foreign(priming))!.answered]).toEqual([]);
    expect(await after.next(priming, new AbortController().signal)).toBe("more");
    expect(await after.next(progress, new AbortController().signal)).toBe("orphaned");
    // The answer goes on the same stream, after what the dead process wrote, once.
    const answer = await after.storeAnswer(priming, { jsonrpc: "2.0", id: 7, result: {} });
    expect(await after.storeAnswer(progress, { jsonrpc: "2.0", id: 7, result: { again: true } })).toBe(answer);
    expect((await replay(after, progress)).sent).toEqual([[answer, { jsonrpc: "2.0", id: 7, result: {} }]]);
    expect([...(await after.foreign(priming))!.answered]).toEqual([7]);
    // Another session's cursor is still unknown here.
    expect(await after.foreign("ffffffffffff-1")).toBeUndefined();
    // A stream this process opens is not foreign.
    const fresh = await after.storeEvent("post-3", note(3));
    expect(await after.foreign(fresh)).toBeUndefined();
  });

  it("a closed session's streams are forgotten at once, and muted frames are not stored", async () => {
    const log = createMcpEventLog(tempDir("mcp-events"));
    const a = log.forSession(S1);
    const b = log.forSession(S2);
    const id = await a.storeEvent("s", note(1));
    const kept = await b.storeEvent("s", note(2));
    await a.dispose();
    expect(log.size()).toMatchObject({ streams: 1 });
    expect(await a.getStreamIdForEventId!(id)).toBeUndefined();
    expect(await b.getStreamIdForEventId!(kept)).toBe("s");
    const events = log.size().events;
    await b.muted(() => b.storeEvent("s", note(3)));
    expect(log.size().events).toBe(events);
  });
});
