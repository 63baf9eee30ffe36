/**
 * Opt-in: the setup cache on E2B's real cloud. Skipped unless E2B_API_KEY is set. Two real
 * sandboxes from PATCHBAY_E2B_TEMPLATE (default `opencode`) on a public repository: a layer
 * made in the first leaves it through the files API and is unpacked in the second.
 */
import { describe, expect, it } from "vitest";
import { createEnvironmentCache } from "../../../src/engine/environment/cache.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import type { Sandbox } from "../../../src/engine/sandbox/sandbox.ts";
import { tempDir } from "../../helpers.ts";

const env = process.env;
const repository = env.PATCHBAY_LIVE_REPOSITORY ?? "octocat/Hello-World";

describe.skipIf(!env.E2B_API_KEY)("setup cache on e2b, live", () => {
  it("saves a layer from one real sandbox and restores it into another", { timeout: 300_000 }, async () => {
    const provider = createE2bProvider({
      apiKey: env.E2B_API_KEY!,
      template: env.PATCHBAY_E2B_TEMPLATE ?? "opencode",
      publicGatewayUrl: "https://unused.invalid",
      sessionTtlMs: 60_000,
      turnTimeoutMs: 60_000,
    });
    const cache = createEnvironmentCache({ dataDir: tempDir("data"), maxBytes: 1e9, log: silentLogger });
    const sandboxes: Sandbox[] = [];
    const make = async () => {
      const s = await provider.create({
        runId: `run_live_cache_${Date.now().toString(36)}${sandboxes.length}`,
        ownerId: "live-test",
        repository: { fullName: repository, cloneUrl: `https://github.com/${repository}.git` },
      });
      sandboxes.push(s);
      return s;
    };
    try {
      const a = await make();
      const setup = { commands: ["true"], cache: { key: ["README"], paths: ["deps"] } };
      const key = await cache.key({ repository, setup, commit: a.baseSha, sandbox: a });
      expect(
        (await a.exec(["sh", "-c", "mkdir -p deps && head -c 16 /dev/urandom | od -An -tx1 > deps/m"])).exitCode,
      ).toBe(0);
      const marker = (await a.exec(["cat", "deps/m"])).stdout;
      expect(await cache.save(key, a, ["deps"])).toMatchObject({ key });
      const b = await make();
      expect(await cache.key({ repository, setup, commit: b.baseSha, sandbox: b })).toBe(key);
      expect(await cache.restore(key, b)).toBe(true);
      expect((await b.exec(["cat", "deps/m"])).stdout).toBe(marker);
    } finally {
      await Promise.all(sandboxes.map((s) => s.kill()));
    }
  });
});
