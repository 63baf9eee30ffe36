/**
 * Crash recovery: a Patchbay process killed with SIGKILL mid-turn leaves its run and its
 * OpenCode process behind; the next process on the same data dir marks the run failed
 * (server_restart) and kills what the dead one left running.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { createLogger, openPatchbay } from "../../../src/engine/index.ts";
import { opencodeUnder, tempDir, waitFor } from "../../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../../support/harness.ts";

let fx: Fixtures;

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "hi\n" } },
    model: { scripts: { "test/hang": [[{ hang: true }]] } },
  });
}, LOADED.hookMs);
afterAll(async () => {
  await fx?.close();
}, LOADED.hookMs);

describe("crash recovery", { timeout: LOADED.testMs }, () => {
  it("after kill -9 mid-turn, the next start marks the run failed with server_restart and leaves no OpenCode process", async () => {
    const dataDir = tempDir("data");
    const env = {
      ...process.env,
      PATCHBAY_DATA_DIR: dataDir,
      ...fx.env,
      OPENROUTER_API_KEY: "sk-test-recovery",
    };
    const asked = fx.model.agentRequests("test/hang").length;
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "test/fixtures/engine-child.ts",
        JSON.stringify({ repository: "acme/web", prompt: "hang", modelId: "test/hang" }),
      ],
      {
        env,
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const runId = await waitFor(() => out.trim().split("\n")[0] || undefined, {
      timeoutMs: LOADED.hookMs,
      what: "the child to start a run",
    });
    // Already asked, or asked later: a slow test process may read the id after the request came.
    await waitFor(() => fx.model.agentRequests("test/hang").length > asked, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the model to be asked",
    });
    const sandboxDir = path.join(dataDir, "sandboxes", runId);
    expect(opencodeUnder(sandboxDir).length).toBeGreaterThan(0);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    // The orphaned OpenCode server survives its parent...
    expect(opencodeUnder(sandboxDir).length).toBeGreaterThan(0);

    // ...until the next Patchbay on the same data dir starts.
    const config = loadConfig({
      PATCHBAY_DATA_DIR: dataDir,
      ...fx.env,
      OPENROUTER_API_KEY: "sk-test-recovery",
    });
    const pb = await openPatchbay(config, { log: createLogger({ level: "silent" }) });
    try {
      const run = await pb.engine.getRun("owner-1", runId, { events: true });
      expect(run.status).toBe("failed");
      expect(run.error?.code).toBe("server_restart");
      const ids = run.events!.map((e) => e.id);
      expect(ids).toEqual(ids.map((_, i) => i + 1)); // nothing lost, nothing duplicated
      await waitFor(() => opencodeUnder(sandboxDir).length === 0, { what: "orphaned opencode to be killed" });
      expect(fs.existsSync(sandboxDir)).toBe(false);
    } finally {
      await pb.close();
    }
  });
  it("with PATCHBAY_SHARED_AGENT=1, the next start after kill -9 kills the orphaned shared OpenCode server", async () => {
    const dataDir = tempDir("data");
    const env = {
      PATCHBAY_DATA_DIR: dataDir,
      ...fx.env,
      OPENROUTER_API_KEY: "sk-test-recovery",
      PATCHBAY_SHARED_AGENT: "1",
      PATCHBAY_DEFAULT_MODEL: "test/hang",
    };
    const asked = fx.model.agentRequests("test/hang").length;
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "test/fixtures/engine-child.ts", JSON.stringify({ repository: "acme/web", prompt: "hang" })],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const runId = await waitFor(() => out.trim().split("\n")[0] || undefined, {
      timeoutMs: LOADED.hookMs,
      what: "the child to start a run",
    });
    // Already asked, or asked later: a slow test process may read the id after the request came.
    await waitFor(() => fx.model.agentRequests("test/hang").length > asked, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the model to be asked",
    });
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    // The shared server is no run's: it lives in a sandbox of its own, and outlives its parent...
    const sandboxes = path.join(dataDir, "sandboxes");
    expect(opencodeUnder(path.join(sandboxes, runId))).toEqual([]);
    const orphans = opencodeUnder(sandboxes);
    expect(orphans).toHaveLength(1);
    expect(fs.readlinkSync(`/proc/${orphans[0]}/cwd`)).toMatch(/\/sandboxes\/shared_[0-9a-f]+\//);

    // ...until the next Patchbay on the same data dir starts.
    const pb = await openPatchbay(loadConfig(env), { log: createLogger({ level: "silent" }) });
    try {
      expect((await pb.engine.getRun("owner-1", runId)).error?.code).toBe("server_restart");
      await waitFor(() => opencodeUnder(dataDir).length === 0, { what: "the orphaned shared server to be killed" });
      expect(fs.readdirSync(sandboxes)).toEqual([]);
    } finally {
      await pb.close();
    }
  });
});
