/**
 * validationMode end to end: real OpenCode, the scripted model and the checks run in the
 * local sandbox after the turn.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScriptedModel } from "../../fixtures/scripted-model.ts";
import { LOADED, openHarness, type Harness } from "../../support/harness.ts";
import type { TestPatchbay } from "../../support/patchbay.ts";

const OWNER = "owner-v";
let h: Harness;
let model: ScriptedModel;
let pb: TestPatchbay;

const CHECKED_FILES = {
  "README.md": "# Checked\n",
  "package.json":
    JSON.stringify({ name: "checked", scripts: { typecheck: "node check.js", test: "node test.js" } }) + "\n",
  // The quick check leaves an untracked build artifact and touches a tracked file.
  "check.js":
    "const fs = require('fs');\nfs.writeFileSync('build-output.txt', 'built');\nfs.appendFileSync('README.md', 'touched by the check\\n');\nconsole.log('check ok');\n",
  "test.js":
    "const fs = require('fs');\nif (!fs.existsSync('fixed.txt')) { console.error('fixed.txt is missing'); process.exit(1); }\nconsole.log('tests ok');\n",
};

beforeAll(async () => {
  h = await openHarness({
    repos: { "acme/checked": CHECKED_FILES },
    env: { OPENROUTER_API_KEY: "sk-test-validation" },
  });
  ({ model, pb } = h);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("validationMode", { timeout: LOADED.testMs }, () => {
  it("tests: failing tests give the agent one repair turn in the same session, then everything runs again", async () => {
    model.script("test/repair", [
      [
        { toolCalls: [{ name: "write", args: { filePath: "feature.txt", content: "feature\n" } }] },
        { text: "Added the feature." },
      ],
      [
        { toolCalls: [{ name: "write", args: { filePath: "fixed.txt", content: "fixed\n" } }] },
        { text: "Fixed the tests." },
      ],
    ]);
    const started = await pb.engine.startRun(OWNER, {
      repository: "acme/checked",
      prompt: "add feature",
      modelId: "test/repair",
      validationMode: "tests",
    });
    const run = await pb.engine.waitForTurn(OWNER, started.id);
    expect(run.status).toBe("idle");
    const v = run.validation!;
    expect(v.mode).toBe("tests");
    expect(v.status).toBe("passed");
    expect(v.commands.map((c) => [c.command.replace(/\(patch against \w+\)/, "(patch)"), c.exitCode])).toEqual([
      ["git apply --check (patch)", 0],
      ["npm run typecheck", 0],
      ["npm test", 1],
      ["git apply --check (patch)", 0],
      ["npm run typecheck", 0],
      ["npm test", 0],
    ]);
    expect(v.commands[2]!.outputTail).toContain("fixed.txt is missing");
    for (const c of v.commands) expect(c.durationMs).toBeGreaterThanOrEqual(0);
    // The repair was a turn of the same session, told what failed.
    const repair = model.agentRequests("test/repair").at(-1)!;
    expect(repair.body.messages.filter((m) => m.role === "user")).toHaveLength(2);
    expect(repair.lastUser).toContain("fixed.txt is missing");
    expect(run.summary).toBe("Fixed the tests.");
    expect(run.turnCount).toBe(1);
    // The checks' side effects are not part of the patch.
    expect(run.changedPaths).toEqual(["feature.txt", "fixed.txt"]);
    await pb.engine.endSession(OWNER, run.id);
  });

  it("basic runs the quick checks but not the tests; minimal runs nothing", async () => {
    model.script("test/basic", [
      [{ toolCalls: [{ name: "write", args: { filePath: "a.txt", content: "a\n" } }] }, { text: "ok" }],
    ]);
    const basic = await pb.engine.startRun(OWNER, { repository: "acme/checked", prompt: "a", modelId: "test/basic" });
    const minimal = await pb.engine.startRun(OWNER, {
      repository: "acme/checked",
      prompt: "a",
      modelId: "test/basic",
      validationMode: "minimal",
    });
    const [b, m] = await Promise.all([
      pb.engine.waitForTurn(OWNER, basic.id),
      pb.engine.waitForTurn(OWNER, minimal.id),
    ]);
    expect(b.validation).toMatchObject({ mode: "basic", status: "passed" });
    expect(b.validation!.commands.map((c) => c.command)).toEqual([
      expect.stringMatching(/^git apply --check/),
      "npm run typecheck",
    ]);
    expect(b.changedPaths).toEqual(["a.txt"]);
    expect(m.validation).toEqual({ mode: "minimal", status: "skipped", commands: [] });
    await Promise.all([pb.engine.endSession(OWNER, b.id), pb.engine.endSession(OWNER, m.id)]);
  });
});
