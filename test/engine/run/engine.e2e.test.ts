/**
 * The run engine end to end: real git repositories in temp dirs, the real `opencode serve`
 * binary in the local sandbox, the model gateway, and the scripted model.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ScriptedModel } from "../../fixtures/scripted-model.ts";
import { git, opencodeUnder, waitFor } from "../../helpers.ts";
import { LOADED, openHarness, type Harness } from "../../support/harness.ts";
import type { TestPatchbay } from "../../support/patchbay.ts";

const CANARY_KEY = "sk-or-v1-CANARY-engine-0123456789abcdef";
const OWNER = "owner-1";

let h: Harness;
let model: ScriptedModel;
let pb: TestPatchbay;

/** PIDs of opencode processes inside a run's sandbox. */
const opencodePids = (dataDir: string, runId: string) => opencodeUnder(path.join(dataDir, "sandboxes", runId));

beforeAll(async () => {
  h = await openHarness({
    repos: {
      "acme/web": {
        "README.md": "# Web\n\nHello.\n",
        "src/app.js": "export function greet() {\n  return 'hello';\n}\n",
        // A repository's own OpenCode directory: OpenCode must neither load it nor install
        // its dependencies into the workspace (which would land in the patch).
        ".opencode/package.json": '{ "dependencies": { "left-pad": "1.3.0" } }\n',
        ".opencode/agent/helper.md": "---\ndescription: a repository's own agent\n---\nHelp.\n",
      },
    },
    branches: { "acme/web": { feature: { "FEATURE.md": "feature branch\n" } } },
    env: { OPENROUTER_API_KEY: CANARY_KEY },
  });
  ({ model, pb } = h);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("the run engine", { timeout: LOADED.testMs }, () => {
  it("a one-turn run writes a new file and edits an existing one, with an exact patch, changedPaths and diffStats", async () => {
    model.script("test/one-turn", [
      [
        { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "first line\nsecond line\n" } }] },
        { toolCalls: [{ name: "read", args: { filePath: "src/app.js" } }] },
        {
          toolCalls: [
            {
              name: "edit",
              args: { filePath: "src/app.js", oldString: "return 'hello';", newString: "return 'hello, world';" },
            },
          ],
        },
        { text: "Added NOTES.md and changed the greeting." },
      ],
      [
        { toolCalls: [{ name: "write", args: { filePath: "docs/guide.md", content: "guide\n" } }] },
        { text: "Added a guide." },
      ],
    ]);
    const started = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "Add notes and fix greeting",
      modelId: "test/one-turn",
    });
    expect(started.status).toBe("running");
    expect(started.turnCount).toBe(1);
    const run = await pb.engine.waitForTurn(OWNER, started.id);
    expect(run.error).toBeNull();
    expect(run.status).toBe("idle");
    expect(run.sessionActive).toBe(true);
    expect(run.summary).toBe("Added NOTES.md and changed the greeting.");
    expect(run.changedPaths).toEqual(["NOTES.md", "src/app.js"]);
    expect(run.diffStats).toEqual({ files: 2, additions: 3, deletions: 1 });
    const { patch } = await pb.engine.getPatch(OWNER, run.id);
    expect(patch).toContain("diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644");
    expect(patch).toContain("+first line\n+second line\n");
    expect(patch).toContain("-  return 'hello';\n+  return 'hello, world';\n");

    const events = await pb.engine.events(OWNER, run.id, 0);
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    const statuses = events.filter((e) => e.type === "run.status").map((e) => e.data.status);
    expect(statuses).toEqual(["queued", "running", "idle"]);
    const tools = events.flatMap((e) =>
      e.type === "builder.event" && e.data.kind === "tool" && e.data.status === "completed" ? [e.data.tool] : [],
    );
    expect(tools).toEqual(["write", "read", "edit"]);

    // (b) a follow-up reuses the same OpenCode session and the patch accumulates
    const pidsBefore = opencodePids(pb.dataDir, run.id);
    expect(pidsBefore.length).toBeGreaterThan(0);
    const followUp = await pb.engine.sendMessage(OWNER, run.id, { prompt: "Also add a guide" });
    expect(followUp.id).toBe(run.id);
    expect(followUp.status).toBe("running");
    const after = await pb.engine.waitForTurn(OWNER, run.id);
    expect(after.status).toBe("idle");
    expect(after.turnCount).toBe(2);
    expect(after.summary).toBe("Added a guide.");
    expect(after.changedPaths).toEqual(["NOTES.md", "docs/guide.md", "src/app.js"]);
    expect(after.diffStats).toEqual({ files: 3, additions: 4, deletions: 1 });
    // Same session: the model saw the first turn's conversation in the second turn's request.
    const lastReq = model.agentRequests("test/one-turn").at(-1)!;
    expect(lastReq.body.messages.filter((m) => m.role === "user")).toHaveLength(2);
    expect(opencodePids(pb.dataDir, run.id)).toEqual(pidsBefore);

    // (c) endSession completes the run and stops its OpenCode process
    const ended = await pb.engine.sendMessage(OWNER, run.id, { endSession: true });
    expect(ended.status).toBe("completed");
    expect(ended.sessionActive).toBe(false);
    await waitFor(() => opencodePids(pb.dataDir, run.id).length === 0, { what: "opencode to stop" });
    for (const pid of pidsBefore) expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
    // The patch outlives the session.
    expect((await pb.engine.getPatch(OWNER, run.id)).patch).toContain("docs/guide.md");
  });

  it("a message to a running run is refused as busy, and another owner cannot see the run", async () => {
    model.script("test/slow", [[{ text: "slow answer", delayMs: 1500 }]]);
    const run = await pb.engine.startRun(OWNER, { repository: "acme/web", prompt: "slow", modelId: "test/slow" });
    await expect(pb.engine.sendMessage(OWNER, run.id, { prompt: "again" })).rejects.toMatchObject({
      code: "session_busy",
    });
    await expect(pb.engine.getRun("someone-else", run.id)).rejects.toMatchObject({ code: "run_not_found" });
    const done = await pb.engine.waitForTurn(OWNER, run.id);
    expect(done.status).toBe("idle");
    await pb.engine.endSession(OWNER, run.id);
  });

  it("plan mode leaves the working tree untouched and returns the plan as summary", async () => {
    model.script("test/plan", [
      [
        { toolCalls: [{ name: "read", args: { filePath: "README.md" } }] },
        { text: "Plan:\n1. Edit README.md\n2. Add tests" },
      ],
    ]);
    const run = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "Plan a change",
      modelId: "test/plan",
      taskKind: "plan",
    });
    const done = await pb.engine.waitForTurn(OWNER, run.id);
    expect(done.status).toBe("idle");
    expect(done.summary).toBe("Plan:\n1. Edit README.md\n2. Add tests");
    expect(done.changedPaths).toEqual([]);
    expect((await pb.engine.getPatch(OWNER, run.id)).patch).toBeNull();
    // The agent was offered no tool that writes.
    const req = model.agentRequests("test/plan")[0]!;
    const offered = (req.body.tools ?? []).map((t) => (t as { function: { name: string } }).function.name);
    expect(offered).not.toContain("write");
    expect(offered).not.toContain("edit");
    expect(offered).not.toContain("bash");
    const workdir = path.join(pb.dataDir, "sandboxes", run.id, "repo");
    expect(git(workdir, "status", "--porcelain")).toBe("");
    await pb.engine.endSession(OWNER, run.id);
  });

  it("checks out the requested ref", async () => {
    model.script("test/ref", [
      [{ toolCalls: [{ name: "bash", args: { command: "ls", description: "list" } }] }, { text: "listed" }],
    ]);
    const run = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "list",
      modelId: "test/ref",
      baseRef: "feature",
    });
    const done = await pb.engine.waitForTurn(OWNER, run.id);
    expect(done.status).toBe("idle");
    expect(done.baseRef).toBe("feature");
    const events = await pb.engine.events(OWNER, run.id, 0);
    const ls = events.find(
      (e) => e.type === "builder.event" && e.data.kind === "tool" && e.data.status === "completed",
    );
    expect(ls && ls.type === "builder.event" && ls.data.kind === "tool" ? ls.data.output : "").toContain("FEATURE.md");
    await pb.engine.endSession(OWNER, run.id);
  });

  it("the agent cannot find the model key in its environment or config, while the model receives the real key", async () => {
    model.script("test/env", [
      [
        {
          toolCalls: [
            {
              name: "bash",
              args: {
                command:
                  "env; cat ~/.config/opencode/* 2>/dev/null; cat /proc/self/environ | tr '\\0' '\\n'; ps -eo args 2>/dev/null | grep -i opencode",
                description: "inspect",
              },
            },
          ],
        },
        { text: "looked around" },
      ],
    ]);
    const run = await pb.engine.startRun(OWNER, { repository: "acme/web", prompt: "print env", modelId: "test/env" });
    const done = await pb.engine.waitForTurn(OWNER, run.id);
    expect(done.status).toBe("idle");
    const events = await pb.engine.events(OWNER, run.id, 0);
    const output = events
      .flatMap((e) => (e.type === "builder.event" && e.data.kind === "tool" && e.data.output ? [e.data.output] : []))
      .join("\n");
    expect(output).toContain("OPENCODE_CONFIG_CONTENT"); // the command really ran and saw its environment
    expect(output).not.toContain(CANARY_KEY);
    expect(output).not.toContain("sk-or-v1");
    // The gateway swapped the per-run token for the real key upstream.
    const reqs = model.agentRequests("test/env");
    expect(reqs.length).toBeGreaterThan(0);
    for (const r of reqs) expect(r.authorization).toBe(`Bearer ${CANARY_KEY}`);
    await pb.engine.endSession(OWNER, run.id);
    // Nowhere on disk and in no log line either.
    expect(pb.logLines.join("\n")).not.toContain(CANARY_KEY);
  });

  it("a model that answers HTTP 500 ends the run failed with a clear error", async () => {
    model.script("test/500", [[{ error: { status: 500, message: "upstream exploded" } }]]);
    const run = await pb.engine.startRun(OWNER, { repository: "acme/web", prompt: "x", modelId: "test/500" });
    const done = await pb.engine.waitForTurn(OWNER, run.id);
    expect(done.status).toBe("failed");
    expect(done.error?.code).toBe("model_error");
    expect(done.error?.message).toContain("upstream exploded");
    expect(done.error?.message.length).toBeGreaterThan(5);
    await waitFor(() => opencodePids(pb.dataDir, run.id).length === 0, { what: "opencode to stop" });
  });

  it("a model that hangs ends the run failed at the turn timeout", async () => {
    const quick = await h.openAnother({
      OPENROUTER_API_KEY: CANARY_KEY,
      PATCHBAY_TURN_TIMEOUT_MS: "4000",
      PATCHBAY_WATCHDOG_MS: "1000",
    });
    try {
      model.script("test/hang", [[{ hang: true }]]);
      const run = await quick.engine.startRun(OWNER, { repository: "acme/web", prompt: "x", modelId: "test/hang" });
      const done = await quick.engine.waitForTurn(OWNER, run.id);
      expect(done.status).toBe("failed");
      expect(done.error?.code).toBe("turn_timeout");
      await waitFor(() => opencodePids(quick.dataDir, run.id).length === 0, { what: "opencode to stop" });
    } finally {
      await quick.close();
    }
  });

  it("an unknown ref ends the run failed with invalid_ref", async () => {
    const run = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "x",
      modelId: "test/none",
      baseRef: "no-such-branch",
    });
    const done = await pb.engine.waitForTurn(OWNER, run.id);
    expect(done.status).toBe("failed");
    expect(done.error?.code).toBe("invalid_ref");
    expect(done.error?.message).toContain("no-such-branch");
  });

  it("a follow-up after the session expired starts a chained run with the prior patch applied", async () => {
    const short = await h.openAnother({ OPENROUTER_API_KEY: CANARY_KEY, PATCHBAY_SESSION_TTL_MS: "1000" });
    try {
      model.script("test/chain", [
        [
          {
            respond: (req) =>
              req.lastUser.includes("New request")
                ? { toolCalls: [{ name: "write", args: { filePath: "second.txt", content: "two\n" } }] }
                : { toolCalls: [{ name: "write", args: { filePath: "first.txt", content: "one\n" } }] },
          },
          { respond: (req) => ({ text: req.lastUser.includes("New request") ? "second done" : "first done" }) },
        ],
      ]);
      const run = await short.engine.startRun(OWNER, {
        repository: "acme/web",
        prompt: "write first",
        modelId: "test/chain",
      });
      const first = await short.engine.waitForTurn(OWNER, run.id);
      expect(first.status).toBe("idle");
      await waitFor(async () => (await short.engine.getRun(OWNER, run.id)).status === "completed", {
        what: "expiry",
      });
      expect(opencodePids(short.dataDir, run.id)).toEqual([]);
      const chained = await short.engine.sendMessage(OWNER, run.id, { prompt: "write second" });
      expect(chained.id).not.toBe(run.id);
      expect(chained.chainedFrom).toBe(run.id);
      const done = await short.engine.waitForTurn(OWNER, chained.id);
      expect(done.status).toBe("idle");
      expect(done.changedPaths).toEqual(["first.txt", "second.txt"]);
      const lastReq = model.agentRequests("test/chain").at(-1)!;
      expect(lastReq.lastUser).toContain("write first");
      expect(lastReq.lastUser).toContain("first done");
      await short.engine.endSession(OWNER, chained.id);
    } finally {
      await short.close();
    }
  });
});
