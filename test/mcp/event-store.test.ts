/** The MCP event log Streamable HTTP resumes from: per-session ids, replay after a cursor, bounds. */
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { describe, expect, it } from "vitest";
import { createMcpEventLog } from "../../src/mcp/event-store.ts";

const note = (n: number): JSONRPCMessage => ({ jsonrpc: "2.0", method: "notifications/progress", params: { n } });

async function replay(store: ReturnType<ReturnType<typeof createMcpEventLog>["forSession"]>, after: string) {
  const sent: [string, JSONRPCMessage][] = [];
  const stream = await store.replayEventsAfter(after, { send: async (id, m) => void sent.push([id, m]) });
  return { stream, sent };
}

describe("MCP event log", () => {
  it("replays a stream's frames after a cursor, skipping the priming frame and other streams", async () => {
    const store = createMcpEventLog().forSession();
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
    const log = createMcpEventLog();
    const mine = log.forSession();
    const theirs = log.forSession();
    const id = await theirs.storeEvent("_GET_stream", note(1));
    await mine.storeEvent("_GET_stream", note(2));
    expect(await mine.getStreamIdForEventId!(id)).toBeUndefined();
    await expect(replay(mine, id)).rejects.toThrow(/cannot be resumed/);
    for (const bad of ["", "1", "x-1", "999-1", "1-999"])
      expect(await mine.getStreamIdForEventId!(bad)).toBeUndefined();
  });

  it("stays within its bounds in frames and bytes, oldest first; a cursor whose successors were dropped cannot resume", async () => {
    const log = createMcpEventLog({ maxEvents: 3, maxBytes: 10_000 });
    const store = log.forSession();
    const ids = [];
    for (let i = 1; i <= 5; i++) ids.push(await store.storeEvent("s", note(i)));
    expect(log.size()).toMatchObject({ events: 3, streams: 1 });
    // Frame 2 is gone: resuming after frame 1 would skip it, so it is refused.
    expect(await store.getStreamIdForEventId!(ids[0]!)).toBeUndefined();
    expect((await replay(store, ids[1]!)).sent.map(([id]) => id)).toEqual(ids.slice(2));

    const bytes = createMcpEventLog({ maxEvents: 1000, maxBytes: 400 });
    const big = bytes.forSession();
    for (let i = 0; i < 20; i++) await big.storeEvent("s", note(i));
    expect(bytes.size().bytes).toBeLessThanOrEqual(400);
    expect(bytes.size().events).toBeGreaterThan(0);
  });

  it("a closed session's frames are forgotten at once", async () => {
    const log = createMcpEventLog();
    const a = log.forSession();
    const b = log.forSession();
    const id = await a.storeEvent("s", note(1));
    await b.storeEvent("s", note(2));
    a.dispose();
    expect(log.size()).toMatchObject({ events: 1, streams: 1 });
    expect(await a.getStreamIdForEventId!(id)).toBeUndefined();
    // Dropping for the bounds later skips what the closed session left.
    const small = createMcpEventLog({ maxEvents: 2 });
    const c = small.forSession();
    const d = small.forSession();
    await c.storeEvent("s", note(1));
    c.dispose();
    const kept = [await d.storeEvent("s", note(2)), await d.storeEvent("s", note(3))];
    expect(small.size().events).toBe(2);
    expect(await d.getStreamIdForEventId!(kept[0]!)).toBe("s");
  });
});
