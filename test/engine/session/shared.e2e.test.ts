/**
 * PATCHBAY_SHARED_AGENT=1 end to end: one real `opencode serve` serving several runs'
 * workspaces (real git repositories in temp dirs, the local sandbox, the model gateway, the
 * scripted model). One Patchbay and one model for the whole file: each OpenCode start costs
 * seconds of CPU.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { createSandboxProvider } from "../../../src/engine/sandbox/providers.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import { isAlive } from "../../../src/engine/sandbox/process.ts";
import { makeRepo, opencodeUnder, processesUnder, tempDir, waitFor } from "../../helpers.ts";
import {
  startScriptedModel,
  type RecordedRequest,
  type ToolCall,
  type ScriptedModel,
  type Step,
} from "../../fixtures/scripted-model.ts";
import { LOADED } from "../../support/harness.ts";
import { openTestPatchbay, type TestPatchbay } from "../../support/patchbay.ts";

const CANARY_KEY = "sk-or-v1-CANARY-shared-0123456789abcdef";
const OWNER = "owner-shared";
const SHARED_MODEL = "test/shared";
const OWN_MODEL = "test/own-server";

let model: ScriptedModel;
let pb: TestPatchbay;

/** Input tokens each request of a run reports: metering shows whose it was (under the 200k context, or OpenCode compacts). */
const TOKENS: Record<string, number> = { alpha: 1000, beta: 20_000, gamma: 3000, delta: 50 };

/** The prompt names the run (`run=alpha`) and the file to write; the script answers from the request alone. */
const writeFromPrompt: Step = {
  respond: (req) => {
    // A subagent's own conversation (the `task` tool): one answer ends it.
    if (req.lastUser.startsWith("subtask "))
      return { text: "subtask done", usage: { prompt_tokens: 7, completion_tokens: 1 } };
    const m = /run=(\w+) file=(\S+)( background| task)?/.exec(req.lastUser)!;
    const usage = { prompt_tokens: TOKENS[m[1]!]!, completion_tokens: 1 };
    const calls: ToolCall[] = [{ name: "write", args: { filePath: m[2]!, content: `${m[1]} ${m[2]}\n` } }];
    // A command the agent leaves running in the background, with its cwd in the workspace.
    if (m[3] === " background")
      calls.push({ name: "bash", args: { command: "sleep 300 >/dev/null 2>&1 &", description: "background" } });
    // A subagent: a session of its own, whose model requests name that session.
    if (m[3] === " task")
      calls.push({
        name: "task",
        args: { description: "subtask", prompt: `subtask for ${m[1]}`, subagent_type: "general" },
      });
    return { toolCalls: calls, usage };
  },
};
const done: Step = {
  respond: (req) => {
    const m = /run=(\w+) file=(\S+)/.exec(req.lastUser)!;
    return { text: `wrote ${m[2]}`, usage: { prompt_tokens: TOKENS[m[1]!]!, completion_tokens: 1 } };
  },
};

const sandboxOf = (runId: string) => path.join(pb.dataDir, "sandboxes", runId);
const sessionOf = (r: RecordedRequest) => r.headers["x-session-id"];
const requestsOf = (name: string) =>
  model.agentRequests(SHARED_MODEL).filter((r) => r.lastUser.includes(`run=${name} `));

beforeAll(async () => {
  model = await startScriptedModel({
    scripts: {
      [SHARED_MODEL]: [
        [writeFromPrompt, done],
        [writeFromPrompt, done],
        [writeFromPrompt, done],
      ],
      [OWN_MODEL]: [[writeFromPrompt, done]],
    },
  });
  const repoBase = tempDir("repos");
  makeRepo(repoBase, "acme/shared", { "README.md": "# Shared\n" });
  pb = await openTestPatchbay({
    PATCHBAY_SHARED_AGENT: "1",
    PATCHBAY_DEFAULT_MODEL: SHARED_MODEL,
    PATCHBAY_GIT_BASE_URL: `file://${repoBase}`,
    PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
    OPENROUTER_API_KEY: CANARY_KEY,
    PATCHBAY_SESSION_TTL_MS: "120000",
    PATCHBAY_TURN_TIMEOUT_MS: String(LOADED.turnTimeoutMs),
    PATCHBAY_WATCHDOG_MS: "2000",
  });
});

afterAll(async () => {
  await pb?.close();
  await model?.close();
});

describe("one shared agent server (PATCHBAY_SHARED_AGENT=1)", () => {
  it("is refused at start-up with any sandbox provider but local", async () => {
    for (const sandbox of ["bwrap", "e2b"]) {
      const config = loadConfig({
        PATCHBAY_SHARED_AGENT: "1",
        PATCHBAY_SANDBOX: sandbox,
        PATCHBAY_DATA_DIR: tempDir(),
      });
      await expect(createSandboxProvider(config, silentLogger)).rejects.toThrow(
        /^PATCHBAY_SHARED_AGENT=1 needs PATCHBAY_SANDBOX=local/,
      );
    }
  });

  it("two runs at once are two sessions on one OpenCode process, each with its own files, patch, follow-ups and usage", async () => {
    const [a, b] = await Promise.all([
      pb.engine.startRun(OWNER, { repository: "acme/shared", prompt: "run=alpha file=alpha.txt" }),
      pb.engine.startRun(OWNER, { repository: "acme/shared", prompt: "run=beta file=beta.txt" }),
    ]);
    const [ra, rb] = await Promise.all([pb.engine.waitForTurn(OWNER, a.id), pb.engine.waitForTurn(OWNER, b.id)]);
    expect([ra.status, ra.error, rb.status, rb.error]).toEqual(["idle", null, "idle", null]);

    // One opencode process under the data dir, the shared server's; none in the runs' sandboxes.
    const server = pb.sessions.sharedAgent!.serverPid!;
    expect(opencodeUnder(pb.dataDir)).toEqual([server]);
    expect(opencodeUnder(sandboxOf(a.id))).toEqual([]);
    expect(opencodeUnder(sandboxOf(b.id))).toEqual([]);

    expect(ra.changedPaths).toEqual(["alpha.txt"]);
    expect(rb.changedPaths).toEqual(["beta.txt"]);
    const pa = (await pb.engine.getPatch(OWNER, a.id)).patch!;
    expect(pa).toBe(
      "diff --git a/alpha.txt b/alpha.txt\nnew file mode 100644\nindex 0000000..080dce1\n--- /dev/null\n+++ b/alpha.txt\n@@ -0,0 +1 @@\n+alpha alpha.txt\n",
    );
    expect((await pb.engine.getPatch(OWNER, b.id)).patch).toContain("+beta beta.txt\n");
    expect((await pb.engine.getPatch(OWNER, b.id)).patch).not.toContain("alpha");

    // OpenCode names the session in every model request; the gateway swapped in the real key.
    const [sa, sb] = [requestsOf("alpha"), requestsOf("beta")].map((reqs) => {
      expect(reqs.length).toBe(2);
      for (const r of reqs) {
        expect(r.authorization).toBe(`Bearer ${CANARY_KEY}`);
        expect(r.headers["x-session-affinity"]).toBe(sessionOf(r));
      }
      expect(new Set(reqs.map(sessionOf)).size).toBe(1);
      return sessionOf(reqs[0]!);
    });
    expect(sa).toMatch(/^ses_/);
    expect(sb).not.toBe(sa);

    // Follow-ups continue each session, on the same server.
    await Promise.all([
      pb.engine.sendMessage(OWNER, a.id, { prompt: "run=alpha file=alpha-2.txt background" }),
      pb.engine.sendMessage(OWNER, b.id, { prompt: "run=beta file=beta-2.txt" }),
    ]);
    const [fa, fb] = await Promise.all([pb.engine.waitForTurn(OWNER, a.id), pb.engine.waitForTurn(OWNER, b.id)]);
    expect([fa.status, fa.error, fb.status, fb.error]).toEqual(["idle", null, "idle", null]);
    expect(fa.changedPaths).toEqual(["alpha-2.txt", "alpha.txt"]);
    expect(fb.changedPaths).toEqual(["beta-2.txt", "beta.txt"]);
    const lastA = requestsOf("alpha").at(-1)!;
    expect(sessionOf(lastA)).toBe(sa);
    expect(lastA.body.messages.filter((m) => m.role === "user")).toHaveLength(2);
    expect(sessionOf(requestsOf("beta").at(-1)!)).toBe(sb);
    expect(pb.sessions.sharedAgent!.serverPid).toBe(server);

    // Each request was metered to the run whose session made it (4 requests each).
    await waitFor(async () => (await pb.engine.getRun(OWNER, a.id)).usage.inputTokens === 4 * TOKENS.alpha!, {
      what: "alpha's usage",
    });
    await waitFor(async () => (await pb.engine.getRun(OWNER, b.id)).usage.inputTokens === 4 * TOKENS.beta!, {
      what: "beta's usage",
    });

    // alpha's agent left a command running in its workspace, as a child of the shared server.
    const stray = await waitFor(() => processesUnder(sandboxOf(a.id), /sleep/)[0], { what: "the background sleep" });

    // Ending alpha kills what its agent started there and leaves the server and beta working.
    await pb.engine.endSession(OWNER, a.id);
    expect(isAlive(stray)).toBe(false);
    expect(processesUnder(sandboxOf(a.id))).toEqual([]);
    expect(fs.existsSync(sandboxOf(a.id))).toBe(false);
    expect(pb.sessions.sharedAgent!.serverPid).toBe(server);
    expect(isAlive(server)).toBe(true);

    await pb.engine.sendMessage(OWNER, b.id, { prompt: "run=beta file=beta-3.txt" });
    const third = await pb.engine.waitForTurn(OWNER, b.id);
    expect([third.status, third.error]).toEqual(["idle", null]);
    expect(third.changedPaths).toEqual(["beta-2.txt", "beta-3.txt", "beta.txt"]);
    expect(sessionOf(requestsOf("beta").at(-1)!)).toBe(sb);

    await pb.engine.endSession(OWNER, b.id);
    for (const id of [a.id, b.id]) expect(processesUnder(sandboxOf(id))).toEqual([]);
    // Both sessions were deleted and their directories' instances disposed on the server.
    expect(pb.logLines.filter((l) => /could not (abort|delete|dispose)/.test(l))).toEqual([]);
    expect(opencodeUnder(pb.dataDir)).toEqual([server]);
  });

  it("a run with a model the shared server does not list gets a server of its own, and works", async () => {
    const run = await pb.engine.startRun(OWNER, {
      repository: "acme/shared",
      prompt: "run=gamma file=gamma.txt",
      modelId: OWN_MODEL,
    });
    const ended = await pb.engine.waitForTurn(OWNER, run.id);
    expect([ended.status, ended.error]).toEqual(["idle", null]);
    expect(ended.changedPaths).toEqual(["gamma.txt"]);
    const own = opencodeUnder(sandboxOf(run.id));
    expect(own).toHaveLength(1);
    expect(own).not.toContain(pb.sessions.sharedAgent!.serverPid);
    expect(pb.logLines.some((l) => l.includes("does not list this run's model"))).toBe(true);
    await pb.engine.endSession(OWNER, run.id);
    expect(opencodeUnder(sandboxOf(run.id))).toEqual([]);
  });

  it("a subagent's session (the task tool) is bound to its run too: its requests reach the model, metered to the run", async () => {
    const run = await pb.engine.startRun(OWNER, { repository: "acme/shared", prompt: "run=delta file=delta.txt task" });
    const idle = await pb.engine.waitForTurn(OWNER, run.id);
    expect([idle.status, idle.error, idle.changedPaths]).toEqual(["idle", null, ["delta.txt"]]);
    const parent = sessionOf(requestsOf("delta")[0]!);
    const sub = model.requests.filter((r) => r.lastUser === "subtask for delta");
    expect(sub.length).toBeGreaterThan(0);
    expect(sessionOf(sub[0]!)).toMatch(/^ses_/);
    expect(sessionOf(sub[0]!)).not.toBe(parent);
    const events = await pb.engine.events(OWNER, run.id, 0);
    const taskStatuses = events.flatMap((e) =>
      e.type === "builder.event" && e.data.kind === "tool" && e.data.tool === "task" ? [e.data.status] : [],
    );
    expect(taskStatuses.at(-1)).toBe("completed");
    // 2 requests of the run's own session, plus the subagent's.
    const expected = 2 * TOKENS.delta! + sub.filter((r) => !r.side).length * 7;
    await waitFor(async () => (await pb.engine.getRun(OWNER, run.id)).usage.inputTokens >= expected, {
      what: "delta's usage",
    });
    await pb.engine.endSession(OWNER, run.id);
  });

  it("a server that dies takes its idle runs with it (agent_crashed), and the next run starts it again", async () => {
    const run = await pb.engine.startRun(OWNER, { repository: "acme/shared", prompt: "run=alpha file=before.txt" });
    expect((await pb.engine.waitForTurn(OWNER, run.id)).status).toBe("idle");
    const dead = pb.sessions.sharedAgent!.serverPid!;
    process.kill(dead, "SIGKILL");
    await waitFor(() => pb.sessions.sharedAgent!.serverPid === undefined, {
      what: "the driver to see the server exit",
    });
    await pb.engine.sendMessage(OWNER, run.id, { prompt: "run=alpha file=after.txt" });
    const crashed = await pb.engine.waitForTurn(OWNER, run.id);
    expect([crashed.status, crashed.error?.code]).toEqual(["failed", "agent_crashed"]);

    const next = await pb.engine.startRun(OWNER, { repository: "acme/shared", prompt: "run=beta file=next.txt" });
    const ok = await pb.engine.waitForTurn(OWNER, next.id);
    expect([ok.status, ok.error, ok.changedPaths]).toEqual(["idle", null, ["next.txt"]]);
    expect(pb.sessions.sharedAgent!.serverPid).not.toBe(dead);
    expect(opencodeUnder(pb.dataDir)).toEqual([pb.sessions.sharedAgent!.serverPid]);
    await pb.engine.endSession(OWNER, next.id);
  });

  it("close() leaves no opencode process", async () => {
    expect(opencodeUnder(pb.dataDir)).toHaveLength(1);
    await pb.close();
    expect(opencodeUnder(pb.dataDir)).toEqual([]);
  });
});
