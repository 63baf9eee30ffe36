/**
 * The per-run OpenRouter key is a canary: it must reach the model as the bearer key and
 * appear nowhere else — no API response, SSE stream, log line, file in the data directory
 * or the workspace, patch, or environment / command line of any process.
 */
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { sandboxPids, serveHarness, walkFiles, type HttpHarness } from "../support/http.ts";

const API = "/api/v1/coding-agent";
const CANARY = `sk-or-v1-CANARY-${randomBytes(16).toString("hex")}`;
let h: HttpHarness;

beforeAll(async () => {
  h = await serveHarness();
  h.model.script("test/canary", [
    [
      {
        toolCalls: [
          {
            name: "bash",
            args: {
              command:
                "env; cat /proc/self/environ | tr '\\0' '\\n'; ps -eo args 2>/dev/null; cat ~/.config/opencode/* 2>/dev/null",
              description: "look for keys",
            },
          },
        ],
      },
      { toolCalls: [{ name: "write", args: { filePath: "found.txt", content: "nothing\n" } }] },
      { text: "Looked around." },
    ],
  ]);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

/** Every process on the machine whose environment or command line holds the needle. */
function processesHolding(needle: string): string[] {
  const hits: string[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    for (const file of ["environ", "cmdline"]) {
      try {
        if (fs.readFileSync(`/proc/${entry}/${file}`).includes(needle)) hits.push(`${entry}/${file}`);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "ENOENT" && code !== "EACCES" && code !== "ESRCH") throw e;
      }
    }
  }
  return hits;
}

function filesHolding(dir: string, needle: string): string[] {
  return walkFiles(dir).filter((f) => {
    try {
      return fs.readFileSync(f).includes(needle);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false; // removed while we walked
      throw e;
    }
  });
}

describe("the openRouterApiKey canary", { timeout: LOADED.testMs }, () => {
  it("reaches the model as the bearer key and nothing else, before and after the session ends", async () => {
    const created = await h.api("POST", `${API}/runs`, {
      body: {
        repository: "acme/web",
        prompt: "look for secrets",
        modelId: "test/canary",
        billing: { mode: "openrouter", openRouterApiKey: CANARY },
      },
    });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    const stream = await h.sse(`${API}/runs/${id}/stream?after=0`, {
      until: (frames) => frames.some((f) => f.event === "run.status" && /"status":"(idle|failed)"/.test(f.data ?? "")),
    });
    const run = (await h.api("GET", `${API}/runs/${id}?patch=1&events=1`)).json;
    expect(run.status).toBe("idle");
    expect(run.patch).toContain("found.txt");

    // The agent really ran `env` and saw its environment, without the key.
    const outputs = (run.events as { type: string; data: { kind?: string; tool?: string; output?: string } }[])
      .filter((e) => e.type === "builder.event" && e.data.kind === "tool" && e.data.tool === "bash" && e.data.output)
      .map((e) => e.data.output!)
      .join("\n");
    expect(outputs).toContain("PATH=");
    expect(outputs).not.toContain(CANARY);

    // The model got it, as the bearer key of every agent request.
    const reqs = h.model.agentRequests("test/canary");
    expect(reqs.length).toBeGreaterThan(0);
    for (const r of reqs) expect(r.authorization).toBe(`Bearer ${CANARY}`);

    // While the session is live: its processes, the workspace and the data directory.
    const pids = sandboxPids(h.pb.dataDir, id);
    expect(pids.length).toBeGreaterThan(0);
    expect(processesHolding(CANARY)).toEqual([]);
    expect(filesHolding(h.pb.dataDir, CANARY)).toEqual([]);
    // The scanners do see what is there: the run's processes by their sandbox path, files by the run id.
    expect(processesHolding(`sandboxes/${id}`).length).toBeGreaterThan(0);
    expect(filesHolding(h.pb.dataDir, id).length).toBeGreaterThan(0);
    expect(walkFiles(`${h.pb.dataDir}/sandboxes/${id}`).length).toBeGreaterThan(0);

    await h.api("GET", `${API}/runs?limit=100`);
    await h.api("GET", `${API}/runs/${id}`);
    const ended = await h.api("POST", `${API}/runs/${id}/messages`, { body: { endSession: true } });
    expect(ended.json.status).toBe("completed");
    await waitFor(() => sandboxPids(h.pb.dataDir, id).length === 0, { what: "sandbox processes to stop" });
    await h.sse(`${API}/runs/${id}/stream`);

    expect(stream.raw).not.toContain(CANARY);
    expect(h.transcript.join("\n")).not.toContain(CANARY);
    expect(h.pb.logLines.join("\n")).not.toContain(CANARY);
    expect(filesHolding(h.pb.dataDir, CANARY)).toEqual([]);
    expect(processesHolding(CANARY)).toEqual([]);
    // The sealed secret is gone with the session.
    expect(await h.pb.store.getSecret(id, "openRouterApiKey")).toBeUndefined();
  });
});
