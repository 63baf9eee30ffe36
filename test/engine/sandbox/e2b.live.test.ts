/**
 * Opt-in: the e2b provider against E2B's real cloud. Skipped unless E2B_API_KEY is set.
 *   - with E2B_API_KEY: a real sandbox is created from PATCHBAY_E2B_TEMPLATE (default
 *     `opencode`), a public repository is cloned inside, commands run, kill ends it;
 *   - with PATCHBAY_PUBLIC_GATEWAY_URL, PATCHBAY_GATEWAY_PORT and OPENROUTER_API_KEY too: a
 *     whole run through the engine on a real sandbox and a real model, a restart of Patchbay
 *     that reattaches the idle run (Sandbox.connect, commands.connect), and a follow-up on
 *     the same session (the public URL must route to 127.0.0.1:PATCHBAY_GATEWAY_PORT, e.g.
 *     through a tunnel).
 *   - hibernation: a real sandbox paused (memory and files kept) and resumed by connect; with
 *     the gateway variables, a run's session hibernated, kept across a restart and woken.
 */
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { createLogger, openPatchbay } from "../../../src/engine/index.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import type { KeptSandbox } from "../../../src/engine/sandbox/sandbox.ts";
import { tempDir } from "../../helpers.ts";

const env = process.env;
const repository = env.PATCHBAY_LIVE_REPOSITORY ?? "octocat/Hello-World";
const withGateway = !!env.PATCHBAY_PUBLIC_GATEWAY_URL && !!env.PATCHBAY_GATEWAY_PORT && !!env.OPENROUTER_API_KEY;

const liveProvider = () =>
  createE2bProvider({
    apiKey: env.E2B_API_KEY!,
    template: env.PATCHBAY_E2B_TEMPLATE ?? "opencode",
    publicGatewayUrl: "https://unused.invalid",
    sessionTtlMs: 60_000,
    turnTimeoutMs: 60_000,
  });

/** A real sandbox of a live run, with the repository checked out. */
const liveSandbox = (provider: ReturnType<typeof liveProvider>, runId = `run_live_${Date.now().toString(36)}`) =>
  provider.create({
    runId,
    ownerId: "live-test",
    repository: { fullName: repository, cloneUrl: `https://github.com/${repository}.git` },
  });

/** Patchbay on E2B's cloud and a real model, through the gateway variables. */
const liveConfig = (extra: Record<string, string> = {}) =>
  loadConfig({
    PATCHBAY_DATA_DIR: tempDir("live"),
    PATCHBAY_SANDBOX: "e2b",
    E2B_API_KEY: env.E2B_API_KEY,
    PATCHBAY_PUBLIC_GATEWAY_URL: env.PATCHBAY_PUBLIC_GATEWAY_URL,
    PATCHBAY_GATEWAY_PORT: env.PATCHBAY_GATEWAY_PORT,
    OPENROUTER_API_KEY: env.OPENROUTER_API_KEY,
    PATCHBAY_E2B_TEMPLATE: env.PATCHBAY_E2B_TEMPLATE ?? "opencode",
    ...extra,
  });

describe.skipIf(!env.E2B_API_KEY)("e2b provider, live", () => {
  it("creates a real sandbox, clones inside, runs commands and kills it", { timeout: 180_000 }, async () => {
    const s = await liveSandbox(liveProvider());
    try {
      expect(s.baseSha).toMatch(/^[0-9a-f]{40}$/);
      expect((await s.exec(["git", "rev-parse", "HEAD"])).stdout.trim()).toBe(s.baseSha);
      expect((await s.exec(["sh", "-c", "exit 3"])).exitCode).toBe(3);
      expect((await s.exec(["opencode", "--version"])).exitCode).toBe(0);
    } finally {
      await s.kill();
    }
  });

  it.skipIf(!withGateway)(
    "runs a whole turn on a real sandbox with a real model, reattaches it after a restart, and continues it",
    { timeout: 600_000 },
    async () => {
      const config = liveConfig();
      const first = await openPatchbay(config, { log: createLogger({ level: "info" }) });
      let runId: string;
      try {
        const run = await first.engine.startRun("live", { repository, prompt: "Add a file HELLO.md saying hello." });
        runId = run.id;
        const done = await first.engine.waitForTurn("live", run.id);
        expect(done.status).toBe("idle");
        expect(done.changedPaths).toContain("HELLO.md");
      } finally {
        await first.close(); // leaves the idle run's VM running
      }
      const second = await openPatchbay(config, { log: createLogger({ level: "info" }) });
      try {
        expect((await second.engine.getRun("live", runId)).status).toBe("idle");
        await second.engine.sendMessage("live", runId, { prompt: "Now also add BYE.md saying bye." });
        const again = await second.engine.waitForTurn("live", runId);
        expect(again.status).toBe("idle");
        expect(again.changedPaths).toEqual(expect.arrayContaining(["HELLO.md", "BYE.md"]));
        await second.engine.endSession("live", runId);
      } finally {
        await second.close();
      }
    },
  );

  it(
    "pauses a real sandbox (hibernate) and resumes it (wake) with its memory and files",
    { timeout: 300_000 },
    async () => {
      const provider = liveProvider();
      const runId = `run_live_nap_${Date.now().toString(36)}`;
      const s = await liveSandbox(provider, runId);
      let kept: KeptSandbox;
      try {
        await s.exec(["sh", "-c", "echo kept > KEPT.txt"]);
        s.spawn(["sleep", "3600"]);
        expect((await s.exec(["sh", "-c", "sleep 1; pgrep -x sleep"])).exitCode).toBe(0);
        kept = await s.hibernate!();
      } catch (e) {
        await s.kill();
        throw e;
      }
      try {
        const woken = await provider.wake!(runId, kept);
        expect((await woken.exec(["cat", "KEPT.txt"])).stdout.trim()).toBe("kept");
        expect((await woken.exec(["pgrep", "-x", "sleep"])).exitCode).toBe(0); // memory kept: still running
        kept = await woken.hibernate!();
      } finally {
        await provider.discard!(runId, kept);
      }
    },
  );

  it.skipIf(!withGateway)(
    "hibernates a run's session, keeps it paused across a restart, and wakes it for a follow-up",
    { timeout: 900_000 },
    async () => {
      const config = liveConfig({ PATCHBAY_HIBERNATE_AFTER_MS: "0" });
      const first = await openPatchbay(config, { log: createLogger({ level: "info" }) });
      let runId: string;
      try {
        const run = await first.engine.startRun("live", { repository, prompt: "Add a file HELLO.md saying hello." });
        runId = run.id;
        expect((await first.engine.waitForTurn("live", run.id)).status).toBe("idle");
        expect((await first.engine.hibernate("live", run.id)).hibernated).toBe(true);
      } finally {
        await first.close();
      }
      const second = await openPatchbay(config, { log: createLogger({ level: "info" }) });
      try {
        expect(await second.engine.getRun("live", runId)).toMatchObject({ status: "idle", hibernated: true });
        await second.engine.sendMessage("live", runId, { prompt: "Now also add BYE.md saying bye." });
        const again = await second.engine.waitForTurn("live", runId);
        expect(again).toMatchObject({ status: "idle", hibernated: false });
        expect(again.changedPaths).toEqual(expect.arrayContaining(["HELLO.md", "BYE.md"]));
        await second.engine.endSession("live", runId);
      } finally {
        await second.close();
      }
    },
  );
});
