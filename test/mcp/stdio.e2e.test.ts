/**
 * `patchbay mcp` end to end, as an MCP client launches it: the real CLI spawned with
 * `node bin/patchbay.mjs mcp`, the engine in that process (local sandbox, real OpenCode, the
 * scripted model), driven by the SDK's Client over stdio. Also: the MCP Inspector CLI against
 * the same command, as a person trying Patchbay would, and a check that stdout carries only
 * JSON-RPC frames.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.ts";
import { createLogger, openPatchbay } from "../../src/engine/index.ts";
import type { RunEvent } from "../../src/engine/events/schema.ts";
import { tempDir } from "../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import {
  errorCodeOf,
  followEvents,
  MAIN_MODEL,
  MAIN_SCRIPT,
  RecordingStdioTransport,
  REPO_FILES,
  TURN_CALL,
} from "../support/mcp.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = path.join(ROOT, "bin/patchbay.mjs");

let fx: Fixtures;
let dataDir: string;
let env: NodeJS.ProcessEnv;
let transport: RecordingStdioTransport;
let client: Client;
let runId: string;
let collected: RunEvent[] = [];

const call = (name: string, args: Record<string, unknown>, options?: Parameters<Client["callTool"]>[2]) =>
  client.callTool({ name, arguments: args }, undefined, { ...TURN_CALL, ...options }) as Promise<CallToolResult>;

beforeAll(async () => {
  fx = await startFixtures({ repos: { "acme/web": REPO_FILES }, model: { scripts: { [MAIN_MODEL]: MAIN_SCRIPT } } });
  dataDir = tempDir("data");
  env = {
    ...process.env,
    ...fx.env,
    PATCHBAY_DATA_DIR: dataDir,
    OPENROUTER_API_KEY: "sk-or-v1-test-mcp-stdio",
    // Chatty on purpose: every log line must still go to stderr.
    PATCHBAY_LOG_LEVEL: "debug",
  };
  transport = new RecordingStdioTransport({ command: process.execPath, args: [BIN, "mcp"], env, cwd: ROOT });
  client = new Client({ name: "patchbay-test", version: "1.0.0" });
  // Starting the CLI (tsx, the engine) can outlast the SDK's 60 s request timeout on a loaded machine.
  await client.connect(transport, { timeout: LOADED.hookMs });
}, LOADED.hookMs);

afterAll(async () => {
  await client?.close();
  await transport?.close();
  await fx?.close();
}, LOADED.hookMs);

describe("patchbay mcp (stdio)", { timeout: LOADED.testMs }, () => {
  it("lists the eleven tools with input and output schemas", async () => {
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(
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
      expect(t.inputSchema.type).toBe("object");
      expect(t.outputSchema?.type).toBe("object");
    }
    expect(client.getServerVersion()).toMatchObject({ name: "patchbay" });
    expect(client.getServerCapabilities()?.resources).toMatchObject({ subscribe: true });
    expect(client.getServerCapabilities()).toMatchObject({ prompts: {}, completions: {} });
    expect((await client.listPrompts()).prompts.map((p) => p.name).sort()).toEqual(["delegate_task", "review_run"]);
  });

  it("answers protocol errors as HTTP does: an unknown tool is -32602 with the code once", async () => {
    await expect(client.callTool({ name: "no_such_tool", arguments: {} })).rejects.toMatchObject({
      code: -32602,
      message: "MCP error -32602: Unknown tool: no_such_tool",
    });
    await expect(client.readResource({ uri: "patchbay://runs/run_nope" })).rejects.toMatchObject({ code: -32002 });
  });

  it("start_run with wait runs a turn as the local owner and reports progress", async () => {
    const progress: string[] = [];
    const result = await call(
      "start_run",
      { repository: "acme/web", prompt: "Add notes and fix the greeting", modelId: MAIN_MODEL, wait: true },
      {
        onprogress: (p) => progress.push(p.message ?? ""),
        resetTimeoutOnProgress: true,
      },
    );
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({
      status: "idle",
      waited: true,
      summary: "Added NOTES.md and changed the greeting.",
      changedPaths: ["NOTES.md", "src/app.js"],
      diffStats: { files: 2, additions: 3, deletions: 1 },
    });
    runId = (result.structuredContent as { id: string }).id;
    expect(progress).toEqual(["edited NOTES.md", "write done: NOTES.md", "edited src/app.js", "edit done: src/app.js"]);
  });

  it("send_message follows up on the same session, and stream_events collects the whole log once", async () => {
    const sent = await call("send_message", { runId, prompt: "Also add a guide" });
    expect(sent.structuredContent).toMatchObject({ id: runId, status: "running", turnCount: 2 });
    const { events, pages } = await followEvents(client, runId, { limit: 5 });
    expect(pages.at(-1)).toMatchObject({ done: true, status: "idle" });
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    const statuses = events.flatMap((e) => (e.type === "run.status" ? [e.data.status] : []));
    expect(statuses).toEqual(["queued", "running", "idle", "running", "idle"]);
    collected = events;
    const run = await call("get_run", { runId });
    expect(run.structuredContent).toMatchObject({
      status: "idle",
      turnCount: 2,
      summary: "Added a guide.",
      changedPaths: ["NOTES.md", "docs/guide.md", "src/app.js"],
    });
  });

  it("get_patch returns the accumulated diff, and only the asked-for files", async () => {
    const full = (await call("get_patch", { runId })).structuredContent as {
      patch: string;
      files: string[];
      truncated: boolean;
    };
    expect(full.files.sort()).toEqual(["NOTES.md", "docs/guide.md", "src/app.js"]);
    expect(full.patch).toContain("diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644");
    const one = (await call("get_patch", { runId, paths: ["src/app.js"] })).structuredContent as typeof full;
    expect(one.files).toEqual(["src/app.js"]);
    expect(one.patch).toContain("+  return 'hello, world';");
    expect(one.patch).not.toContain("NOTES.md");
  });

  it("answers an unknown run and bad input with tool errors, and keeps serving", async () => {
    expect(errorCodeOf(await call("get_run", { runId: "run_unknown" }))).toBe("run_not_found");
    expect(errorCodeOf(await call("send_message", { runId: "run_unknown", prompt: "hi" }))).toBe("run_not_found");
    expect(errorCodeOf(await call("start_run", { prompt: "no repository" }))).toBe("invalid_request");
    expect(errorCodeOf(await call("get_patch", { runId, maxBytes: -1 }))).toBe("invalid_request");
    expect((await call("list_models", {})).isError).toBeFalsy();
  });

  it("end_session completes the run; the stored log is exactly what stream_events returned; stdout held only JSON-RPC", async () => {
    const ended = await call("end_session", { runId });
    expect(ended.structuredContent).toMatchObject({ status: "completed", sessionActive: false });
    const tail = await call("stream_events", { runId, after: collected.at(-1)!.id, waitMs: 0 });
    const after = (tail.structuredContent as { events: RunEvent[] }).events;
    expect(after.map((e) => (e.type === "run.status" ? e.data.status : e.type))).toEqual(["completed"]);
    collected.push(...after);

    await client.close();
    await transport.close();
    expect(await transport.exitCode()).toBe(0);
    expect(transport.stderr).toContain("MCP stdio server ready");

    // Reopen the data dir the server left (its lock is released) and read the log directly.
    const pb = await openPatchbay(loadConfig({ PATCHBAY_DATA_DIR: dataDir, PATCHBAY_LOG_LEVEL: "silent" }), {
      log: createLogger({ level: "silent" }),
    });
    try {
      expect(await pb.engine.events("local", runId, 0)).toEqual(collected);
    } finally {
      await pb.close();
    }

    expect(transport.stdoutLines.length).toBeGreaterThan(10);
    for (const line of transport.stdoutLines) {
      const frame = JSON.parse(line) as { jsonrpc?: string };
      expect(frame.jsonrpc, line.slice(0, 200)).toBe("2.0");
    }
  });
});

describe("the MCP Inspector CLI against patchbay mcp", { timeout: LOADED.testMs }, () => {
  const run = promisify(execFile);
  const inspector = (args: string[]) =>
    run(
      "npx",
      [
        "--no-install",
        "@modelcontextprotocol/inspector",
        "--cli",
        process.execPath,
        BIN,
        "mcp",
        "-e",
        `PATCHBAY_DATA_DIR=${tempDir("inspector")}`,
        ...args,
      ],
      {
        cwd: ROOT,
        env: process.env,
        timeout: LOADED.hookMs,
      },
    );

  it("lists the tools and calls list_models", async () => {
    const listed = JSON.parse((await inspector(["--method", "tools/list"])).stdout) as { tools: { name: string }[] };
    expect(listed.tools.map((t) => t.name)).toContain("start_run");
    expect(listed.tools).toHaveLength(11);
    const called = JSON.parse(
      (await inspector(["--method", "tools/call", "--tool-name", "list_models"])).stdout,
    ) as CallToolResult;
    expect(called.isError).toBeFalsy();
    expect(called.structuredContent).toMatchObject({ defaultModel: expect.any(String), anyModel: true });
  });
});
