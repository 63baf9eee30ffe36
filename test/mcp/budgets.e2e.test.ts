/**
 * Budgets on the MCP front: `limits` on start_run and send_message (the same schema as REST),
 * a run paused at its limit and continued by a message that raises it, and bad limits as a
 * tool error with the REST code. Real engine, OpenCode, gateway and scripted model.
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunView } from "../../src/engine/index.ts";
import type { Step } from "../fixtures/scripted-model.ts";
import { LOADED } from "../support/harness.ts";
import { errorCodeOf, REPO_FILES, serveMcp, TURN_CALL, type McpHarness } from "../support/mcp.ts";

const MODEL = "budget/mcp";
let h: McpHarness;
let client: Client;

const call = (name: string, args: Record<string, unknown>) =>
  client.callTool({ name, arguments: args }, undefined, TURN_CALL) as Promise<CallToolResult>;

beforeAll(async () => {
  const write: Step = { toolCalls: [{ name: "write", args: { filePath: "mcp.txt", content: "partial work\n" } }] };
  const more: Step = { toolCalls: [{ name: "bash", args: { command: "echo more", description: "More work" } }] };
  h = await serveMcp({
    repos: { "acme/web": REPO_FILES },
    model: { scripts: { [MODEL]: [[write, ...Array.from({ length: 40 }, () => more)], [{ text: "All done." }]] } },
  });
  const { key } = await h.pb.keys.create({ name: "mcp", scopes: ["read:builder", "write:builder"], ownerId: "mcp" });
  ({ client } = await h.connect(key));
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("budgets over MCP", { timeout: LOADED.testMs }, () => {
  it("start_run with bad limits is a tool error with invalid_request", async () => {
    const bad = await call("start_run", { repository: "acme/web", prompt: "x", limits: { maxTokens: 0 } });
    expect(errorCodeOf(bad)).toBe("invalid_request");
  });

  it("start_run pauses at maxTokens, and send_message raising the limit continues the same session", async () => {
    const started = await call("start_run", {
      repository: "acme/web",
      prompt: "Work until stopped.",
      modelId: MODEL,
      validationMode: "minimal",
      limits: { maxTokens: 400, onExceeded: "pause" },
      wait: true,
    });
    expect(started.isError).toBeFalsy();
    const paused = started.structuredContent as RunView & { waited: boolean };
    expect(paused.status).toBe("idle");
    expect(paused.error?.code).toBe("budget_exceeded");
    expect(paused.limits).toEqual({ maxTokens: 400, onExceeded: "pause" });
    expect(paused.changedPaths).toEqual(["mcp.txt"]);
    const text = started.content[0]?.type === "text" ? started.content[0].text : "";
    expect(text).toMatch(/Budget: \d+ of 400 tokens \(at a limit: pause\)/);

    const sent = await call("send_message", {
      runId: paused.id,
      prompt: "Finish.",
      limits: { maxTokens: 1_000_000 },
      wait: true,
    });
    expect(sent.isError).toBeFalsy();
    const done = sent.structuredContent as RunView;
    expect(done.id).toBe(paused.id);
    expect(done.status).toBe("idle");
    expect(done.error).toBeNull();
    expect(done.summary).toBe("All done.");
    expect(done.limits?.maxTokens).toBe(1_000_000);
    const last = h.model.agentRequests(MODEL).at(-1)!;
    expect(JSON.stringify(last.body.messages)).toContain("Work until stopped.");
  });
});
