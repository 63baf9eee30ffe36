/**
 * Reattaching after a restart (e2b, whose VMs outlive Patchbay): a process holding an idle
 * run is killed with SIGKILL; the next one on the same data dir connects to the VM by id,
 * takes its OpenCode server and session back with the same gateway token, and a follow-up
 * continues that session (the model sees the first turn). A VM no run owns is killed. A
 * graceful close leaves idle VMs running for the next start; a VM that ended meanwhile
 * (E2B's timeout) ends its run completed, its work kept.
 *
 * E2B itself is the stand-in of test/fixtures/e2b-cloud.ts (state in a directory, commands
 * run for real on this machine); OpenCode, the gateway, git and the store are real.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { createLogger, openPatchbay, type Patchbay } from "../../../src/engine/index.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import { freeLoopbackPort } from "../../../src/engine/sandbox/process.ts";
import { e2bCloud } from "../../fixtures/e2b-cloud.ts";
import { tempDir, waitFor } from "../../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../../support/harness.ts";

const KEY = "sk-or-v1-reattach-canary-5d1f0c9e7b3a";
const OWNER = "owner-1";
let fx: Fixtures;

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        // Turn 1 writes a file, then the model hangs (the server is killed meanwhile); turn 2 after the restart.
        "test/e2b-mid": [
          [{ toolCalls: [{ name: "write", args: { filePath: "WIP.md", content: "wip\n" } }] }, { hang: true }],
          [
            { toolCalls: [{ name: "write", args: { filePath: "MORE.md", content: "more\n" } }] },
            { text: "Wrote MORE." },
          ],
        ],
        "test/e2b-nap": ["FIRST", "SECOND", "THIRD"].map((name) => [
          { toolCalls: [{ name: "write", args: { filePath: `${name}.md`, content: `${name}\n` } }] },
          { text: `Wrote ${name}.` },
        ]),
        "test/e2b": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "FIRST.md", content: "one\n" } }] },
            { text: "Wrote FIRST." },
          ],
          [
            { toolCalls: [{ name: "write", args: { filePath: "SECOND.md", content: "two\n" } }] },
            { text: "Wrote SECOND." },
          ],
        ],
      },
    },
  });
}, LOADED.hookMs);
const clouds: ReturnType<typeof e2bCloud>[] = [];
afterAll(async () => {
  // A failed test must not leave VMs' processes behind.
  for (const cloud of clouds) for (const id of cloud.alive().keys()) await cloud.sdk.kill(id, { apiKey: "k" });
  await fx?.close();
}, LOADED.hookMs);

/** Secrets a process's environment holds (OpenCode's password and config, with the gateway token). */
function secretsOf(pid: number): string[] {
  const env = fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
  const password = env.find((e) => e.startsWith("OPENCODE_SERVER_PASSWORD="))!.split("=")[1]!;
  const token = /pbgw_[A-Za-z0-9_-]{43}/.exec(env.join("\n"))![0];
  return [password, token];
}

/** Every file under `dir`, as text. */
function filesUnder(dir: string): string {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => fs.readFileSync(path.join(e.parentPath, e.name), "utf8"))
    .join("\n");
}

/** A data dir, an E2B stand-in cloud and a fixed gateway port, and how to open Patchbay on them. */
async function e2bSetup() {
  const dataDir = tempDir("data");
  const cloudDir = tempDir("e2b-cloud");
  const gatewayPort = await freeLoopbackPort();
  const env: Record<string, string> = {
    ...fx.env,
    PATCHBAY_DATA_DIR: dataDir,
    OPENROUTER_API_KEY: KEY,
    PATCHBAY_GATEWAY_PORT: String(gatewayPort),
    PATCHBAY_PUBLIC_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
    PATCHBAY_WATCHDOG_MS: "2000",
    // Hibernation is asked for where a test wants it (engine.hibernate).
    PATCHBAY_HIBERNATE_AFTER_MS: "0",
  };
  const cloud = e2bCloud(cloudDir);
  clouds.push(cloud);
  const lines: string[] = [];
  const open = (opts: { listFails?: boolean; poolSize?: number } = {}): Promise<Patchbay> => {
    const config = loadConfig({ ...env, PATCHBAY_WARM_POOL_SIZE: String(opts.poolSize ?? 0) });
    const sdk = e2bCloud(cloudDir, { hosts: "loopback" }).sdk;
    return openPatchbay(config, {
      log: createLogger({ level: "debug", write: (l) => lines.push(l) }),
      sandboxes: createE2bProvider({
        apiKey: "e2b_test_key",
        publicGatewayUrl: config.publicGatewayUrl!,
        sessionTtlMs: config.sessionTtlMs,
        turnTimeoutMs: config.turnTimeoutMs,
        // E2B's API down for a moment at start-up: the reaper's list fails.
        sdk: opts.listFails ? { ...sdk, list: () => Promise.reject(new Error("503 Service Unavailable")) } : sdk,
      }),
    });
  };
  /** Patchbay in a process of its own on the same data dir and cloud, which starts one run (killed by the test). */
  const child = (body: unknown, mode?: "idle") => {
    const proc = spawn(
      process.execPath,
      ["--import", "tsx", "test/fixtures/engine-child.ts", JSON.stringify(body), ...(mode ? [mode] : [])],
      { env: { ...process.env, ...env, PATCHBAY_TEST_E2B_CLOUD: cloudDir }, stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
    return {
      output: () => out,
      async kill() {
        proc.kill("SIGKILL");
        if (proc.exitCode === null && proc.signalCode === null) await new Promise((r) => proc.once("exit", r));
      },
    };
  };
  return { dataDir, cloud, lines, open, child };
}

describe("reattach after a restart (e2b)", { timeout: LOADED.testMs }, () => {
  it("kill -9, then a graceful restart: idle runs keep their VM and OpenCode session; gone VMs end their run; orphans are killed", async () => {
    const { dataDir, cloud, lines, open, child } = await e2bSetup();
    const body = { repository: "acme/web", prompt: "write first", modelId: "test/e2b", validationMode: "minimal" };

    // A: a process of its own, killed with SIGKILL while its run is idle.
    const a = child(body, "idle");
    const [runId, status] = await waitFor(() => /^(run_\S+) (\S+)$/m.exec(a.output())?.slice(1), {
      timeoutMs: LOADED.hookMs + LOADED.turnWaitMs,
      what: "the child's run to finish its first turn",
    });
    expect(status).toBe("idle");
    const [vm] = [...cloud.alive().keys()];
    const [server] = cloud.processes(vm!);
    expect(server).toBeGreaterThan(0);
    const secrets = secretsOf(server!);
    const orphan = (
      await cloud.sdk.create("opencode", {
        apiKey: "k",
        metadata: { patchbay: "1", patchbayRunId: "run_nobodys" },
        timeoutMs: 1,
      })
    ).sandboxId;
    await a.kill();
    expect(cloud.processes(vm!)).toEqual([server]); // a VM's processes outlive the client

    // B: reattaches the idle run, kills the orphan, and continues the same session.
    const b = await open();
    let otherId = "";
    try {
      const back = await b.engine.getRun(OWNER, runId!, { events: true });
      expect(back.status).toBe("idle");
      expect(JSON.stringify(back.events)).toContain("reattached to this run's sandbox and agent session");
      expect(cloud.alive().has(orphan)).toBe(false);
      expect(cloud.alive().has(vm!)).toBe(true);

      const seen = fx.model.requests.length;
      await b.engine.sendMessage(OWNER, runId!, { prompt: "write second" });
      const after = await b.engine.waitForTurn(OWNER, runId!);
      expect(after.status).toBe("idle");
      expect(after.changedPaths).toEqual(["FIRST.md", "SECOND.md"]);
      expect(after.summary).toBe("Wrote SECOND.");
      const followUp = fx.model.requests.slice(seen).filter((r) => !r.side);
      expect(followUp.length).toBeGreaterThan(0);
      // The same session: the model is sent the first turn's prompt and work as history.
      expect(JSON.stringify(followUp[0]!.body.messages)).toContain("write first");
      expect(followUp[0]!.lastUser).toContain("write second");
      expect(followUp.every((r) => r.authorization === `Bearer ${KEY}`)).toBe(true); // through the restored token
      expect(cloud.processes(vm!)).toEqual([server]); // the same OpenCode server

      // A second idle run, for the VM that will be gone at the next start.
      const other = await b.engine.startRun(OWNER, body);
      expect((await b.engine.waitForTurn(OWNER, other.id)).status).toBe("idle");
      otherId = other.id;
    } finally {
      await b.close(); // graceful: idle VMs are left running
    }
    const vms = [...cloud.alive().keys()];
    expect(vms).toHaveLength(2);
    expect(cloud.processes(vm!)).toEqual([server]);
    const otherVm = vms.find((v) => v !== vm)!;
    await cloud.sdk.kill(otherVm, { apiKey: "k" }); // E2B ended it (its timeout) while no Patchbay ran

    // C: takes run 1 over again; run 2's VM is gone, so run 2 ends completed with its work kept.
    // E2B's list fails at this start: the reaper gives up, the start and the reattached VM do not.
    const c = await open({ listFails: true });
    try {
      const one = await c.engine.getRun(OWNER, runId!);
      expect(one.status).toBe("idle");
      expect(cloud.alive().has(vm!)).toBe(true);
      expect(lines.join("\n")).toContain("could not reap sandboxes a previous process left");
      const two = await c.engine.getRun(OWNER, otherId);
      expect(two.status).toBe("completed");
      expect(two.changedPaths).toEqual(["FIRST.md"]);

      // Secrets: the sealed session record holds the password and token; no file and no log line shows them.
      for (const secret of [...secrets, KEY]) {
        expect(filesUnder(dataDir)).not.toContain(secret);
        expect(lines.join("\n")).not.toContain(secret);
      }

      const ended = await c.engine.endSession(OWNER, runId!);
      expect(ended.status).toBe("completed");
      expect(cloud.alive().size).toBe(0);
      await waitFor(() => cloud.processes(vm!).length === 0, { what: "the VM's OpenCode to be killed" });
    } finally {
      await c.close();
    }
  });

  it("with a warm pool, a run takes a pre-started VM (made under a warm id), and that VM survives a restart as the run's", async () => {
    const { cloud, open } = await e2bSetup();

    const a = await open({ poolSize: 1 });
    let runId = "";
    try {
      await a.sessions.warmPool!.ready();
      const [warmVm, warm] = [...cloud.alive().entries()][0]!;
      expect(warm!.metadata.patchbayRunId).toMatch(/^warm_/);
      expect(cloud.processes(warmVm!)).toHaveLength(1); // OpenCode already started
      expect(fs.readdirSync(path.join(warm!.home, "repo"))).toEqual([]); // no repository yet

      const run = await a.engine.startRun(OWNER, {
        repository: "acme/web",
        prompt: "write first",
        modelId: "test/e2b",
        validationMode: "minimal",
      });
      runId = run.id;
      const done = await a.engine.waitForTurn(OWNER, run.id);
      expect(done.status).toBe("idle");
      expect(done.changedPaths).toEqual(["FIRST.md"]);
      expect(fs.readFileSync(path.join(warm!.home, "repo", "FIRST.md"), "utf8")).toBe("one\n");
    } finally {
      await a.close(); // the pool's refill is killed; the run's VM is handed over
    }
    const left = [...cloud.alive().entries()];
    expect(left).toHaveLength(1);
    expect(left[0]![1].metadata.patchbayRunId).toMatch(/^warm_/);

    const b = await open();
    try {
      expect((await b.engine.getRun(OWNER, runId)).status).toBe("idle");
      expect(cloud.alive().size).toBe(1); // reaped by VM id, not by its warm metadata
      await b.engine.endSession(OWNER, runId);
      expect(cloud.alive().size).toBe(0);
    } finally {
      await b.close();
    }
  });

  it("kill -9 mid-turn: the turn ends server_restart with its work as the patch, and the session continues", async () => {
    const { cloud, open, child } = await e2bSetup();
    const a = child({
      repository: "acme/web",
      prompt: "write wip",
      modelId: "test/e2b-mid",
      validationMode: "minimal",
    });
    const runId = await waitFor(() => /^(run_\S+)$/m.exec(a.output())?.[1], {
      timeoutMs: LOADED.hookMs,
      what: "the child to start its run",
    });
    // The model holds the turn's second request: WIP.md is written, the turn is still running.
    await waitFor(() => fx.model.requests.filter((r) => r.model === "test/e2b-mid" && !r.side).length >= 2, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the turn to reach its hanging model request",
    });
    await a.kill();

    const b = await open();
    try {
      const back = await b.engine.getRun(OWNER, runId, { events: true });
      expect(back.status).toBe("idle");
      expect(back.sessionActive).toBe(true);
      expect(back.error).toMatchObject({ code: "server_restart" });
      expect(back.changedPaths).toEqual(["WIP.md"]);
      const events = JSON.stringify(back.events);
      expect(events).toContain("reattached to this run's sandbox and agent session");
      expect(events).toContain('"kind":"error","code":"server_restart"');

      await b.engine.sendMessage(OWNER, runId, { prompt: "write more" });
      const after = await b.engine.waitForTurn(OWNER, runId);
      expect(after.status).toBe("idle");
      expect(after.error).toBeNull();
      expect(after.changedPaths).toEqual(["MORE.md", "WIP.md"]);
      expect(after.summary).toBe("Wrote MORE.");
      await b.engine.endSession(OWNER, runId);
      expect(cloud.alive().size).toBe(0);
    } finally {
      await b.close();
    }
  });

  it("hibernation pauses the VM with its OpenCode in memory; a follow-up resumes the same server, also after a restart", async () => {
    const { cloud, open } = await e2bSetup();
    const a = await open();
    const run = await a.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "write first",
      modelId: "test/e2b-nap",
      validationMode: "minimal",
    });
    expect((await a.engine.waitForTurn(OWNER, run.id)).status).toBe("idle");
    const [vm] = [...cloud.alive().keys()];
    const [server] = cloud.processes(vm!);
    let seen = fx.model.requests.length;
    try {
      expect(await a.engine.hibernate(OWNER, run.id)).toMatchObject({ status: "idle", hibernated: true });
      expect(cloud.paused(vm!)).toBe(true);
      expect(cloud.processes(vm!)).toEqual([server]); // kept in the VM's memory, stopped

      await a.engine.sendMessage(OWNER, run.id, { prompt: "write second" });
      const second = await a.engine.waitForTurn(OWNER, run.id);
      expect(second).toMatchObject({ status: "idle", hibernated: false, changedPaths: ["FIRST.md", "SECOND.md"] });
      expect(cloud.paused(vm!)).toBe(false);
      expect(cloud.processes(vm!)).toEqual([server]); // the same OpenCode server, resumed
      expect(JSON.stringify(fx.model.requests.slice(seen).find((r) => !r.side)!.body.messages)).toContain(
        "write first",
      );
      await a.engine.hibernate(OWNER, run.id);
    } finally {
      await a.close();
    }
    expect(cloud.paused(vm!)).toBe(true);

    const b = await open();
    try {
      // Recovery keeps it paused: nothing is resumed (or billed) until a message needs it.
      expect(await b.engine.getRun(OWNER, run.id)).toMatchObject({ status: "idle", hibernated: true });
      expect(cloud.paused(vm!)).toBe(true);
      seen = fx.model.requests.length;
      await b.engine.sendMessage(OWNER, run.id, { prompt: "write third" });
      const third = await b.engine.waitForTurn(OWNER, run.id);
      expect(third).toMatchObject({ status: "idle", changedPaths: ["FIRST.md", "SECOND.md", "THIRD.md"] });
      const history = JSON.stringify(fx.model.requests.slice(seen).find((r) => !r.side)!.body.messages);
      expect(history).toContain("write second");
      expect(cloud.processes(vm!)).toEqual([server]);

      await b.engine.hibernate(OWNER, run.id);
      expect((await b.engine.endSession(OWNER, run.id)).status).toBe("completed");
      expect(cloud.alive().size).toBe(0);
      await waitFor(() => cloud.processes(vm!).length === 0, { what: "the paused VM's OpenCode to be killed" });
    } finally {
      await b.close();
    }
  });
});
