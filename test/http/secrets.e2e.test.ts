/**
 * Secret canaries: a run's own secret and a stored one reach the agent's shell as environment
 * variables, and wherever Patchbay shows text (events, SSE, summary, patch, MCP results, the
 * log, every answer) they appear only as `[secret:NAME]`. No file under the data dir holds
 * them, outside the run's own sandbox while it lives and anywhere once its session ended.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { callApi, sandboxPids, walkFiles } from "../support/http.ts";
import { serveMcp, type McpHarness } from "../support/mcp.ts";

const API = "/api/v1/coding-agent";
const RUN_CANARY = `run-canary-${randomBytes(12).toString("hex")}`;
const STORED_CANARY = `stored-canary-${randomBytes(12).toString("hex")}\nsecond line "quoted"`;
const CANARIES = [RUN_CANARY, STORED_CANARY, STORED_CANARY.split("\n")[0]!];
let h: McpHarness;
let key: string;
let ownerId: string;
let otherKey: string;
/** The run of the canary test, ended; the chained run continues it. */
let endedRun: string;
const transcript: string[] = [];

async function api(method: string, p: string, body?: unknown, as = key) {
  const answer = await callApi(h.url, as, method, p, body);
  transcript.push(answer.text);
  return answer;
}

function filesHolding(dir: string, needle: string, except?: string): string[] {
  return walkFiles(dir).filter((f) => {
    if (except && f.startsWith(except)) return false;
    try {
      return fs.readFileSync(f).includes(needle);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false; // removed while we walked
      throw e;
    }
  });
}

beforeAll(async () => {
  h = await serveMcp();
  const made = await h.pb.keys.create({ name: "secrets" });
  key = made.key;
  ownerId = made.record.ownerId;
  // Another tenant: a key made without an owner acts as the instance's user, as the first one does.
  otherKey = (await h.pb.keys.create({ name: "other", ownerId: "other-tenant" })).key;
  h.model.script("test/secrets", [
    [
      {
        toolCalls: [
          {
            name: "bash",
            args: {
              command:
                'echo "run=$RUN_TOKEN"; printf "stored=%s\\n" "$STORED_TOKEN"; printf %s "$RUN_TOKEN" > leak.txt',
              description: "print the secrets",
            },
          },
        ],
      },
      { toolCalls: [{ name: "write", args: { filePath: "notes.txt", content: `token ${RUN_CANARY}\n` } }] },
      { text: `Done. The token was ${RUN_CANARY}.` },
    ],
  ]);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("secrets", { timeout: LOADED.testMs }, () => {
  it("a stored secret is listed by name only, per owner, and deleted", async () => {
    const bad = await api("POST", "/api/v1/secrets", { name: "lower", value: "x" });
    expect(bad.status).toBe(400);
    const reserved = await api("POST", "/api/v1/secrets", { name: "OPENCODE_CONFIG_CONTENT", value: "x" });
    expect(reserved.status).toBe(400);
    const put = await api("POST", "/api/v1/secrets", { name: "TEMP", value: "temp-value-123456" });
    expect(put.status).toBe(201);
    expect(put.json).toEqual({ name: "TEMP", createdAt: expect.any(String), updatedAt: expect.any(String) });
    expect((await api("GET", "/api/v1/secrets")).json.secrets.map((s: { name: string }) => s.name)).toEqual(["TEMP"]);
    expect((await api("GET", "/api/v1/secrets", undefined, otherKey)).json.secrets).toEqual([]);
    expect((await api("DELETE", "/api/v1/secrets/TEMP", undefined, otherKey)).status).toBe(404);
    expect((await api("DELETE", "/api/v1/secrets/TEMP")).status).toBe(204);
    expect((await api("DELETE", "/api/v1/secrets/TEMP")).status).toBe(404);
    expect(transcript.join("\n")).not.toContain("temp-value-123456");
  });

  it("a run naming a secret nobody stored is refused with secret_not_found, and nothing is created", async () => {
    const before = (await api("GET", `${API}/runs`)).json.runs?.length ?? 0;
    const res = await api("POST", `${API}/runs`, {
      repository: "acme/web",
      prompt: "x",
      environment: { secretNames: ["NOPE"] },
    });
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe("secret_not_found");
    expect((await api("GET", `${API}/runs`)).json.runs?.length ?? 0).toBe(before);
  });

  it("a local server refuses network model-only with unsupported_network_policy", async () => {
    const res = await api("POST", `${API}/runs`, {
      repository: "acme/web",
      prompt: "x",
      environment: { network: "model-only" },
    });
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe("unsupported_network_policy");
  });

  it("the agent's shell sees both canaries; every front shows them masked; no file keeps them", async () => {
    expect((await api("POST", "/api/v1/secrets", { name: "STORED_TOKEN", value: STORED_CANARY })).status).toBe(201);
    const created = await api("POST", `${API}/runs`, {
      repository: "acme/web",
      prompt: "use the secrets",
      modelId: "test/secrets",
      environment: { secrets: { RUN_TOKEN: RUN_CANARY }, secretNames: ["STORED_TOKEN"] },
    });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    const stream = await fetch(new URL(`${API}/runs/${id}/stream?after=0`, h.url), {
      headers: { Authorization: `Bearer ${key}` },
    });
    // The stream of a live run stays open: read it until the turn is over.
    const reader = stream.body!.getReader();
    let raw = "";
    while (!/"status":"(idle|failed)"/.test(raw)) {
      const { value, done } = await reader.read();
      if (done) break;
      raw += Buffer.from(value).toString("utf8");
    }
    await reader.cancel();
    transcript.push(raw);

    const run = (await api("GET", `${API}/runs/${id}?patch=1&events=1`)).json;
    expect(run.status).toBe("idle");
    // The agent's shell really had the values: their masks are in its output and in the patch.
    const outputs = (run.events as { type: string; data: { kind?: string; tool?: string; output?: string } }[])
      .filter((e) => e.type === "builder.event" && e.data.kind === "tool" && e.data.tool === "bash" && e.data.output)
      .map((e) => e.data.output!)
      .join("\n");
    expect(outputs).toContain("run=[secret:RUN_TOKEN]");
    expect(outputs).toContain("stored=[secret:STORED_TOKEN]");
    expect(run.summary).toContain("[secret:RUN_TOKEN]");
    expect(run.patch).toContain("leak.txt");
    expect(run.patch).toContain("+[secret:RUN_TOKEN]");
    expect(run.patch).toContain("+token [secret:RUN_TOKEN]");
    expect(raw).toContain("[secret:RUN_TOKEN]");
    // The run shows names, never values.
    expect(run.environment ?? {}).not.toHaveProperty("secrets");

    // MCP results come from the same records.
    const { client } = await h.connect(key);
    const mcpTexts: string[] = [];
    for (const [name, args] of [
      ["get_run", { runId: id }],
      ["get_patch", { runId: id }],
      ["stream_events", { runId: id, after: 0 }],
    ] as const) {
      const res = (await client.callTool({ name, arguments: args })) as CallToolResult;
      expect(res.isError ?? false).toBe(false);
      mcpTexts.push(JSON.stringify(res));
    }
    expect(mcpTexts.join("\n")).toContain("[secret:RUN_TOKEN]");

    // While the session lives, only its own sandbox (the agent's workspace, OpenCode's
    // history) holds them; the store keeps them sealed.
    const sandboxDir = path.join(h.pb.dataDir, "sandboxes", id);
    for (const c of CANARIES) expect(filesHolding(h.pb.dataDir, c, sandboxDir)).toEqual([]);
    expect(filesHolding(h.pb.dataDir, id).length).toBeGreaterThan(0);

    const ended = await api("POST", `${API}/runs/${id}/messages`, { endSession: true });
    expect(ended.json.status).toBe("completed");
    await waitFor(() => sandboxPids(h.pb.dataDir, id).length === 0, { what: "sandbox processes to stop" });
    for (const c of CANARIES) {
      expect(transcript.join("\n")).not.toContain(c);
      expect(mcpTexts.join("\n")).not.toContain(c);
      expect(h.pb.logLines.join("\n")).not.toContain(c);
      expect(filesHolding(h.pb.dataDir, c)).toEqual([]);
    }
    // The run's sealed copies went with its session; the owner's stored one stays.
    expect(await h.pb.store.getSecret(id, "env:RUN_TOKEN")).toBeUndefined();
    expect(await h.pb.store.getSecret(id, "env:STORED_TOKEN")).toBeUndefined();
    expect(await h.pb.store.getOwnerSecret(ownerId, "STORED_TOKEN")).toBeDefined();
    endedRun = id;
  });

  it("a message to the ended run chains a run that names the stored secret again; the run's own one ended with its session", async () => {
    const chained = await api("POST", `${API}/runs/${endedRun}/messages`, { prompt: "again" });
    expect(chained.status).toBe(201);
    const id = chained.json.id as string;
    const run = await (async () => {
      for (;;) {
        const r = (await api("GET", `${API}/runs/${id}?events=1`)).json;
        if (r.status !== "queued" && r.status !== "running") return r;
        await new Promise((res) => setTimeout(res, 500));
      }
    })();
    expect(run.status).toBe("idle");
    const outputs = JSON.stringify(run.events);
    expect(outputs).toContain("stored=[secret:STORED_TOKEN]");
    expect(outputs).toContain("run=\\n");
    await api("POST", `${API}/runs/${id}/messages`, { endSession: true });
    // The scripted model replays its first turn, whose text holds RUN_CANARY literally: no
    // longer a secret of this run, so only the stored one is checked here.
    for (const c of [STORED_CANARY, STORED_CANARY.split("\n")[0]!]) expect(transcript.join("\n")).not.toContain(c);
  });
});
