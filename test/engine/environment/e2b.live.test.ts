/**
 * Opt-in: the setup cache on E2B's real cloud. Skipped unless E2B_API_KEY is set. Two real
 * sandboxes from PATCHBAY_E2B_TEMPLATE (default `opencode`) on a public repository: a layer
 * made in the first is an E2B snapshot, the second VM starts in it, and the snapshot is
 * deleted at the end.
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
  it("keeps a layer as a snapshot of one real sandbox and starts another in it", { timeout: 300_000 }, async () => {
    const provider = createE2bProvider({
      apiKey: env.E2B_API_KEY!,
      template: env.PATCHBAY_E2B_TEMPLATE ?? "opencode",
      publicGatewayUrl: "https://unused.invalid",
      sessionTtlMs: 60_000,
      turnTimeoutMs: 60_000,
    });
    const cache = createEnvironmentCache({
      dataDir: tempDir("data"),
      maxBytes: 1e9,
      dropSnapshot: (id) => provider.dropSnapshot!(id),
      log: silentLogger,
    });
    const sandboxes: Sandbox[] = [];
    const make = async (fromSnapshot?: string) => {
      const s = await provider.create({
        runId: `run_live_cache_${Date.now().toString(36)}${sandboxes.length}`,
        ownerId: "live-test",
        repository: { fullName: repository, cloneUrl: `https://github.com/${repository}.git` },
        ...(fromSnapshot ? { fromSnapshot } : {}),
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
      expect(await cache.save(key, repository, a, ["deps"])).toMatchObject({ key, storage: "snapshot" });
      const snapshot = await cache.baseFor(repository);
      expect(snapshot).toBeDefined();
      const b = await make(snapshot);
      expect(b.snapshots?.from).toBe(snapshot);
      expect(await cache.key({ repository, setup, commit: b.baseSha, sandbox: b })).toBe(key);
      expect(await cache.restore(key, b)).toBe(true);
      expect((await b.exec(["cat", "deps/m"])).stdout).toBe(marker);
      expect(await cache.drop(key)).toBe(true);
    } finally {
      await Promise.all(sandboxes.map((s) => s.kill()));
    }
  });
});
