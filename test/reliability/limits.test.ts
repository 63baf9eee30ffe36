/**
 * Issue 12, findings 1 and 5: the per-key limits hold on every front (the active-run cap in
 * the engine, the request rate on /mcp too), and a chained run never switches billing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { errorCodeOf, serveMcp, TURN_CALL, type McpHarness } from "../support/mcp.ts";
import { LOADED } from "../support/harness.ts";

const OWNER = "owner-limits";
let h: McpHarness;
let key: string;

beforeAll(async () => {
  h = await serveMcp({
    model: { scripts: { "test/limits": [[{ text: "done" }], [{ text: "done again" }]] } },
    env: {
      OPENROUTER_API_KEY: "sk-or-v1-test-limits",
      PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "1",
      PATCHBAY_RATE_LIMIT_PER_MIN: "40",
    },
  });
  key = (await h.pb.keys.create({ name: "rw", ownerId: OWNER, scopes: ["read:builder", "write:builder"] })).key;
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("limits on every front", { timeout: LOADED.testMs }, () => {
  it("three start_run calls over /mcp with a cap of 1 start one run; the others answer too_many_active_runs", async () => {
    const { client } = await h.connect(key);
    const start = () =>
      client.callTool(
        { name: "start_run", arguments: { repository: "acme/web", prompt: "x", modelId: "test/limits" } },
        undefined,
        TURN_CALL,
      ) as Promise<CallToolResult>;
    const results = await Promise.all([start(), start(), start()]);
    const refused = results.filter((r) => errorCodeOf(r) === "too_many_active_runs");
    expect(refused).toHaveLength(2);
    expect(await h.pb.engine.activeRunCount(OWNER)).toBe(1);
    const started = results.find((r) => !r.isError)!.structuredContent as { id: string };
    await h.pb.engine.waitForTurn(OWNER, started.id);
    await h.pb.engine.endSession(OWNER, started.id);
  });

  it("/mcp is held to the key's request rate: past it, 429 with Retry-After", async () => {
    const ping = () =>
      fetch(h.url, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${key}`,
          "Content-Type": "application/json",
          Accept: "application/json, text/event-stream",
        },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
      });
    let limited: Response | undefined;
    for (let i = 0; i < 60 && !limited; i++) {
      const res = await ping();
      await res.text();
      if (res.status === 429) limited = res;
    }
    expect(limited?.status).toBe(429);
    expect(limited?.headers.get("retry-after")).toMatch(/^\d+$/);
  });

  it("a message to an ended run billed to its own key does not switch to the server's key", async () => {
    const owner = "owner-billing";
    const own = "sk-or-v1-users-own-key";
    const run = await h.pb.engine.startRun(owner, {
      repository: "acme/web",
      prompt: "x",
      modelId: "test/limits",
      billing: { mode: "openrouter", openRouterApiKey: own },
    });
    expect((await h.pb.engine.waitForTurn(owner, run.id)).status).toBe("idle");
    await h.pb.engine.endSession(owner, run.id);
    await expect(h.pb.engine.sendMessage(owner, run.id, { prompt: "more" })).rejects.toMatchObject({
      code: "no_model_key",
    });
    expect((await h.pb.engine.listRuns(owner)).runs).toHaveLength(1);
    const chained = await h.pb.engine.sendMessage(owner, run.id, {
      prompt: "more",
      billing: { mode: "openrouter", openRouterApiKey: own },
    });
    expect(chained.chainedFrom).toBe(run.id);
    expect(chained.billing.mode).toBe("openrouter");
    expect((await h.pb.engine.waitForTurn(owner, chained.id)).status).toBe("idle");
    await h.pb.engine.endSession(owner, chained.id);
  });
});
