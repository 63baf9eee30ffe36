/**
 * Follow-up latency: from `POST /runs/{id}/messages` on an idle run to the model's first
 * request of the new turn, against the same prompt sent straight to an OpenCode session
 * (`opencode serve` in a fresh clone, `session.prompt` through @opencode-ai/sdk/v2) measured
 * in the same run. The difference is what Patchbay adds: HTTP, auth, store writes, the turn
 * launch and the model gateway. Target: under 50 ms.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createOpencodeClient } from "@opencode-ai/sdk/v2";
import { loadConfig } from "../src/config.ts";
import { buildOpencodeConfig, opencodeEnv, PROVIDER_ID } from "../src/engine/agent/opencode-config.ts";
import { bundledOpencodeBin } from "../src/engine/agent/opencode.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { createHttpApp } from "../src/http/app.ts";
import { startScriptedModel, type ScriptedModel } from "../test/fixtures/scripted-model.ts";
import { git, makeRepo } from "../test/helpers.ts";
import { median, row, type BenchModule } from "./harness.ts";
import { benchTempDir } from "./support.ts";

const FOLLOW_UPS = 20;
const API = "/api/v1/coding-agent";
/**
 * Milliseconds from `t0` (Date.now()) to the arrival of the model's next agent-loop request
 * (title and summary side requests excluded). Counted from the recorded requests rather than
 * a waiter, so a side request arriving first cannot make us miss the one we want.
 */
async function untilNextAgentRequest(
  model: ScriptedModel,
  modelId: string,
  before: number,
  t0: number,
): Promise<number> {
  for (let i = 0; i < 30_000; i++) {
    const req = model.agentRequests(modelId)[before];
    if (req) return req.at - t0;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error("the model was never called");
}

/** OpenCode driven by hand: the floor. */
async function direct(model: ScriptedModel, gitBase: string, root: string): Promise<number[]> {
  const modelId = "bench/direct";
  const dir = path.join(root, "direct");
  const home = path.join(dir, "home");
  fs.mkdirSync(home, { recursive: true });
  git(dir, "clone", "-q", `${gitBase}/acme/bench.git`, path.join(dir, "repo"));
  const config = buildOpencodeConfig({ modelBaseUrl: model.baseUrl, modelToken: "bench", modelId });
  const proc = spawn(bundledOpencodeBin(), ["serve", "--hostname=127.0.0.1", "--port=0"], {
    cwd: path.join(dir, "repo"),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, ...opencodeEnv(config, "bench") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      proc.stdout.on("data", (d: Buffer) => {
        out += String(d);
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      proc.once("exit", (code) => reject(new Error(`opencode exited ${code}: ${out}`)));
    });
    const client = createOpencodeClient({
      baseUrl: url,
      directory: path.join(dir, "repo"),
      headers: { Authorization: `Basic ${Buffer.from("opencode:bench").toString("base64")}` },
    });
    const session = (await client.session.create({ title: "bench" })).data!;
    const prompt = (text: string) =>
      client.session.prompt({
        sessionID: session.id,
        parts: [{ type: "text", text }],
        model: { providerID: PROVIDER_ID, modelID: modelId },
      });
    await prompt("first turn");
    const times: number[] = [];
    for (let i = 0; i < FOLLOW_UPS; i++) {
      const before = model.agentRequests(modelId).length;
      const t0 = Date.now();
      const done = prompt(`follow-up ${i}`);
      times.push(await untilNextAgentRequest(model, modelId, before, t0));
      await done;
    }
    return times;
  } finally {
    proc.kill("SIGKILL");
  }
}

/** The same through Patchbay's REST API. */
async function throughPatchbay(model: ScriptedModel, gitBase: string, root: string): Promise<number[]> {
  const modelId = "bench/patchbay";
  const config = loadConfig({
    PATCHBAY_DATA_DIR: path.join(root, "data"),
    PATCHBAY_GIT_BASE_URL: gitBase,
    PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
    OPENROUTER_API_KEY: "sk-bench",
    PATCHBAY_RATE_LIMIT_PER_MIN: "100000",
  });
  const pb = await openPatchbay(config, { log: createLogger({ level: "silent" }) });
  const server = http.createServer(createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config }));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const { key } = await pb.keys.create({ name: "bench", scopes: ["read:builder", "write:builder"] });
    const call = async (method: string, p: string, body?: unknown) => {
      const res = await fetch(base + p, {
        method,
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return (await res.json()) as { id: string; status: string };
    };
    const idle = async (id: string) => {
      // The first turn starts OpenCode: seconds, or minutes on a slow and loaded machine.
      const deadline = Date.now() + 300_000;
      while (Date.now() < deadline) {
        const r = await call("GET", `${API}/runs/${id}`);
        if (r.status === "idle") return;
        if (r.status !== "running" && r.status !== "queued") throw new Error(`run ended ${r.status}`);
        await new Promise((res) => setTimeout(res, 25));
      }
      throw new Error("run did not become idle within 300 s");
    };
    const run = await call("POST", `${API}/runs`, {
      repository: "acme/bench",
      prompt: "first turn",
      modelId,
      validationMode: "minimal",
    });
    await idle(run.id);
    const times: number[] = [];
    for (let i = 0; i < FOLLOW_UPS; i++) {
      const before = model.agentRequests(modelId).length;
      const t0 = Date.now();
      const sent = await call("POST", `${API}/runs/${run.id}/messages`, { prompt: `follow-up ${i}` });
      if (sent.status !== "running") throw new Error(`follow-up ${i} was refused: ${JSON.stringify(sent)}`);
      times.push(await untilNextAgentRequest(model, modelId, before, t0));
      await idle(run.id);
    }
    await call("POST", `${API}/runs/${run.id}/messages`, { endSession: true });
    return times;
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await pb.close();
  }
}

export const followUp: BenchModule = {
  name: "follow-up",
  async run() {
    const root = benchTempDir("followup");
    const model = await startScriptedModel({ fallback: [[{ text: "ok" }]] });
    try {
      const gitBase = makeRepo(path.join(root, "repos"), "acme/bench", { "README.md": "# bench\n" }).baseUrl;
      const base = await direct(model, gitBase, root);
      const pb = await throughPatchbay(model, gitBase, root);
      const b = median(base);
      const p = median(pb);
      return {
        name: "follow-up",
        rows: [
          row(
            "follow-up → model's first request, median",
            b,
            p,
            "ms",
            `${FOLLOW_UPS} follow-ups; baseline: session.prompt on OpenCode directly`,
          ),
          row("same, worst", Math.max(...base), Math.max(...pb), "ms"),
          row(
            "Patchbay overhead (median difference) vs the 50 ms target",
            50,
            p - b,
            "ms",
            "ratio < 1 meets the target",
          ),
        ],
      };
    } finally {
      await model.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};
