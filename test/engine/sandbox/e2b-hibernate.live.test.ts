/**
 * Opt-in: hibernation on E2B's real cloud. Skipped unless E2B_API_KEY is set.
 *   - with E2B_API_KEY: a real sandbox is paused (`hibernate`: memory and files kept) and
 *     resumed (`wake`: Sandbox.connect), a background process still running where it was and
 *     a file still there; `discard` kills the paused sandbox;
 *   - with PATCHBAY_PUBLIC_GATEWAY_URL, PATCHBAY_GATEWAY_PORT and OPENROUTER_API_KEY too: a
 *     run's idle session hibernated, Patchbay restarted, and a follow-up that wakes the VM and
 *     continues the same OpenCode session (as in e2b.live.test.ts, the public URL must route
 *     to 127.0.0.1:PATCHBAY_GATEWAY_PORT).
 */
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { createLogger, openPatchbay } from "../../../src/engine/index.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import type { KeptSandbox } from "../../../src/engine/sandbox/sandbox.ts";
import { tempDir } from "../../helpers.ts";

const env = process.env;
const repository = env.PATCHBAY_LIVE_REPOSITORY ?? "octocat/Hello-World";

describe.skipIf(!env.E2B_API_KEY)("e2b hibernation, live", () => {
  it("pauses a real sandbox and resumes it with its memory and files", { timeout: 300_000 }, async () => {
    const provider = createE2bProvider({
      apiKey: env.E2B_API_KEY!,
      template: env.PATCHBAY_E2B_TEMPLATE ?? "opencode",
      publicGatewayUrl: "https://unused.invalid",
      sessionTtlMs: 60_000,
      turnTimeoutMs: 60_000,
    });
    const runId = `run_live_nap_${Date.now().toString(36)}`;
    const s = await provider.create({
      runId,
      ownerId: "live-test",
      repository: { fullName: repository, cloneUrl: `https://github.com/${repository}.git` },
    });
    let kept: KeptSandbox;
    try {
      await s.exec(["sh", "-c", "echo kept > KEPT.txt"]);
      const proc = s.spawn(["sleep", "3600"]);
      await s.exec(["sh", "-c", "pgrep -x sleep"]); // started
      expect(proc.pid).toBeGreaterThan(0);
      kept = await s.hibernate!();
    } catch (e) {
      await s.kill();
      throw e;
    }
    const woken = await provider.wake!(runId, kept);
    try {
      expect((await woken.exec(["cat", "KEPT.txt"])).stdout.trim()).toBe("kept");
      expect((await woken.exec(["sh", "-c", "pgrep -x sleep"])).exitCode).toBe(0); // memory kept: still running
      kept = await woken.hibernate!();
    } finally {
      await provider.discard!(runId, kept);
    }
  });

  it.skipIf(!env.PATCHBAY_PUBLIC_GATEWAY_URL || !env.PATCHBAY_GATEWAY_PORT || !env.OPENROUTER_API_KEY)(
    "hibernates a run's session, keeps it across a restart, and wakes it for a follow-up",
    { timeout: 900_000 },
    async () => {
      const config = loadConfig({
        PATCHBAY_DATA_DIR: tempDir("live-nap"),
        PATCHBAY_SANDBOX: "e2b",
        E2B_API_KEY: env.E2B_API_KEY,
        PATCHBAY_PUBLIC_GATEWAY_URL: env.PATCHBAY_PUBLIC_GATEWAY_URL,
        PATCHBAY_GATEWAY_PORT: env.PATCHBAY_GATEWAY_PORT,
        OPENROUTER_API_KEY: env.OPENROUTER_API_KEY,
        PATCHBAY_E2B_TEMPLATE: env.PATCHBAY_E2B_TEMPLATE ?? "opencode",
        PATCHBAY_HIBERNATE_AFTER_MS: "0",
      });
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
        expect(again.status).toBe("idle");
        expect(again.changedPaths).toEqual(expect.arrayContaining(["HELLO.md", "BYE.md"]));
        await second.engine.endSession("live", runId);
      } finally {
        await second.close();
      }
    },
  );
});
