/**
 * Answering what a dead process left in flight, for the cases the kill -9 test cannot time: the
 * data dir is written as a kill leaves it (a session record, the streams' priming frames and
 * the pending calls), then `/mcp` is served over it by a real app and engine, and clients
 * resume with raw `GET` + `Last-Event-ID`:
 * - a `start_run` with `wait` that died before it had a run: a `server_restart` tool error;
 * - one whose run is not the caller's (or is gone): the tool error REST would give;
 * - a request that was not a waiting call: a JSON-RPC internal error, send it again.
 * Each answer carries the original request id, is written before it is sent (a second resume
 * replays it), and clears the pending call.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMcpMount, type McpMount } from "../../src/http/mcp-mount.ts";
import { LOADED, openHarness, type Harness } from "../support/harness.ts";
import { serveApp } from "../support/http.ts";

const SID = "6d0c7d52-3f5e-4d8a-9a39-6f7f0c1e2b3a";
const STREAMS = {
  noRun: { id: "11111111-0000-4000-8000-000000000001", key: "aaaaaaaaaaaa", request: "call-1" },
  goneRun: { id: "11111111-0000-4000-8000-000000000002", key: "bbbbbbbbbbbb", request: 2 },
  other: { id: "11111111-0000-4000-8000-000000000003", key: "cccccccccccc", request: 3 },
};

let h: Harness;
let mcp: McpMount;
let served: { base: string; close(): Promise<void> };
let key: string;

beforeAll(async () => {
  h = await openHarness();
  const created = await h.pb.keys.create({ name: "rw", scopes: ["read:builder", "write:builder"] });
  key = created.key;
  const dir = path.join(h.pb.dataDir, "mcp");
  fs.mkdirSync(path.join(dir, "sessions"), { recursive: true, mode: 0o700 });
  fs.mkdirSync(path.join(dir, "events"), { recursive: true, mode: 0o700 });
  const now = new Date().toISOString();
  fs.writeFileSync(
    path.join(dir, "sessions", `${SID}.json`),
    JSON.stringify({
      id: SID,
      keyId: created.record.id,
      protocolVersion: "2025-11-25",
      clientInfo: { name: "crashed-client", version: "1.0.0" },
      capabilities: {},
      createdAt: now,
      lastSeenAt: now,
      calls: [
        { requestId: STREAMS.noRun.request, streamId: STREAMS.noRun.id, tool: "start_run" },
        { requestId: STREAMS.goneRun.request, streamId: STREAMS.goneRun.id, tool: "send_message", runId: "run_gone" },
      ],
    }),
    { mode: 0o600 },
  );
  // Each stream's priming frame, and a torn line where the kill struck.
  const lines = Object.values(STREAMS).map((s) =>
    JSON.stringify({ s: SID, t: s.id, x: s.key, q: 1, m: {}, r: [s.request] }),
  );
  fs.writeFileSync(path.join(dir, "events", "0000000001.jsonl"), lines.join("\n") + '\n{"s":"6d0c', { mode: 0o600 });

  mcp = createMcpMount({ engine: h.pb.engine, log: h.pb.log, host: "127.0.0.1", dataDir: h.pb.dataDir });
  served = await serveApp(h.pb, { mountMcp: mcp.mount });
}, LOADED.hookMs);

afterAll(async () => {
  await mcp?.close();
  await served?.close();
  await h?.close();
}, LOADED.hookMs);

/** Resume `stream` after its priming frame; the SSE frames that come back, parsed. */
async function resume(stream: { key: string }, sid = SID) {
  const res = await fetch(`${served.base}/mcp`, {
    headers: {
      authorization: `Bearer ${key}`,
      accept: "text/event-stream",
      "mcp-session-id": sid,
      "mcp-protocol-version": "2025-11-25",
      "last-event-id": `${stream.key}-1`,
    },
  });
  const text = await res.text();
  const frames = text
    .split("\n\n")
    .filter((f) => f.includes("data: "))
    .map((f) => ({ id: /^id: (.*)$/m.exec(f)?.[1], data: JSON.parse(/^data: (.*)$/m.exec(f)![1]!) as any })); // eslint-disable-line @typescript-eslint/no-explicit-any
  return { status: res.status, frames };
}

describe("resuming streams a dead process left", { timeout: LOADED.testMs }, () => {
  it("a waiting call that had no run yet gets a server_restart tool error, once, with its own id", async () => {
    const first = await resume(STREAMS.noRun);
    expect(first.status).toBe(200);
    expect(first.frames).toHaveLength(1);
    const answer = first.frames[0]!;
    expect(answer.id).toBe(`${STREAMS.noRun.key}-2`);
    expect(answer.data).toMatchObject({ jsonrpc: "2.0", id: "call-1", result: { isError: true } });
    expect(answer.data.result.content[0].text).toMatch(/^Error server_restart: .*list_runs/);
    // Written before it was sent: the next resume replays the same frame.
    expect((await resume(STREAMS.noRun)).frames).toEqual([answer]);
  });

  it("a waiting call whose run cannot be read gets that error; another request gets -32603", async () => {
    const gone = await resume(STREAMS.goneRun);
    expect(gone.frames[0]!.data).toMatchObject({ id: 2, result: { isError: true } });
    expect(gone.frames[0]!.data.result.content[0].text).toMatch(/^Error run_not_found/);
    const other = await resume(STREAMS.other);
    expect(other.frames[0]!.data).toMatchObject({ id: 3, error: { code: -32603 } });
    const record = JSON.parse(fs.readFileSync(path.join(h.pb.dataDir, "mcp", "sessions", `${SID}.json`), "utf8"));
    expect(record.calls).toEqual([]);
  });

  it("the session is served again; another key, or an unknown session, is 404", async () => {
    const ping = await fetch(`${served.base}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${key}`,
        accept: "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-session-id": SID,
        "mcp-protocol-version": "2025-11-25",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "ping" }),
    });
    expect(ping.status).toBe(200);
    expect(await ping.text()).toContain('"id":9');
    const other = await h.pb.keys.create({ name: "other", scopes: ["read:builder"] });
    const foreign = await fetch(`${served.base}/mcp`, {
      headers: { authorization: `Bearer ${other.key}`, accept: "text/event-stream", "mcp-session-id": SID },
    });
    expect(foreign.status).toBe(404);
    expect((await resume(STREAMS.noRun, "6d0c7d52-3f5e-4d8a-9a39-000000000000")).status).toBe(404);
  });
});
