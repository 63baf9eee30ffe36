/**
 * The `webhook` field on MCP's `start_run`: the tool's input schema carries it (one zod
 * schema with REST); a target the server does not allow is a tool error with the code REST
 * answers with; and a run started with `wait: true` and no secret answers the generated
 * secret once, which verifies the messages a receiver on 127.0.0.1 gets (real OpenCode,
 * scripted model).
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMcpServer, type PatchbayMcpServer } from "../../src/mcp/server.ts";
import { startWebhookReceiver, type WebhookReceiver } from "../fixtures/webhook-receiver.ts";
import { waitFor } from "../helpers.ts";
import { LOADED, openHarness, type Harness } from "../support/harness.ts";
import { errorCodeOf } from "../support/mcp.ts";

let h: Harness;
let mcp: PatchbayMcpServer;
let client: Client;
let rx: WebhookReceiver;

beforeAll(async () => {
  h = await openHarness({
    model: {
      scripts: {
        "test/mcp-hook": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "notes\n" } }] },
            { text: "Wrote NOTES.md." },
          ],
        ],
      },
    },
    // http and loopback allowed for the receiver; the strict checks are the defaults, tested over REST.
    env: { PATCHBAY_WEBHOOK_ALLOW_HTTP: "1", PATCHBAY_WEBHOOK_ALLOW_PRIVATE: "1" },
  });
  rx = await startWebhookReceiver();
  mcp = createMcpServer(h.pb.engine, { ownerId: "owner-mcp", log: h.pb.log });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await mcp.connect(serverSide);
  client = new Client({ name: "webhooks-test", version: "1.0.0" });
  await client.connect(clientSide);
}, LOADED.hookMs);

afterAll(async () => {
  await client?.close();
  mcp?.dispose();
  await rx?.close();
  await h?.close();
}, LOADED.hookMs);

describe("start_run's webhook", { timeout: LOADED.testMs }, () => {
  it("is in the tool's input schema: url and an optional Standard Webhooks secret", async () => {
    const { tools } = await client.listTools();
    const start = tools.find((t) => t.name === "start_run")!;
    const webhook = (start.inputSchema.properties as Record<string, any>).webhook; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(Object.keys(webhook.properties).sort()).toEqual(["secret", "url"]);
    expect(webhook.required).toEqual(["url"]);
    expect(webhook.properties.secret.pattern).toContain("whsec_");
    expect(webhook.additionalProperties).toBe(false);
  });

  it("a URL that is not one is a tool error invalid_webhook_url; a bad secret invalid_request", async () => {
    const call = async (webhook: unknown) =>
      errorCodeOf(
        (await client.callTool({
          name: "start_run",
          arguments: { repository: "acme/web", prompt: "x", webhook },
        })) as CallToolResult,
      );
    expect(await call({ url: "ftp://hooks.example.com/" })).toBe("invalid_webhook_url");
    expect(await call({ url: "https://user:pw@hooks.example.com/" })).toBe("invalid_webhook_url");
    expect(await call({ url: "https://hooks.example.com/", secret: "plain" })).toBe("invalid_request");
  });

  it("with wait: true and no secret, the answer carries the generated secret once; the receiver verifies with it", async () => {
    const result = (await client.callTool({
      name: "start_run",
      arguments: {
        repository: "acme/web",
        prompt: "write notes",
        modelId: "test/mcp-hook",
        validationMode: "minimal",
        webhook: { url: rx.url },
        wait: true,
      },
    })) as CallToolResult;
    expect(result.isError).toBeFalsy();
    const run = result.structuredContent as { id: string; status: string; webhook: { url: string; secret: string } };
    expect(run.status).toBe("idle");
    expect(run.webhook.url).toBe(rx.url);
    expect(run.webhook.secret).toMatch(/^whsec_/);
    await waitFor(() => rx.delivered().length === 3, { what: "the run's messages" });
    expect(rx.verified(run.webhook.secret).map((m) => m.type)).toEqual(["run.status", "run.status", "turn.finished"]);
    const again = (await client.callTool({ name: "get_run", arguments: { runId: run.id } })) as CallToolResult;
    expect(JSON.stringify(again)).not.toContain(run.webhook.secret);
  });
});
