/**
 * The `webhook` field on MCP's `start_run`: the tool's input schema carries it (one zod
 * schema with REST), and a target the server does not allow is a tool error with the code
 * REST answers with. No run is started, so no OpenCode.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMcpServer, type PatchbayMcpServer } from "../../src/mcp/server.ts";
import { LOADED } from "../support/harness.ts";
import { errorCodeOf } from "../support/mcp.ts";
import { openTestPatchbay, type TestPatchbay } from "../support/patchbay.ts";

let pb: TestPatchbay;
let mcp: PatchbayMcpServer;
let client: Client;

beforeAll(async () => {
  pb = await openTestPatchbay({ OPENROUTER_API_KEY: "sk-or-v1-test-webhooks" });
  mcp = createMcpServer(pb.engine, { ownerId: "owner-mcp", log: pb.log });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await mcp.connect(serverSide);
  client = new Client({ name: "webhooks-test", version: "1.0.0" });
  await client.connect(clientSide);
}, LOADED.hookMs);

afterAll(async () => {
  await client?.close();
  mcp?.dispose();
  await pb?.close();
}, LOADED.hookMs);

describe("start_run's webhook", () => {
  it("is in the tool's input schema: url and an optional Standard Webhooks secret", async () => {
    const { tools } = await client.listTools();
    const start = tools.find((t) => t.name === "start_run")!;
    const webhook = (start.inputSchema.properties as Record<string, any>).webhook; // eslint-disable-line @typescript-eslint/no-explicit-any
    expect(Object.keys(webhook.properties).sort()).toEqual(["secret", "url"]);
    expect(webhook.required).toEqual(["url"]);
    expect(webhook.properties.secret.pattern).toContain("whsec_");
    expect(webhook.additionalProperties).toBe(false);
  });

  it("a target the server does not allow is a tool error invalid_webhook_url; a bad secret invalid_request", async () => {
    const call = async (webhook: unknown) =>
      errorCodeOf(
        (await client.callTool({
          name: "start_run",
          arguments: { repository: "acme/web", prompt: "x", webhook },
        })) as CallToolResult,
      );
    expect(await call({ url: "http://hooks.example.com/" })).toBe("invalid_webhook_url");
    expect(await call({ url: "https://127.0.0.1/" })).toBe("invalid_webhook_url");
    expect(await call({ url: "https://hooks.example.com/", secret: "plain" })).toBe("invalid_request");
  });
});
