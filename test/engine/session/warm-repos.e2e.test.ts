/**
 * The warm pool's repository entries through the whole engine: a real Patchbay with a pool of
 * two and PATCHBAY_WARM_REPOS pinning one repository, the real OpenCode binary and the
 * scripted model. A run on the pinned repository takes its entry: its ref is checked out
 * there, and its session opens on the instance OpenCode built before the run (never disposed
 * nor built again: OpenCode's own log says so).
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunEvent } from "../../../src/engine/events/schema.ts";
import { startScriptedModel, type ScriptedModel } from "../../fixtures/scripted-model.ts";
import { LOADED } from "../../support/harness.ts";
import { openTestPatchbay, type TestPatchbay } from "../../support/patchbay.ts";
import { makeRepo, tempDir, waitFor } from "../../helpers.ts";

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));
const OWNER = "repo-owner";

let model: ScriptedModel;
let repoBase: string;
beforeAll(async () => {
  model = await startScriptedModel();
  repoBase = tempDir("repos");
  makeRepo(
    repoBase,
    "acme/repeat",
    { "README.md": "# repeat\n" },
    { branches: { feature: { "FEATURE.md": "on the feature branch\n" } } },
  );
  makeRepo(repoBase, "acme/other", { "README.md": "# other\n" });
});
afterAll(async () => {
  await model?.close();
});

/** OpenCode's log lines in one sandbox's home (its server's) that match `what`. */
function opencodeLog(sandboxDir: string, what: RegExp): string[] {
  const dir = path.join(sandboxDir, "home", ".local", "share", "opencode", "log");
  return fs
    .readdirSync(dir)
    .flatMap((f) => fs.readFileSync(path.join(dir, f), "utf8").split("\n"))
    .filter((l) => what.test(l));
}

/** The sandbox a run got from a repository entry (local keeps the entry's name). */
function entrySandbox(lines: readonly string[], runId: string): string {
  for (const l of lines) {
    const e = JSON.parse(l) as { msg?: string; runId?: string; sandbox?: string };
    if (e.msg === "run took a repository entry" && e.runId === runId) return e.sandbox!;
  }
  throw new Error(`run ${runId} took no repository entry`);
}

const bashOutputs = (events: RunEvent[]) =>
  events.flatMap((e) =>
    e.type === "builder.event" && e.data.kind === "tool" && e.data.tool === "bash" && e.data.status === "completed"
      ? [e.data.output ?? ""]
      : [],
  );

for (const sandbox of ["local", "bwrap"] as const) {
  describe
    .skipIf(sandbox === "bwrap" && !hasBwrap)
    .sequential(`warm pool, repository entries: ${sandbox}`, { timeout: LOADED.testMs }, () => {
      const modelId = `repeat/${sandbox}`;
      let pb: TestPatchbay;
      beforeAll(async () => {
        pb = await openTestPatchbay({
          PATCHBAY_SANDBOX: sandbox,
          PATCHBAY_WARM_POOL_SIZE: "2",
          PATCHBAY_WARM_REPOS: "acme/repeat",
          PATCHBAY_DEFAULT_MODEL: modelId,
          PATCHBAY_GIT_BASE_URL: `file://${repoBase}`,
          PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
          OPENROUTER_API_KEY: "sk-or-v1-repeat-test",
          PATCHBAY_TURN_TIMEOUT_MS: String(LOADED.turnTimeoutMs),
          PATCHBAY_WATCHDOG_MS: "2000",
        });
      }, LOADED.hookMs);
      afterAll(async () => {
        await pb?.close();
      }, LOADED.hookMs);

      it("a run on the pinned repository takes its entry: its ref checked out, the prebuilt instance kept, its own token and model", async () => {
        await pb.sessions.warmPool!.ready();
        expect(pb.sessions.warmPool!.repositories).toEqual(["acme/repeat"]);
        model.script(modelId, [
          [
            {
              toolCalls: [
                {
                  name: "bash",
                  args: { command: "cat FEATURE.md && git rev-parse --abbrev-ref HEAD", description: "look" },
                },
              ],
            },
            { toolCalls: [{ name: "write", args: { filePath: "NEW.md", content: "new\n" } }] },
            { text: "done" },
          ],
        ]);
        const started = await pb.engine.startRun(OWNER, {
          repository: "acme/repeat",
          prompt: "look around",
          baseRef: "feature",
          modelId,
        });
        const run = await pb.engine.waitForTurn(OWNER, started.id);
        expect(run.error).toBeNull();
        expect(run.status).toBe("idle");
        const sandboxDir = path.join(pb.dataDir, "sandboxes", entrySandbox(pb.logLines, run.id));
        // The run's ref, not the pool's default branch.
        expect(run.baseRef).toBe("feature");
        const bash = bashOutputs(await pb.engine.events(OWNER, run.id, 0));
        expect(bash[0]).toContain("on the feature branch");
        expect(bash[0]).toContain("feature");
        expect(run.changedPaths).toEqual(["NEW.md"]);
        // Bound at the gateway by session: the upstream got the run's model with the real key.
        const req = model.agentRequests(modelId)[0]!;
        expect(req.authorization).toBe("Bearer sk-or-v1-repeat-test");
        // The run's server built one instance, before the run (the pool's warm-up), and the run's
        // session opened on it: no config change disposed it, nothing built another.
        expect(opencodeLog(sandboxDir, /message="creating instance"/)).toHaveLength(1);
        expect(opencodeLog(sandboxDir, /message="disposing instance"/)).toEqual([]);
        expect(opencodeLog(sandboxDir, /message=created .*title="Patchbay run"/)).toHaveLength(1);

        // It hibernates (its server with it; on local the kept directory takes the run's name)
        // and a follow-up wakes it: the model sees the earlier turn.
        expect(await pb.engine.hibernate(OWNER, run.id)).toMatchObject({ status: "idle", hibernated: true });
        model.script(modelId, [[{ text: "second turn" }]]);
        await pb.engine.sendMessage(OWNER, run.id, { prompt: "and now?" });
        const woken = await pb.engine.waitForTurn(OWNER, run.id);
        expect(woken.error).toBeNull();
        expect(woken).toMatchObject({ status: "idle", hibernated: false });
        const second = model.agentRequests(modelId).at(-1)!;
        expect(JSON.stringify(second.body)).toContain("look around");

        await pb.engine.endSession(OWNER, run.id);
        // The pinned repository gets an entry again.
        await waitFor(() => pb.sessions.warmPool!.repositories.includes("acme/repeat"), {
          what: "the repository entry to be made again",
          timeoutMs: LOADED.turnWaitMs,
        });
      });

      it.skipIf(sandbox !== "local")("a run on another repository takes the plain warm entry", async () => {
        await pb.sessions.warmPool!.ready();
        model.script(`${modelId}/other`, [[{ text: "nothing to do" }]]);
        const started = await pb.engine.startRun(OWNER, {
          repository: "acme/other",
          prompt: "nothing",
          modelId: `${modelId}/other`,
        });
        const run = await pb.engine.waitForTurn(OWNER, started.id);
        expect(run.status).toBe("idle");
        expect(pb.logLines.filter((l) => l.includes("run took a warm sandbox")).length).toBe(1);
        await pb.engine.endSession(OWNER, run.id);
      });
    });
}
