/**
 * `outputSchema` end to end: the real engine, real OpenCode in the local sandbox and the
 * scripted model, over REST and MCP (Streamable HTTP) on 127.0.0.1. The answer is read from
 * the model's final text; an invalid one gets one repair turn in the same session.
 */
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Step } from "../fixtures/scripted-model.ts";
import { LOADED } from "../support/harness.ts";
import { callApi } from "../support/http.ts";
import { REPO_FILES, serveMcp, TURN_CALL, type McpHarness } from "../support/mcp.ts";
import { pollUntilTurnOver } from "../support/poll.ts";

const API = "/api/v1/coding-agent";
const SCHEMA = {
  type: "object",
  properties: {
    title: { type: "string" },
    risk: { type: "string", enum: ["low", "medium", "high"] },
    files: { type: "array", items: { type: "string" } },
  },
  required: ["title", "risk", "files"],
  additionalProperties: false,
};
const VALID = { title: "Add notes", risk: "low", files: ["NOTES.md"] };
const INVALID = { title: 7, risk: "extreme", files: ["NOTES.md"] };
const fenced = (v: unknown) => "Here is the result.\n```json\n" + JSON.stringify(v, null, 2) + "\n```";
const WRITE: Step = { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "notes\n" } }] };

let h: McpHarness;
let key: string;
let client: Client;

const api = (method: string, p: string, body?: unknown) => callApi(h.url.origin, key, method, p, body);

const settled = (id: string) =>
  pollUntilTurnOver(() => api("GET", `${API}/runs/${id}?patch=1`), {
    timeoutMs: LOADED.turnWaitMs,
    what: `run ${id}`,
  });

const start = (modelId: string, extra: Record<string, unknown> = {}) =>
  api("POST", `${API}/runs`, {
    repository: "acme/web",
    prompt: "Write NOTES.md and describe the change.",
    modelId,
    validationMode: "minimal",
    outputSchema: SCHEMA,
    ...extra,
  });

beforeAll(async () => {
  h = await serveMcp({
    repos: { "acme/web": REPO_FILES },
    model: {
      scripts: {
        "test/so-valid": [[WRITE, { text: fenced(VALID) }], [{ text: '{"answer": 42}' }]],
        "test/so-repair": [[WRITE, { text: fenced(INVALID) }], [{ text: fenced(VALID) }]],
        "test/so-invalid": [[WRITE, { text: fenced(INVALID) }], [{ text: "Sorry, no JSON this time." }]],
        "test/so-mcp": [[WRITE, { text: fenced(VALID) }]],
      },
    },
    env: { OPENROUTER_API_KEY: "sk-or-v1-test-structured" },
  });
  key = (await h.pb.keys.create({ name: "rw", scopes: ["read:builder", "write:builder"] })).key;
  ({ client } = await h.connect(key));
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("structured output", { timeout: LOADED.testMs }, () => {
  let validRun: string;

  it("a valid answer lands in output; the schema reached the model with the prompt", async () => {
    const started = await start("test/so-valid");
    expect(started.status).toBe(201);
    expect(started.json.output).toBeNull();
    validRun = started.json.id;
    const run = await settled(validRun);
    expect(run.status).toBe("idle");
    expect(run.output).toEqual(VALID);
    expect(run.outputError).toBeNull();
    expect(run.patch).toContain("NOTES.md");
    const first = h.model.agentRequests("test/so-valid")[0]!;
    expect(first.lastUser).toContain("Write NOTES.md and describe the change.");
    expect(first.lastUser).toContain(JSON.stringify(SCHEMA));
    expect(first.lastUser).toMatch(/single JSON value in one fenced ```json block/);
  });

  it("a message brings its own schema for its turn (a whole-text answer counts)", async () => {
    const bad = await api("POST", `${API}/runs/${validRun}/messages`, {
      prompt: "Now answer 42.",
      outputSchema: { type: "object", properties: { answer: { type: "nonsense" } } },
    });
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe("invalid_output_schema");
    const sent = await api("POST", `${API}/runs/${validRun}/messages`, {
      prompt: "Now answer 42.",
      outputSchema: { type: "object", properties: { answer: { const: 42 } }, required: ["answer"] },
    });
    expect(sent.status).toBe(202);
    const run = await settled(validRun);
    expect(run.status).toBe("idle");
    expect(run.output).toEqual({ answer: 42 });
    expect(run.outputError).toBeNull();
  });

  it("an invalid answer gets one repair turn quoting the validator, and its valid answer lands in output", async () => {
    const started = await start("test/so-repair");
    const run = await settled(started.json.id);
    expect(run.status).toBe("idle");
    expect(run.output).toEqual(VALID);
    expect(run.outputError).toBeNull();
    const requests = h.model.agentRequests("test/so-repair");
    const repair = requests.at(-1)!;
    expect(repair.lastUser).toMatch(/not valid against the JSON Schema/);
    expect(repair.lastUser).toContain("/title must be string");
    expect(repair.lastUser).toContain("/risk must be equal to one of the allowed values");
    // One turn record (the repair is part of the turn), holding the answer too.
    const turns = await h.pb.store.listTurns(started.json.id);
    expect(turns).toHaveLength(1);
    expect(turns[0]).toMatchObject({
      prompt: "Write NOTES.md and describe the change.",
      output: VALID,
      outputError: null,
    });
    // The same session: the repair request carries the first prompt and answer.
    expect(JSON.stringify(repair.body.messages)).toContain("Write NOTES.md and describe the change.");
    const events = (await api("GET", `${API}/runs/${started.json.id}?events=1`)).json.events as {
      data: { kind?: string; message?: string };
    }[];
    expect(events.some((e) => e.data.kind === "log" && /one repair turn/.test(e.data.message ?? ""))).toBe(true);
  });

  it("an answer invalid twice leaves output null with outputError, the run idle with its patch", async () => {
    const started = await start("test/so-invalid");
    const run = await settled(started.json.id);
    expect(run.status).toBe("idle");
    expect(run.error).toBeNull();
    expect(run.output).toBeNull();
    expect(run.outputError).toEqual([expect.stringMatching(/the answer is not valid JSON/)]);
    expect(run.patch).toContain("NOTES.md");
    expect(h.model.agentRequests("test/so-invalid").at(-1)!.lastUser).toMatch(/not valid against the JSON Schema/);
    const [turn] = await h.pb.store.listTurns(started.json.id);
    expect(turn).toMatchObject({ status: "done", output: null, outputError: run.outputError });
  });

  it("refuses an invalid or oversized schema with 400 invalid_output_schema before starting anything", async () => {
    const before = (await api("GET", `${API}/runs?limit=100`)).json.runs.length;
    const invalid = await start("test/so-valid", { outputSchema: { type: "strnig" } });
    expect(invalid.status).toBe(400);
    expect(invalid.json.error.code).toBe("invalid_output_schema");
    const unresolvable = await start("test/so-valid", { outputSchema: { $ref: "https://example.com/s.json" } });
    expect(unresolvable.status).toBe(400);
    expect(unresolvable.json.error.code).toBe("invalid_output_schema");
    const big = {
      type: "object",
      properties: Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`field${i}`, { type: "string" }])),
    };
    expect(JSON.stringify(big).length).toBeGreaterThan(64 * 1024);
    const oversized = await start("test/so-valid", { outputSchema: big });
    expect(oversized.status).toBe(400);
    expect(oversized.json.error.code).toBe("invalid_output_schema");
    expect(oversized.json.error.message).toMatch(/at most 65536/);
    const notAnObject = await start("test/so-valid", { outputSchema: "a string" });
    expect(notAnObject.status).toBe(400);
    expect((await api("GET", `${API}/runs?limit=100`)).json.runs.length).toBe(before);
  });

  it("MCP start_run and get_run show the answer as structuredContent.output", async () => {
    const started = (await client.callTool(
      {
        name: "start_run",
        arguments: {
          repository: "acme/web",
          prompt: "Write NOTES.md and describe the change.",
          modelId: "test/so-mcp",
          validationMode: "minimal",
          outputSchema: SCHEMA,
          wait: true,
        },
      },
      undefined,
      TURN_CALL,
    )) as CallToolResult;
    expect(started.isError).toBeFalsy();
    const structured = started.structuredContent as { id: string; status: string; output: unknown };
    expect(structured.status).toBe("idle");
    expect(structured.output).toEqual(VALID);
    const got = (await client.callTool({ name: "get_run", arguments: { runId: structured.id } })) as CallToolResult;
    expect((got.structuredContent as { output: unknown }).output).toEqual(VALID);
    const invalid = (await client.callTool({
      name: "start_run",
      arguments: { repository: "acme/web", prompt: "x", modelId: "test/so-mcp", outputSchema: { type: 5 } },
    })) as CallToolResult;
    expect(invalid.isError).toBe(true);
    expect(JSON.stringify(invalid.content)).toContain("invalid_output_schema");
  });
});
