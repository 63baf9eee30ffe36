/**
 * `agentIn`: the order of a run's setup and its agent's start, on a real local sandbox. The
 * agent here is the start callback's own record of when it ran (no server: the order is what
 * is under test; the whole path with OpenCode is in test/engine/environment/setup.e2e.test.ts).
 */
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { AgentSession } from "../../../src/engine/agent/agent.ts";
import { createLocalProvider } from "../../../src/engine/sandbox/local.ts";
import type { Sandbox } from "../../../src/engine/sandbox/sandbox.ts";
import { agentIn } from "../../../src/engine/session/run-session.ts";
import { makeRepo, tempDir } from "../../helpers.ts";

const sandboxes: Sandbox[] = [];
afterEach(async () => {
  await Promise.all(sandboxes.splice(0).map((s) => s.kill()));
});

let seq = 0;
async function sandbox(): Promise<Sandbox> {
  const repo = makeRepo(tempDir("remote"), "acme/order", { "README.md": "# order\n" });
  const provider = createLocalProvider({ dataDir: tempDir("data") });
  const s = await provider.create({
    runId: `run_order${++seq}`,
    ownerId: "o",
    repository: { fullName: "acme/order", cloneUrl: `${repo.baseUrl}/acme/order.git` },
  });
  sandboxes.push(s);
  return s;
}

/** A start that records what the workspace held when it ran, then leaves a `started` mark. */
function recordingStart(s: Sandbox, log: string[]) {
  return async () => {
    log.push(`start saw layer=${fs.existsSync(path.join(s.workdir, "deps", "layer.txt"))}`);
    fs.writeFileSync(path.join(s.workdir, "started"), "");
    return { close: async () => undefined } as unknown as AgentSession;
  };
}

/** A prepare that writes a layer file through the sandbox, then says the workspace is ready, then goes on. */
const restoreThenMore = (log: string[]) => async (s: Sandbox, workspaceReady: () => void) => {
  await s.exec(["sh", "-c", "mkdir -p deps && echo x > deps/layer.txt"], { timeoutMs: 30_000 });
  log.push("restored");
  workspaceReady();
  await s.exec(["sh", "-c", "sleep 0.3"], { timeoutMs: 30_000 });
  log.push("prepare done");
};

describe("agentIn", () => {
  it("gated (a running server, pooled): the agent opens only once the workspace is ready, while prepare goes on", async () => {
    const s = await sandbox();
    const log: string[] = [];
    await agentIn(s, recordingStart(s, log), restoreThenMore(log), true);
    expect(log).toEqual(["restored", "start saw layer=true", "prepare done"]);
  });

  it("gated: a prepare that never says ready still lets the agent open when it ends", async () => {
    const s = await sandbox();
    const log: string[] = [];
    await agentIn(s, recordingStart(s, log), async () => void log.push("skipped"), true);
    expect(log).toEqual(["skipped", "start saw layer=false"]);
  });

  it("ungated (cold): the agent's start runs beside prepare from the beginning", async () => {
    const s = await sandbox();
    const log: string[] = [];
    // Its layer appears only once the agent's start has run: had start waited for prepare, this would hang.
    const besideStart = async (sb: Sandbox) => {
      const r = await sb.exec(
        ["sh", "-c", "while [ ! -e started ]; do sleep 0.05; done; mkdir -p deps && echo x > deps/layer.txt"],
        { timeoutMs: 60_000 },
      );
      expect(r.exitCode).toBe(0);
      log.push("prepare done");
    };
    await agentIn(s, recordingStart(s, log), besideStart);
    expect(log).toEqual(["start saw layer=false", "prepare done"]);
  });

  it("a failing prepare fails the open, closes the agent and kills the sandbox", async () => {
    const s = await sandbox();
    let closed = false;
    const start = async () => ({ close: async () => void (closed = true) }) as unknown as AgentSession;
    const failed = agentIn(s, start, async () => Promise.reject(new Error("setup broke")), true);
    await expect(failed).rejects.toThrow("setup broke");
    expect(closed).toBe(true);
    expect(fs.existsSync(s.workdir)).toBe(false);
  });
});
