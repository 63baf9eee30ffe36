/**
 * Issue 12, finding 4: a model that answers megabytes of text, and clients that request a
 * run's stream and never read it. Before the fix a 20 MB answer was a 20 MB event and twice
 * that in the store (run and turn), and each stalled stream buffered the whole replay in the
 * server (`res.write` without backpressure), with no limit on how many a key opened.
 * Real OpenCode, scripted model, the real app on a server whose sockets the test can see.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_EVENT_TEXT_BYTES } from "../../src/engine/events/bound.ts";
import { MAX_SUMMARY_BYTES } from "../../src/engine/run/summary.ts";
import { createHttpApp } from "../../src/http/app.ts";
import { waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { API } from "../support/http.ts";
import { errorCodeOf, serveMcp, type McpHarness } from "../support/mcp.ts";

const OWNER = "owner-big-text";
const MODEL = "test/big-text";
/**
 * The model's answer: 1.5 MB of lines, streamed in 64 KB deltas, well past both bounds. (An
 * 8 MB answer in 1 MB deltas never reaches the driver as a finished part: OpenCode's event
 * stream drops it, so it could not show the event bound; the bench runs 20 MB through the engine.)
 */
const ANSWER = Array.from({ length: 50_000 }, (_, i) => `line ${i} of a very long answer\n`).join("");
/** Stalled streams the default PATCHBAY_MAX_STREAMS_PER_KEY admits. */
const STALLED = 20;

let h: McpHarness;
let key: string;
let base: string;
let server: http.Server;
const serverSockets = new Set<net.Socket>();
const clients: net.Socket[] = [];
let runId: string;

beforeAll(async () => {
  h = await serveMcp({
    model: {
      scripts: {
        [MODEL]: [[{ text: ANSWER, chunkChars: 65_536 }]],
      },
    },
  });
  key = (await h.pb.keys.create({ name: "rw", ownerId: OWNER, scopes: ["read:builder", "write:builder"] })).key;
  // The app on a server of the test's own, so it can count the bytes waiting in each socket.
  server = http.createServer(
    createHttpApp({ engine: h.pb.engine, keys: h.pb.keys, log: h.pb.log, config: h.pb.config }),
  );
  server.on("connection", (s) => {
    serverSockets.add(s);
    s.on("close", () => serverSockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}, LOADED.hookMs);

afterAll(async () => {
  for (const c of clients) c.destroy();
  if (server) {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
  await h?.close();
}, LOADED.hookMs);

const api = (p: string, init: RequestInit = {}) =>
  fetch(base + p, { ...init, headers: { authorization: `Bearer ${key}`, ...init.headers } });

describe("big text and stalled readers", { timeout: LOADED.testMs }, () => {
  it("a 1.5 MB answer: events hold at most 64 KB of text, the run and turn records stay small, the whole summary is one request away", async () => {
    const created = await api(`${API}/runs`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ repository: "acme/web", prompt: "say a lot", modelId: MODEL }),
    });
    expect(created.status).toBe(201);
    runId = ((await created.json()) as { id: string }).id;
    expect((await h.pb.engine.waitForTurn(OWNER, runId)).status).toBe("idle");

    const events = await h.pb.engine.events(OWNER, runId, 0);
    const texts = events.flatMap((e) => (e.type === "builder.event" && e.data.kind === "text" ? [e.data.text] : []));
    expect(texts.length).toBeGreaterThanOrEqual(1);
    // The text itself at most 64 KB and the marker; its JSON a little more (escaped newlines).
    for (const t of texts) expect(Buffer.byteLength(t)).toBeLessThan(MAX_EVENT_TEXT_BYTES + 64);
    for (const e of events) expect(Buffer.byteLength(JSON.stringify(e))).toBeLessThan(MAX_EVENT_TEXT_BYTES * 1.1);
    expect(texts.at(-1)).toMatch(/^line 0 of a very long answer\n[\s\S]*… \[truncated \d+ bytes\]$/);

    // Before: the answer twice (run and turn), 3 MB. Now a summary is at most 16 KB in each record.
    const records = [await h.pb.store.getRun(runId), ...(await h.pb.store.listTurns(runId))];
    expect(Buffer.byteLength(JSON.stringify(records))).toBeLessThan(64 * 1024);

    const view = (await (await api(`${API}/runs/${runId}`)).json()) as { summary: string; summaryTruncated: boolean };
    expect(view.summaryTruncated).toBe(true);
    expect(Buffer.byteLength(view.summary)).toBeLessThan(MAX_SUMMARY_BYTES + 64);
    expect(view.summary).toMatch(/… \[truncated \d+ bytes\]$/);
    const whole = (await (await api(`${API}/runs/${runId}?fullSummary=1`)).json()) as typeof view;
    expect(whole.summaryTruncated).toBe(false);
    expect(whole.summary).toBe(ANSWER.trim());

    const { client } = await h.connect(key);
    const viaMcp = (await client.callTool({
      name: "get_run",
      arguments: { runId, fullSummary: true },
    })) as CallToolResult;
    expect((viaMcp.structuredContent as { summary: string }).summary).toBe(ANSWER.trim());
  });

  it(`${STALLED} clients that request a long stream and never read hold a bounded number of bytes in the server; the next is refused 429 too_many_streams, on MCP too, until they go`, async () => {
    // A long log of large events, as a long chatty run leaves: 300 events of 64 KB (19 MB).
    const chunk = "y".repeat(MAX_EVENT_TEXT_BYTES);
    for (let i = 0; i < 300; i++)
      await h.pb.store.appendEvent(runId, { type: "builder.event", turn: 1, data: { kind: "text", text: chunk } });
    const logBytes = (await h.pb.engine.events(OWNER, runId, 0)).reduce((n, e) => n + JSON.stringify(e).length, 0);
    expect(logBytes).toBeGreaterThan(19_000_000);

    // MCP pages by bytes too: one stream_events call is about 1 MB, not 500 events of 64 KB.
    const { client: reader } = await h.connect(key);
    const first = (await reader.callTool({
      name: "stream_events",
      arguments: { runId, after: 0, limit: 500 },
    })) as CallToolResult;
    const page = first.structuredContent as { events: unknown[]; done: boolean; nextCursor: number };
    expect(page.events.length).toBeGreaterThan(1);
    expect(page.events.length).toBeLessThan(50);
    expect(JSON.stringify(page.events).length).toBeLessThan(1.1 * 1024 * 1024);
    expect(page.done).toBe(false);

    const { port } = server.address() as AddressInfo;
    for (let i = 0; i < STALLED; i++) {
      const c = net.connect(port, "127.0.0.1");
      c.on("error", () => undefined);
      // The request, and then never a read: the socket's buffers fill and stay full.
      c.write(`GET ${API}/runs/${runId}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key}\r\n\r\n`);
      clients.push(c);
    }
    const stalled = () => [...serverSockets].filter((s) => s.writableNeedDrain);
    await waitFor(() => stalled().length >= STALLED, { timeoutMs: 120_000, what: "every stream to fill its socket" });

    // The kernel holds what it holds; in the server each stream waits with at most one frame
    // queued beyond the socket's high-water mark. Before the fix each held the rest of the log.
    const buffered = stalled().map((s) => s.writableLength);
    expect(buffered).toHaveLength(STALLED);
    expect(Math.max(...buffered)).toBeLessThan(MAX_EVENT_TEXT_BYTES + 64 * 1024);
    expect(buffered.reduce((a, b) => a + b, 0)).toBeLessThan(logBytes / 4);

    const refused = await api(`${API}/runs/${runId}/stream`);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("too_many_streams");
    const { client } = await h.connect(key);
    const last = (await h.pb.engine.events(OWNER, runId, 0)).at(-1)!.id;
    const viaMcp = (await client.callTool({
      name: "stream_events",
      arguments: { runId, after: last, waitMs: 1000 },
    })) as CallToolResult;
    expect(errorCodeOf(viaMcp)).toBe("too_many_streams");

    // Gone clients give their slots back.
    for (const c of clients.splice(0)) c.destroy();
    const follow = await waitFor(() => h.pb.engine.follow(OWNER, runId, { after: last }).catch(() => undefined), {
      what: "the stalled streams' slots to be released",
    });
    follow.close();
    await h.pb.engine.endSession(OWNER, runId);
  });
});
