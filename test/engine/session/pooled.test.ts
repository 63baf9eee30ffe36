/**
 * The warm pool through the whole engine: a real Patchbay with PATCHBAY_WARM_POOL_SIZE=1,
 * the real OpenCode binary and the scripted model, for `local` and (where it runs) `bwrap`.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WARMUP_MODEL_ID } from "../../../src/engine/agent/opencode-warmup.ts";
import { descendants } from "../../../src/engine/sandbox/process.ts";
import { startScriptedModel, type ScriptedModel } from "../../fixtures/scripted-model.ts";
import { LOADED } from "../../support/harness.ts";
import { openTestPatchbay, type TestPatchbay } from "../../support/patchbay.ts";
import { makeRepo, tempDir, waitFor } from "../../helpers.ts";

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));
const OWNER = "pool-owner";

let model: ScriptedModel;
let repoBase: string;
beforeAll(async () => {
  model = await startScriptedModel();
  repoBase = tempDir("repos");
  makeRepo(repoBase, "acme/pooled", { "README.md": "# pooled\n" });
});
afterAll(async () => {
  await model?.close();
});

/** Processes working (on the host) inside a run's sandbox directory, and what they started. */
function runProcesses(dataDir: string, runId: string): number[] {
  const dir = path.join(dataDir, "sandboxes", runId);
  const roots: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cwd = fs.readlinkSync(`/proc/${entry}/cwd`);
      if (cwd === dir || cwd.startsWith(dir + path.sep)) roots.push(Number(entry));
    } catch (e) {
      if (!["ENOENT", "ESRCH", "EACCES"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
    }
  }
  return descendants(roots);
}

/** OpenCode's global config dirs under a run's sandbox directory (the warm server's home included). */
function opencodeConfigDirs(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((p) => p.endsWith(path.join(".config", "opencode")))
    .map((p) => path.join(dir, p));
}

for (const sandbox of ["local", "bwrap"] as const) {
  describe.skipIf(sandbox === "bwrap" && !hasBwrap).sequential(`warm pool: ${sandbox}`, () => {
    let pb: TestPatchbay;
    beforeAll(async () => {
      pb = await openTestPatchbay({
        PATCHBAY_SANDBOX: sandbox,
        PATCHBAY_WARM_POOL_SIZE: "1",
        PATCHBAY_GIT_BASE_URL: `file://${repoBase}`,
        PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
        OPENROUTER_API_KEY: "sk-or-v1-pool-test",
        PATCHBAY_TURN_TIMEOUT_MS: String(LOADED.turnTimeoutMs),
        PATCHBAY_WATCHDOG_MS: "2000",
      });
    });
    afterAll(async () => {
      await pb?.close();
    });

    it("a run takes the warm server, runs its turn with its own token and model, and the pool refills", async () => {
      await pb.sessions.warmPool!.ready();
      expect(pb.sessions.warmPool!.available).toBe(1);
      const modelId = `pool/${sandbox}`;
      model.script(modelId, [
        [
          { toolCalls: [{ name: "write", args: { filePath: "POOLED.md", content: "from the pool\n" } }] },
          { text: "done" },
        ],
      ]);
      const started = await pb.engine.startRun(OWNER, { repository: "acme/pooled", prompt: "write it", modelId });
      const run = await pb.engine.waitForTurn(OWNER, started.id);
      expect(run.error).toBeNull();
      expect(run.status).toBe("idle");
      expect(run.changedPaths).toEqual(["POOLED.md"]);
      // The warm server was bound to this run: it called the model it was started without,
      // with the run's gateway token (the gateway swapped in the upstream key).
      const req = model.agentRequests(modelId)[0]!;
      expect(req.authorization).toBe("Bearer sk-or-v1-pool-test");
      expect(pb.logLines.some((l) => l.includes("run took a warm sandbox"))).toBe(true);
      // The server was warmed with a prompt the gateway refused (no token yet): nothing of it
      // reached the upstream model, and OpenCode did not install its plugin package from npm.
      expect(model.requests.some((r) => r.model.includes(WARMUP_MODEL_ID))).toBe(false);
      const configDirs = opencodeConfigDirs(path.join(pb.dataDir, "sandboxes", run.id));
      expect(configDirs.length).toBeGreaterThan(0);
      for (const dir of configDirs) expect(fs.readdirSync(path.join(dir, "node_modules"))).toEqual([]);
      // Every process the session holds lives under the run's sandbox directory.
      const held = runProcesses(pb.dataDir, run.id);
      expect(held.length).toBeGreaterThan(0);
      await waitFor(() => pb.sessions.warmPool!.available === 1, {
        what: "the pool to refill",
        timeoutMs: LOADED.turnWaitMs,
      });

      await pb.engine.endSession(OWNER, run.id);
      await waitFor(() => runProcesses(pb.dataDir, run.id).length === 0, { what: "the run's processes to exit" });
      expect(fs.existsSync(path.join(pb.dataDir, "sandboxes", run.id))).toBe(false);
    });

    // One sandbox flavour is enough: which host opens the run is the pool's choice, not the provider's.
    it.skipIf(sandbox !== "local")(
      "a run with secrets opens cold (a warm server's environment has none) and leaves the warm entry",
      async () => {
        await pb.sessions.warmPool!.ready();
        const modelId = `pool-secret/${sandbox}`;
        model.script(modelId, [
          [
            { toolCalls: [{ name: "bash", args: { command: 'echo "seen=$POOL_SECRET"', description: "print" } }] },
            { text: "done" },
          ],
        ]);
        const started = await pb.engine.startRun(OWNER, {
          repository: "acme/pooled",
          prompt: "print it",
          modelId,
          validationMode: "minimal",
          environment: { secrets: { POOL_SECRET: "pool-secret-value-42" } },
        });
        const run = await pb.engine.waitForTurn(OWNER, started.id);
        expect(run.status).toBe("idle");
        const events = JSON.stringify(await pb.engine.events(OWNER, run.id, 0));
        expect(events).toContain("seen=[secret:POOL_SECRET]");
        expect(events).not.toContain("pool-secret-value-42");
        // The warm entry is still there for the next run.
        expect(pb.sessions.warmPool!.available).toBe(1);
        await pb.engine.endSession(OWNER, run.id);
      },
    );
  });
}
