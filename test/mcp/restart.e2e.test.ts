/**
 * MCP sessions and resumable streams across a kill -9: a real `patchbay serve` is killed with
 * SIGKILL while a client's `start_run` with `wait` is in flight, and started again on the same
 * data dir and port. The SDK's own client, reconnecting with `Last-Event-ID` as it does on any
 * cut, gets the call's result from the new process with the original request id: the run the
 * restart ended (failed, server_restart). The session itself is served again (not 404), an
 * unknown session is still 404, and a cursor of one session is not replayed to another.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir, waitFor } from "../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { startServe, type ServeChild } from "../support/serve.ts";

let fx: Fixtures;
const children: ServeChild[] = [];
const clients: Client[] = [];

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** An SDK client on `url` that keeps reconnecting through a restart (the server's `retry` paces it). */
async function connect(url: string, key: string) {
  const client = new Client({ name: "patchbay-restart-test", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL("/mcp", url), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
    reconnectionOptions: {
      initialReconnectionDelay: 500,
      maxReconnectionDelay: 2_000,
      reconnectionDelayGrowFactor: 1.5,
      maxRetries: 1_000,
    },
  });
  await client.connect(transport);
  clients.push(client);
  return { client, transport };
}

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        "test/hang": [[{ hang: true }]],
        // Turn 0 ends idle; the follow-up (turn 1) hangs.
        "test/then-hang": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "notes\n" } }] },
            { text: "Wrote NOTES.md." },
          ],
          [{ hang: true }],
        ],
      },
    },
  });
}, LOADED.hookMs);

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  for (const c of children) await c.stop();
  await fx?.close();
}, LOADED.hookMs);

describe("MCP across a kill -9 of patchbay serve", { timeout: LOADED.testMs }, () => {
  it("start_run and send_message with wait in flight get their results from the next process; the session lives on", async () => {
    const dataDir = tempDir("data");
    const env = { ...fx.env, PATCHBAY_DATA_DIR: dataDir, PORT: String(await freePort()) };
    const a = await startServe(env);
    children.push(a);
    const key = a.adminKey!;
    const { client, transport } = await connect(a.url, key);
    const sessionId = transport.sessionId!;

    // A run at idle, for the send_message below.
    const first = (await client.callTool(
      {
        name: "start_run",
        arguments: {
          repository: "acme/web",
          prompt: "notes",
          modelId: "test/then-hang",
          wait: true,
          validationMode: "minimal",
        },
      },
      undefined,
      { timeout: LOADED.turnWaitMs },
    )) as CallToolResult;
    expect(first.structuredContent).toMatchObject({ status: "idle", waited: true });
    const idleRun = (first.structuredContent as { id: string }).id;

    const seen = fx.model.nextRequest("test/hang");
    const tokens: string[] = [];
    const call = client.callTool(
      {
        name: "start_run",
        arguments: {
          repository: "acme/web",
          prompt: "hang",
          modelId: "test/hang",
          wait: true,
          validationMode: "minimal",
        },
      },
      undefined,
      { timeout: LOADED.turnWaitMs, onresumptiontoken: (t) => tokens.push(t) },
    ) as Promise<CallToolResult>;
    await seen;
    const followUpSeen = fx.model.nextRequest("test/then-hang");
    const followUp = client.callTool(
      { name: "send_message", arguments: { runId: idleRun, prompt: "more", wait: true } },
      undefined,
      { timeout: LOADED.turnWaitMs },
    ) as Promise<CallToolResult>;
    await followUpSeen;
    // The calls are on disk, with their runs, before the waits began.
    const sessionFile = path.join(dataDir, "mcp", "sessions", `${sessionId}.json`);
    const record = await waitFor(
      () => {
        const r = fs.existsSync(sessionFile)
          ? (JSON.parse(fs.readFileSync(sessionFile, "utf8")) as { calls: { runId?: string; tool: string }[] })
          : undefined;
        return r?.calls.length === 2 && r.calls.every((c) => c.runId) ? r : undefined;
      },
      { what: "the pending calls and their runs to be recorded" },
    );
    expect(record.calls).toMatchObject([{ tool: "start_run" }, { tool: "send_message", runId: idleRun }]);
    expect(fs.statSync(sessionFile).mode & 0o777).toBe(0o600);
    expect(tokens.length).toBeGreaterThanOrEqual(1); // the priming event: the client holds a cursor
    const runId = record.calls[0]!.runId!;

    a.proc.kill("SIGKILL");
    await a.exited;
    const b = await startServe(env);
    children.push(b);
    expect(b.url).toBe(a.url);

    // The SDK client reconnects with Last-Event-ID on its own; the new process answers the call.
    const result = await call;
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({
      id: runId,
      status: "failed",
      waited: true,
      error: { code: "server_restart" },
    });
    // The follow-up's turn was running: the restart ended it, and that is its answer.
    const followed = await followUp;
    expect(followed.isError).toBeFalsy();
    expect(followed.structuredContent).toMatchObject({
      id: idleRun,
      status: "failed",
      turnCount: 2,
      waited: true,
      error: { code: "server_restart" },
    });
    expect(JSON.parse(fs.readFileSync(sessionFile, "utf8"))).toMatchObject({ calls: [] });
    expect(b.stderr()).toMatch(/MCP session revived from its record/);
    expect(b.stderr()).toMatch(/answered an MCP call a previous process left/);

    // The session is served by the new process, not 404: the next call works as before.
    const got = (await client.callTool({ name: "get_run", arguments: { runId } })) as CallToolResult;
    expect(got.isError).toBeFalsy();
    expect(got.structuredContent).toMatchObject({ id: runId, status: "failed" });

    const raw = (sid: string, init: RequestInit & { headers?: Record<string, string> } = {}) =>
      fetch(new URL("/mcp", b.url), {
        ...init,
        headers: {
          authorization: `Bearer ${key}`,
          accept: "application/json, text/event-stream",
          "content-type": "application/json",
          "mcp-session-id": sid,
          "mcp-protocol-version": "2025-11-25",
          ...init.headers,
        },
      });
    // An unknown session is 404, as the specification says.
    const unknown = await raw("0b5bd2a0-5f0c-4d55-9a57-3c2a7e0e8f00", {
      method: "POST",
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
    });
    expect(unknown.status).toBe(404);
    // A cursor of the first session is not replayed to another one.
    const other = await connect(b.url, key);
    const foreign = await raw(other.transport.sessionId!, { method: "GET", headers: { "last-event-id": tokens[0]! } });
    const body = await foreign.text();
    expect(foreign.status).toBe(400);
    expect(body).not.toContain(runId);
    // Its own cursor replays the answer again (the stream is in the log), and ends.
    const again = await raw(sessionId, { method: "GET", headers: { "last-event-id": tokens[0]! } });
    expect(again.status).toBe(200);
    expect(await again.text()).toContain(`"id":"${runId}"`);

    // An ended session (DELETE) is 404 from then on, in this process and the next.
    await transport.terminateSession();
    const ended = await raw(sessionId, {
      method: "POST",
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "ping" }),
    });
    expect(ended.status).toBe(404);
    expect(fs.existsSync(sessionFile)).toBe(false);
  });
});
