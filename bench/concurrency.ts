/**
 * Concurrency: 10 runs started at once through the REST API (each a real `opencode serve`
 * in its own sandbox, with the scripted model), wall time until all are idle, against the
 * same run done 10 times one after another, in the same process. On 2 cores OpenCode's
 * start-up is CPU-bound, so the ratio says how much waiting Patchbay itself adds. Also the
 * memory each idle session holds (summed RSS of the processes in its sandbox).
 */
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { createHttpApp } from "../src/http/app.ts";
import { startScriptedModel } from "../test/fixtures/scripted-model.ts";
import { row, type BenchModule } from "./harness.ts";
import { benchRepository, benchTempDir, processTree, rssMb, rssMbOf } from "./support.ts";

const N = 10;
const IDLE_DEADLINE_MS = 600_000;
const API = "/api/v1/coding-agent";

export const concurrency: BenchModule = {
  name: "concurrency",
  async run() {
    const root = benchTempDir("conc");
    const model = await startScriptedModel({
      fallback: [
        [{ toolCalls: [{ name: "write", args: { filePath: "OUT.md", content: "out\n" } }] }, { text: "Wrote OUT.md." }],
      ],
    });
    const dataDir = path.join(root, "data");
    const config = loadConfig({
      PATCHBAY_DATA_DIR: dataDir,
      PATCHBAY_GIT_BASE_URL: benchRepository(path.join(root, "repos"), "acme/conc", 50),
      PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
      OPENROUTER_API_KEY: "sk-bench",
      PATCHBAY_RATE_LIMIT_PER_MIN: "100000",
      PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: String(N),
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
      const runToIdle = async (i: number): Promise<string> => {
        const run = await call("POST", `${API}/runs`, {
          repository: "acme/conc",
          prompt: `task ${i}`,
          modelId: `bench/conc`,
          validationMode: "minimal",
        });
        // Generous: ten OpenCode start-ups on a slow or loaded 2-core machine take minutes.
        const deadline = Date.now() + IDLE_DEADLINE_MS;
        while (Date.now() < deadline) {
          const r = await call("GET", `${API}/runs/${run.id}`);
          if (r.status === "idle") return run.id;
          if (r.status !== "running" && r.status !== "queued") throw new Error(`run ${run.id} ended ${r.status}`);
          await new Promise((res) => setTimeout(res, 50));
        }
        throw new Error(`run ${run.id} did not become idle within ${IDLE_DEADLINE_MS / 1000} s`);
      };
      const end = (id: string) => call("POST", `${API}/runs/${id}/messages`, { endSession: true });

      // Warm-up: the first run pays for the mirror and disk caches.
      await end(await runToIdle(-1));
      let t0 = performance.now();
      for (let i = 0; i < N; i++) await end(await runToIdle(i));
      const sequentialMs = performance.now() - t0;

      t0 = performance.now();
      const ids = await Promise.all(Array.from({ length: N }, (_, i) => runToIdle(100 + i)));
      const concurrentMs = performance.now() - t0;
      const perSession = ids.map((id) => rssMb(processTree(path.join(dataDir, "sandboxes", id))));
      const engineRss = rssMbOf(process.pid);
      await Promise.all(ids.map(end));
      const meanSession = perSession.reduce((a, b) => a + b, 0) / N;
      return {
        name: "concurrency",
        rows: [
          row(
            `${N} concurrent runs to idle vs one run x ${N} in sequence`,
            sequentialMs,
            concurrentMs,
            "ms",
            `wall time; ${os.cpus().length} cores; each run starts its own opencode serve`,
          ),
          row(
            `memory per idle session (mean of ${N}) vs the engine process`,
            engineRss,
            meanSession,
            "MB",
            `summed RSS in each sandbox; max ${Math.max(...perSession).toFixed(0)} MB; engine RSS includes the bench`,
          ),
        ],
      };
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await pb.close();
      await model.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};
