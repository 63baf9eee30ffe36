/**
 * Attempts and plan approval on the MCP front: `start_run` with `attempts` answers the first
 * sibling with its `group`, `get_group` lists the siblings and names the best once ranked,
 * and the tools refuse what REST refuses. Real OpenCode, the scripted model, a real client.
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOADED } from "../support/harness.ts";
import { serveMcp, TURN_CALL, type McpHarness } from "../support/mcp.ts";

let h: McpHarness;
let client: Client;

const call = (name: string, args: Record<string, unknown>) =>
  client.callTool({ name, arguments: args }, undefined, TURN_CALL) as Promise<CallToolResult>;

beforeAll(async () => {
  h = await serveMcp({
    repos: {
      "acme/tries": {
        "README.md": "# Tries\n",
        ".patchbay.json": JSON.stringify({ validation: { check: ["test -f ok.txt"] } }) + "\n",
      },
    },
  });
  const key = await h.pb.keys.create({ name: "mcp", scopes: ["read:builder", "write:builder"], ownerId: "owner-m" });
  ({ client } = await h.connect(key.key));
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("attempts over MCP", { timeout: LOADED.testMs }, () => {
  it("start_run with attempts starts the siblings, and get_group ranks them and names the best", async () => {
    const modelId = "acme/mcp-attempts";
    h.model.script(modelId, [
      [{ toolCalls: [{ name: "write", args: { filePath: "ok.txt", content: "ok\n" } }] }, { text: "Done." }],
    ]);
    const started = await call("start_run", {
      repository: "acme/tries",
      prompt: "Make the check pass",
      modelId,
      attempts: 2,
      wait: true,
    });
    expect(started.isError).toBeFalsy();
    const first = started.structuredContent as { id: string; group: { id: string; attempt: number; attempts: number } };
    expect(first.group).toMatchObject({ attempt: 1, attempts: 2 });

    // Poll as a client would, backing off, until every sibling is idle or ended.
    let group: { status: string; bestRunId: string | null; runs: { id: string; rank: number | null }[] } | undefined;
    const deadline = Date.now() + LOADED.turnWaitMs;
    for (let pause = 100; Date.now() < deadline; pause = Math.min(pause * 2, 2000)) {
      const got = await call("get_group", { groupId: first.group.id });
      expect(got.isError).toBeFalsy();
      group = got.structuredContent as typeof group;
      if (group!.status === "settled") break;
      await new Promise((r) => setTimeout(r, pause));
    }
    expect(group!.status).toBe("settled");
    expect(group!.runs).toHaveLength(2);
    // Both passed with equal diffs: attempt order decides.
    expect(group!.runs.map((r) => r.rank)).toEqual([1, 2]);
    expect(group!.bestRunId).toBe(first.id);
    for (const r of group!.runs) await call("end_session", { runId: r.id });
  });

  it("attempts out of range and an unknown group are tool errors", async () => {
    const tooMany = await call("start_run", { repository: "acme/tries", prompt: "x", attempts: 5 });
    expect(tooMany.isError).toBe(true);
    const missing = await call("get_group", { groupId: "grp_missing" });
    expect(missing.isError).toBe(true);
    expect(JSON.stringify(missing.content)).toContain("group_not_found");
  });
});
