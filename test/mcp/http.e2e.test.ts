/**
 * MCP over Streamable HTTP, end to end: the serve app (REST + the /mcp mount) on
 * 127.0.0.1:0 over a real engine (local sandbox, real OpenCode, scripted model), driven by
 * the SDK's own Client. One run is reused across the tests below, in order.
 */
import http from "node:http";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ResourceUpdatedNotificationSchema, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { patchUri, runUri } from "../../src/mcp/resources.ts";
import type { ScriptedModel } from "../fixtures/scripted-model.ts";
import { waitFor } from "../helpers.ts";
import { startCutProxy } from "../support/cut-proxy.ts";
import { LOADED } from "../support/harness.ts";
import {
  errorCodeOf,
  followEvents,
  MAIN_MODEL,
  MAIN_SCRIPT,
  REPO_FILES,
  serveMcp,
  TURN_CALL,
  type McpHarness,
} from "../support/mcp.ts";
import type { TestPatchbay } from "../support/patchbay.ts";

const OWNER = "owner-mcp";
const RESUME_MODEL = "test/mcp-resume";
let h: McpHarness;
let model: ScriptedModel;
let pb: TestPatchbay;
let url: URL;
let rwKey: string;
let readKey: string;
let otherKey: string;
let client: Client;
let transport: StreamableHTTPClientTransport;
let runId: string;

const call = (c: Client, name: string, args: Record<string, unknown>, options?: Parameters<Client["callTool"]>[2]) =>
  c.callTool({ name, arguments: args }, undefined, { ...TURN_CALL, ...options }) as Promise<CallToolResult>;

/** A raw JSON-RPC POST to /mcp, for what the SDK client would never send. */
async function rawPost(
  headers: Record<string, string>,
  body: unknown = { jsonrpc: "2.0", id: 1, method: "ping" },
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream", ...headers },
    body: JSON.stringify(body),
  });
}

const initialize = {
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "1" } },
};

beforeAll(async () => {
  h = await serveMcp({
    repos: { "acme/web": REPO_FILES },
    model: {
      scripts: {
        [MAIN_MODEL]: MAIN_SCRIPT,
        [RESUME_MODEL]: [
          [
            { toolCalls: [{ name: "write", args: { filePath: "RESUMED.md", content: "resumed\n" } }] },
            { text: "Resumed and done." },
          ],
        ],
      },
    },
    env: { OPENROUTER_API_KEY: "sk-or-v1-test-mcp-http" },
  });
  ({ model, pb, url } = h);
  rwKey = (await pb.keys.create({ name: "rw", ownerId: OWNER, scopes: ["read:builder", "write:builder"] })).key;
  readKey = (await pb.keys.create({ name: "ro", ownerId: OWNER, scopes: ["read:builder"] })).key;
  otherKey = (await pb.keys.create({ name: "other", ownerId: OWNER, scopes: ["read:builder", "write:builder"] })).key;
  ({ client, transport } = await h.connect(rwKey));
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("MCP over Streamable HTTP", { timeout: LOADED.testMs }, () => {
  it("lists the eleven tools with input and output schemas and the right annotations", async () => {
    const { tools } = await client.listTools();
    const byName = new Map(tools.map((t) => [t.name, t]));
    expect([...byName.keys()].sort()).toEqual(
      [
        "cancel_run",
        "delete_run",
        "end_session",
        "get_group",
        "get_patch",
        "get_run",
        "list_models",
        "list_runs",
        "send_message",
        "start_run",
        "stream_events",
      ].sort(),
    );
    for (const t of tools) {
      expect(t.description!.length, t.name).toBeGreaterThan(80);
      expect(t.inputSchema.type).toBe("object");
      expect(t.outputSchema?.type, t.name).toBe("object");
    }
    const start = byName.get("start_run")!;
    expect(Object.keys(start.inputSchema.properties!)).toEqual(
      expect.arrayContaining([
        "repository",
        "prompt",
        "modelId",
        "baseRef",
        "publish",
        "wait",
        "limits",
        "requirePlanApproval",
        "attempts",
      ]),
    );
    expect(start.inputSchema.required).toEqual(["prompt"]);
    expect((start.inputSchema as { additionalProperties?: unknown }).additionalProperties).toBe(false);
    expect(Object.keys(start.outputSchema!.properties!)).toEqual(
      expect.arrayContaining(["id", "status", "summary", "changedPaths", "diffStats", "usage", "limits", "waited"]),
    );
    expect(start.annotations).toMatchObject({ readOnlyHint: false, openWorldHint: true });
    expect(byName.get("send_message")!.annotations).toMatchObject({ openWorldHint: true });
    expect(Object.keys(byName.get("send_message")!.inputSchema.properties!)).toEqual(
      expect.arrayContaining(["runId", "prompt", "endSession", "wait", "taskKind", "limits"]),
    );
    for (const read of ["get_run", "list_runs", "get_patch", "stream_events", "list_models", "get_group"])
      expect(byName.get(read)!.annotations?.readOnlyHint, read).toBe(true);
    for (const destructive of ["cancel_run", "end_session", "delete_run"])
      expect(byName.get(destructive)!.annotations?.destructiveHint, destructive).toBe(true);
    expect(byName.get("stream_events")!.inputSchema.properties!["waitMs"]).toMatchObject({ maximum: 30000 });
  });

  it("start_run with wait returns summary, changedPaths and diffStats, with progress notifications per agent step", async () => {
    const progress: { progress: number; message?: string }[] = [];
    const result = await call(
      client,
      "start_run",
      { repository: "acme/web", prompt: "Add notes and fix the greeting", modelId: MAIN_MODEL, wait: true },
      {
        onprogress: (p) => progress.push(p),
        resetTimeoutOnProgress: true,
      },
    );
    expect(result.isError).toBeFalsy();
    const run = result.structuredContent as Record<string, unknown>;
    runId = run["id"] as string;
    expect(run).toMatchObject({
      status: "idle",
      sessionActive: true,
      waited: true,
      turnCount: 1,
      summary: "Added NOTES.md and changed the greeting.",
      changedPaths: ["NOTES.md", "src/app.js"],
      diffStats: { files: 2, additions: 3, deletions: 1 },
    });
    expect(result.content[0]).toMatchObject({ type: "text", text: expect.stringContaining(`Run ${runId}`) });
    // One notification per meaningful step: each tool call, each file edited.
    const messages = progress.map((p) => p.message ?? "");
    expect(messages.some((m) => m.startsWith("write done"))).toBe(true);
    expect(messages.some((m) => m.startsWith("edit done"))).toBe(true);
    expect(messages.filter((m) => m.startsWith("edited "))).toEqual(["edited NOTES.md", "edited src/app.js"]);
    expect(progress.map((p) => p.progress)).toEqual(progress.map((_, i) => i + 1));
  });

  it("completes the caller's repositories and run ids, never another owner's; review_run inlines summary, validation and patch", async () => {
    const ref = { type: "ref/prompt" as const, name: "delegate_task" };
    const repos = await client.complete({ ref, argument: { name: "repository", value: "ac" } });
    expect(repos.completion.values).toEqual(["acme/web"]);
    const runs = await client.complete({
      ref: { type: "ref/prompt", name: "review_run" },
      argument: { name: "runId", value: runId.slice(0, 6) },
    });
    expect(runs.completion.values).toContain(runId);
    const template = await client.complete({
      ref: { type: "ref/resource", uri: "patchbay://runs/{runId}/patch" },
      argument: { name: "runId", value: "" },
    });
    expect(template.completion.values).toContain(runId);

    const review = await client.getPrompt({ name: "review_run", arguments: { runId } });
    const text = (review.messages[0]!.content as { text: string }).text;
    expect(text).toContain(`run ${runId} on acme/web`);
    expect(text).toContain("## Summary\nAdded NOTES.md and changed the greeting.");
    expect(text).toContain("## Validation");
    expect(text).toContain("```diff\ndiff --git a/NOTES.md b/NOTES.md");
    expect(text).toContain("+  return 'hello, world';");

    // Another owner's key: no suggestions from this owner's runs, and the run is unknown.
    const stranger = await pb.keys.create({ name: "stranger", ownerId: "owner-mcp-stranger" });
    const { client: other } = await h.connect(stranger.key);
    expect((await other.complete({ ref, argument: { name: "repository", value: "" } })).completion.values).toEqual([]);
    expect(
      (
        await other.complete({
          ref: { type: "ref/prompt", name: "review_run" },
          argument: { name: "runId", value: "" },
        })
      ).completion.values,
    ).toEqual([]);
    await expect(other.getPrompt({ name: "review_run", arguments: { runId } })).rejects.toMatchObject({
      code: -32602,
      message: `MCP error -32602: Unknown run: ${runId}`,
    });
  });

  it("send_message continues the same session; a subscribed resource is told when the run changes status", async () => {
    const updated: string[] = [];
    client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => void updated.push(n.params.uri));
    await client.subscribeResource({ uri: runUri(runId) });

    const result = await call(client, "send_message", { runId, prompt: "Also add a guide", wait: true });
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({
      id: runId,
      status: "idle",
      turnCount: 2,
      waited: true,
      summary: "Added a guide.",
      changedPaths: ["NOTES.md", "docs/guide.md", "src/app.js"],
    });
    // The same OpenCode session saw both prompts.
    expect(
      model
        .agentRequests(MAIN_MODEL)
        .at(-1)!
        .body.messages.filter((m) => m.role === "user"),
    ).toHaveLength(2);
    await waitFor(() => updated.filter((u) => u === runUri(runId)).length >= 2, {
      what: "resource updates (running, idle)",
    });
    await client.unsubscribeResource({ uri: runUri(runId) });

    const read = await client.readResource({ uri: runUri(runId) });
    expect(JSON.parse((read.contents[0] as { text: string }).text)).toMatchObject({
      id: runId,
      status: "idle",
      turnCount: 2,
    });
    const patch = await client.readResource({ uri: patchUri(runId) });
    expect(patch.contents[0]).toMatchObject({
      mimeType: "text/x-diff",
      text: expect.stringContaining("docs/guide.md"),
    });
    const listed = await client.listResources();
    expect(listed.resources.map((r) => r.uri)).toContain(runUri(runId));
  });

  it("stream_events, called in a loop while a turn runs, returns every event exactly once", async () => {
    const sent = await call(client, "send_message", { runId, prompt: "Add more docs" });
    expect(sent.structuredContent).toMatchObject({ status: "running", waited: false });
    // A small page size makes the loop page through the earlier turns, then wait on the live one.
    const { events, pages } = await followEvents(client, runId, { limit: 7 });
    const stored = await pb.engine.events(OWNER, runId, 0);
    expect(events.map((e) => e.id)).toEqual(stored.map((e) => e.id));
    expect(events).toEqual(stored);
    expect(pages.at(-1)).toMatchObject({ status: "idle", done: true, nextCursor: stored.at(-1)!.id });
    // The loop never spun: a call with nothing new waited for the next event instead of returning empty.
    expect(pages.filter((p) => p.events.length === 0)).toEqual([]);
    // Nothing more after done: an immediate call returns no events and is still done.
    const again = await call(client, "stream_events", { runId, after: stored.at(-1)!.id, waitMs: 0 });
    expect(again.structuredContent).toMatchObject({ events: [], done: true, status: "idle" });
  });

  it("a client that stops waiting does not cancel the run", async () => {
    const abort = new AbortController();
    const pending = call(
      client,
      "send_message",
      { runId, prompt: "A slow change", wait: true },
      {
        signal: abort.signal,
        onprogress: (p) => {
          // The first finished tool call: the agent is mid-turn. Walk away.
          if (p.message?.startsWith("write done")) abort.abort();
        },
      },
    );
    await expect(pending).rejects.toThrow(/abort/i);
    expect((await pb.engine.getRun(OWNER, runId)).status).toBe("running");
    // Busy, not lost: a message to the working run is refused with the REST code.
    expect(errorCodeOf(await call(client, "send_message", { runId, prompt: "meanwhile" }))).toBe("session_busy");
    const done = await pb.engine.waitForTurn(OWNER, runId);
    expect(done).toMatchObject({ status: "idle", turnCount: 4, summary: "Slow turn done." });
  });

  it("get_patch returns the diff, filtered by paths and capped by maxBytes", async () => {
    const full = (await call(client, "get_patch", { runId })).structuredContent as {
      patch: string;
      files: string[];
      truncated: boolean;
      totalBytes: number;
    };
    expect(full.files.sort()).toEqual(["NOTES.md", "docs/guide.md", "docs/more.md", "slow.txt", "src/app.js"]);
    expect(full.truncated).toBe(false);
    expect(full.totalBytes).toBe(Buffer.byteLength(full.patch));
    expect(full.patch).toContain("-  return 'hello';\n+  return 'hello, world';\n");

    const docs = (await call(client, "get_patch", { runId, paths: ["docs"] })).structuredContent as typeof full;
    expect(docs.files.sort()).toEqual(["docs/guide.md", "docs/more.md"]);
    expect(docs.patch).not.toContain("NOTES.md");
    expect(docs.patch.startsWith("diff --git a/docs/")).toBe(true);

    const capped = (await call(client, "get_patch", { runId, maxBytes: 120 })).structuredContent as typeof full;
    expect(capped.truncated).toBe(true);
    expect(Buffer.byteLength(capped.patch)).toBeLessThanOrEqual(120);
    expect(capped.patch.endsWith("\n")).toBe(true);
    expect(capped.totalBytes).toBe(full.totalBytes);
  });

  it("answers an unknown run, bad input and a cursor past the end with tool errors carrying the REST error codes", async () => {
    expect(errorCodeOf(await call(client, "get_run", { runId: "run_doesnotexist" }))).toBe("run_not_found");
    expect(errorCodeOf(await call(client, "get_patch", { runId: "run_doesnotexist" }))).toBe("run_not_found");
    expect(errorCodeOf(await call(client, "start_run", { repository: "https://evil/x", prompt: "" }))).toBe(
      "invalid_request",
    );
    expect(errorCodeOf(await call(client, "start_run", { repository: "acme/web", prompt: "x", unknownField: 1 }))).toBe(
      "invalid_request",
    );
    expect(errorCodeOf(await call(client, "send_message", { runId }))).toBe("invalid_request");
    expect(errorCodeOf(await call(client, "stream_events", { runId, waitMs: 999_999 }))).toBe("invalid_request");
    expect(errorCodeOf(await call(client, "stream_events", { runId, after: 10_000 }))).toBe("event_not_found");
    // The server is still fine.
    expect((await call(client, "list_models", {})).structuredContent).toMatchObject({
      defaultModel: expect.any(String),
    });
  });

  it("end_session completes the run and frees its session; ending again changes nothing", async () => {
    const ended = await call(client, "end_session", { runId });
    expect(ended.structuredContent).toMatchObject({ id: runId, status: "completed", sessionActive: false });
    const again = await call(client, "end_session", { runId });
    expect(again.structuredContent).toMatchObject({ status: "completed" });
    expect(errorCodeOf(await call(client, "cancel_run", { runId: "run_nope" }))).toBe("run_not_found");
    expect(errorCodeOf(await call(client, "delete_run", { runId: "run_nope" }))).toBe("run_not_found");
    const listed = (await call(client, "list_runs", { limit: 10 })).structuredContent as {
      runs: { id: string; status: string }[];
    };
    expect(listed.runs.find((r) => r.id === runId)?.status).toBe("completed");
  });

  it("frames carry ids: a priming event with retry opens each POST stream; batches are refused from 2025-06-18 on", async () => {
    const headers = {
      authorization: `Bearer ${rwKey}`,
      "mcp-session-id": transport.sessionId!,
      "mcp-protocol-version": "2025-11-25",
    };
    const res = await rawPost(headers, { jsonrpc: "2.0", id: 7, method: "ping" });
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const frames = (await res.text()).split("\n\n").filter(Boolean);
    expect(frames[0]).toMatch(/^id: [0-9a-f]{12}-1\nretry: 1000\ndata: $/);
    expect(frames[1]).toMatch(/^event: message\nid: [0-9a-f]{12}-2\ndata: \{.*"id":7\}$/);

    const batch = [
      { jsonrpc: "2.0", id: 8, method: "ping" },
      { jsonrpc: "2.0", id: 9, method: "ping" },
    ];
    const refused = await rawPost(headers, batch);
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({
      error: { code: -32600, message: expect.stringContaining("2025-11-25") },
    });
    const old = await rawPost({ ...headers, "mcp-protocol-version": "2025-03-26" }, batch);
    expect(old.status).toBe(200);
    expect(await old.text()).toContain('"id":9');
  });

  it("a client cut off mid start_run with wait reconnects with Last-Event-ID and gets its result", async () => {
    const proxy = await startCutProxy({ host: "127.0.0.1", port: Number(url.port) });
    const resuming = new Client({ name: "patchbay-resume-test", version: "1.0.0" });
    const via = new StreamableHTTPClientTransport(new URL("/mcp", proxy.base), {
      requestInit: { headers: { Authorization: `Bearer ${rwKey}` } },
    });
    try {
      await resuming.connect(via);
      const tokens: string[] = [];
      const progress: string[] = [];
      const result = (await resuming.callTool(
        {
          name: "start_run",
          arguments: { repository: "acme/web", prompt: "Resume me", modelId: RESUME_MODEL, wait: true },
        },
        undefined,
        {
          ...TURN_CALL,
          onprogress: (p) => progress.push(p.message ?? ""),
          onresumptiontoken: (token) => {
            tokens.push(token);
            // The priming event: the call has just begun. Drop the connection under it.
            if (tokens.length === 1) proxy.cut();
          },
        },
      )) as CallToolResult;
      expect(proxy.resumes()).toBeGreaterThanOrEqual(1);
      expect(result.isError).toBeFalsy();
      expect(result.structuredContent).toMatchObject({
        status: "idle",
        waited: true,
        summary: "Resumed and done.",
        changedPaths: ["RESUMED.md"],
      });
      // What happened while the client was away came by replay: nothing lost.
      expect(progress.some((m) => m.startsWith("write done"))).toBe(true);
      const resumedRun = (result.structuredContent as { id: string }).id;
      await resuming.callTool({ name: "end_session", arguments: { runId: resumedRun } });
    } finally {
      await resuming.close().catch(() => undefined);
      await proxy.close();
    }
  });

  describe("security", () => {
    it("answers 401 without a key or with a bad one", async () => {
      const none = await rawPost({}, initialize);
      expect(none.status).toBe(401);
      expect((await none.json()) as unknown).toMatchObject({ error: { code: "unauthorized" } });
      expect((await rawPost({ authorization: "Bearer pb_notakey" }, initialize)).status).toBe(401);
    });

    it("a read-only key can read but start_run answers a forbidden tool error", async () => {
      const { client: ro } = await h.connect(readKey);
      expect((await ro.listTools()).tools.length).toBe(11);
      expect((await call(ro, "get_run", { runId })).structuredContent).toMatchObject({ id: runId });
      expect(errorCodeOf(await call(ro, "start_run", { repository: "acme/web", prompt: "x" }))).toBe("forbidden");
      expect(errorCodeOf(await call(ro, "cancel_run", { runId }))).toBe("forbidden");
    });

    it("a key limited to acme/* cannot start_run on other/repo: a repository_not_allowed tool error, no run", async () => {
      const scoped = await pb.keys.create({ name: "acme only", ownerId: "owner-mcp-scoped", repos: ["acme/*"] });
      const { client: c } = await h.connect(scoped.key);
      const refused = await call(c, "start_run", { repository: "other/repo", prompt: "x" });
      expect(errorCodeOf(refused)).toBe("repository_not_allowed");
      expect((await pb.engine.listRuns("owner-mcp-scoped")).runs).toEqual([]);
    });

    it("refuses a foreign Origin and a foreign Host with 403", async () => {
      const evil = await rawPost({ authorization: `Bearer ${rwKey}`, origin: "http://evil.example" }, initialize);
      expect(evil.status).toBe(403);
      const local = await rawPost(
        { authorization: `Bearer ${rwKey}`, origin: `http://localhost:${url.port}` },
        initialize,
      );
      expect(local.status).toBe(200);
      const status = await new Promise<number>((resolve, reject) => {
        const req = http.request(
          url,
          {
            method: "POST",
            headers: { host: "evil.example", authorization: `Bearer ${rwKey}`, "content-type": "application/json" },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode!);
          },
        );
        req.on("error", reject);
        req.end(JSON.stringify(initialize));
      });
      expect(status).toBe(403);
    });

    it("a session answers 404 to another key, and to an unknown id", async () => {
      const sid = transport.sessionId!;
      expect(sid).toMatch(/^[0-9a-f-]{36}$/);
      const headers = { "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18" };
      expect((await rawPost({ ...headers, authorization: `Bearer ${rwKey}` })).status).toBe(200);
      expect((await rawPost({ ...headers, authorization: `Bearer ${otherKey}` })).status).toBe(404);
      expect(
        (
          await rawPost({
            ...headers,
            "mcp-session-id": "00000000-0000-4000-8000-000000000000",
            authorization: `Bearer ${rwKey}`,
          })
        ).status,
      ).toBe(404);
      // The rightful owner's session still works.
      expect((await client.listTools()).tools.length).toBe(11);
    });
  });
});
