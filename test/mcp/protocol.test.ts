/**
 * MCP by the 2025-11-25 specification, through the SDK's own Client over a linked in-memory
 * pair and the same `connect` (protocol guard included) the fronts use, on a real Patchbay
 * (no run is started here, so no OpenCode): protocol errors and their codes.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { EmptyResultSchema, McpError, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMcpServer, type PatchbayMcpServer } from "../../src/mcp/server.ts";
import { LOADED } from "../support/harness.ts";
import { errorCodeOf } from "../support/mcp.ts";
import { openTestPatchbay, type TestPatchbay } from "../support/patchbay.ts";

let pb: TestPatchbay;
let mcp: PatchbayMcpServer;
let client: Client;

beforeAll(async () => {
  pb = await openTestPatchbay({ OPENROUTER_API_KEY: "sk-or-v1-test-protocol", PATCHBAY_MODELS: "a/one,b/two" });
  mcp = createMcpServer(pb.engine, { ownerId: "owner-protocol", log: pb.log });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await mcp.connect(serverSide);
  client = new Client({ name: "protocol-test", version: "1.0.0" });
  await client.connect(clientSide);
}, LOADED.hookMs);

afterAll(async () => {
  await client?.close();
  mcp?.dispose();
  await pb?.close();
}, LOADED.hookMs);

/** The McpError a request is refused with. */
async function refusal(p: Promise<unknown>): Promise<McpError> {
  const e: unknown = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(e instanceof McpError)) throw new Error(`expected an McpError, got ${String(e)}`);
  return e;
}

describe("MCP protocol errors (2025-11-25)", () => {
  it("an unknown tool is a protocol error -32602, with the code in the message once", async () => {
    const e = await refusal(client.callTool({ name: "no_such_tool", arguments: {} }));
    expect(e.code).toBe(-32602);
    expect(e.message).toBe("MCP error -32602: Unknown tool: no_such_tool");
  });

  it("arguments a tool rejects stay a tool error (invalid_request) a model can read and correct", async () => {
    const result = (await client.callTool({ name: "get_run", arguments: { runId: "../x" } })) as CallToolResult;
    expect(errorCodeOf(result)).toBe("invalid_request");
    expect(JSON.stringify(result.content)).not.toContain("MCP error");
  });

  it("an invalid logging/setLevel level is -32602 with a readable message, not -32603 with a zod dump", async () => {
    await expect(client.setLoggingLevel("info")).resolves.toEqual({});
    const e = await refusal(client.setLoggingLevel("loud" as "info"));
    expect(e.code).toBe(-32602);
    expect(e.message).toMatch(/^MCP error -32602: Invalid params for logging\/setLevel: params\.level: /);
    expect(e.message).toContain('"debug"');
    expect(e.message).not.toContain("MCP error -32602: MCP error");
    expect(e.message).not.toContain("[{");
  });

  it("an unknown resource is -32002 for every template and for URIs no template matches", async () => {
    for (const uri of [
      "patchbay://runs/run_doesnotexist",
      "patchbay://runs/run_doesnotexist/patch",
      "patchbay://nothing/here",
      "test://static-text",
    ]) {
      const e = await refusal(client.readResource({ uri }));
      expect(e.code, uri).toBe(-32002);
      expect(e.message, uri).toBe(`MCP error -32002: Resource not found: ${uri}`);
      expect(e.data, uri).toMatchObject({ uri });
    }
    const sub = await refusal(client.subscribeResource({ uri: "test://watched-resource" }));
    expect(sub.code).toBe(-32002);
  });

  it("an unknown method stays -32601", async () => {
    const e = await refusal(client.request({ method: "no/such" } as never, EmptyResultSchema));
    expect(e.code).toBe(-32601);
    expect(e.message).toBe("MCP error -32601: Method not found");
  });
});

describe("MCP prompts and completions", () => {
  it("lists delegate_task and review_run with descriptions and their arguments", async () => {
    const { prompts } = await client.listPrompts();
    const byName = new Map(prompts.map((p) => [p.name, p]));
    expect([...byName.keys()].sort()).toEqual(["delegate_task", "review_run"]);
    for (const p of prompts) expect(p.description!.length, p.name).toBeGreaterThan(40);
    expect(byName.get("delegate_task")!.arguments).toEqual([
      expect.objectContaining({ name: "repository", required: true }),
      expect.objectContaining({ name: "task", required: true }),
      expect.objectContaining({ name: "publish", required: false }),
      expect.objectContaining({ name: "modelId", required: false }),
    ]);
    expect(byName.get("review_run")!.arguments).toEqual([expect.objectContaining({ name: "runId", required: true })]);
  });

  it("delegate_task asks the assistant to call start_run with the arguments it was given", async () => {
    const { messages } = await client.getPrompt({
      name: "delegate_task",
      arguments: { repository: "acme/web", task: "Fix the greeting", publish: "draft_pr" },
    });
    expect(messages).toHaveLength(1);
    const text = (messages[0]!.content as { text: string }).text;
    expect(text).toContain("Fix the greeting");
    expect(text).toContain(
      `start_run tool with these arguments: ${JSON.stringify({ repository: "acme/web", prompt: "Fix the greeting", publish: { mode: "draft_pr" }, wait: true })}`,
    );
  });

  it("a prompt with a missing argument, an unknown prompt and an unknown run are -32602", async () => {
    const missing = await refusal(client.getPrompt({ name: "delegate_task", arguments: { repository: "acme/web" } }));
    expect(missing.code).toBe(-32602);
    expect(missing.message).not.toContain("MCP error -32602: MCP error");
    expect((await refusal(client.getPrompt({ name: "nope" }))).code).toBe(-32602);
    const unknownRun = await refusal(client.getPrompt({ name: "review_run", arguments: { runId: "run_nope" } }));
    expect(unknownRun.code).toBe(-32602);
    expect(unknownRun.message).toBe("MCP error -32602: Unknown run: run_nope");
  });

  it("completes model ids from the catalog, and nothing for an owner without runs", async () => {
    const ref = { type: "ref/prompt" as const, name: "delegate_task" };
    const all = await client.complete({ ref, argument: { name: "modelId", value: "" } });
    expect(all.completion.values).toEqual([pb.engine.models().defaultModel, "a/one", "b/two"]);
    const b = await client.complete({ ref, argument: { name: "modelId", value: "B/" } });
    expect(b.completion).toEqual({ values: ["b/two"], total: 1, hasMore: false });
    const repos = await client.complete({ ref, argument: { name: "repository", value: "" } });
    expect(repos.completion.values).toEqual([]);
    const task = await client.complete({ ref, argument: { name: "task", value: "x" } });
    expect(task.completion.values).toEqual([]);
    const unknown = await refusal(
      client.complete({ ref: { type: "ref/prompt", name: "nope" }, argument: { name: "x", value: "" } }),
    );
    expect(unknown.code).toBe(-32602);
    const template = await refusal(
      client.complete({ ref: { type: "ref/resource", uri: "test://{x}" }, argument: { name: "x", value: "" } }),
    );
    expect(template.code).toBe(-32602);
  });
});
