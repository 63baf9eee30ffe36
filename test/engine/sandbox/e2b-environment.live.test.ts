/**
 * Opt-in: `model-only` on E2B's real cloud. Skipped unless E2B_API_KEY is set. A real VM made
 * for a model-only run reaches the internet until `restrictNetwork` (setup has network), then
 * only the gateway's host (here `PATCHBAY_LIVE_GATEWAY_HOST`, default example.com, standing in
 * for PATCHBAY_PUBLIC_GATEWAY_URL's host) through E2B's egress rules.
 */
import { describe, expect, it } from "vitest";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";

const env = process.env;
const repository = env.PATCHBAY_LIVE_REPOSITORY ?? "octocat/Hello-World";
const gatewayHost = env.PATCHBAY_LIVE_GATEWAY_HOST ?? "example.com";

/** `curl` exit code for an HTTPS URL from inside the VM (0: reached). */
const reach = (url: string) => ["sh", "-c", `curl -sS -o /dev/null --max-time 15 ${url}; echo "exit=$?"`];

describe.skipIf(!env.E2B_API_KEY)("e2b network policy, live", () => {
  it("model-only: open for setup, then only the gateway's host", { timeout: 300_000 }, async () => {
    const provider = createE2bProvider({
      apiKey: env.E2B_API_KEY!,
      template: env.PATCHBAY_E2B_TEMPLATE ?? "opencode",
      publicGatewayUrl: `https://${gatewayHost}`,
      sessionTtlMs: 60_000,
      turnTimeoutMs: 60_000,
    });
    const s = await provider.create({
      runId: `run_live_net_${Date.now().toString(36)}`,
      ownerId: "live-test",
      repository: { fullName: repository, cloneUrl: `https://github.com/${repository}.git` },
      network: { policy: "model-only", gatewayPort: 0 },
    });
    try {
      expect((await s.exec(reach("https://api.github.com"))).stdout).toContain("exit=0");
      await s.restrictNetwork!();
      expect((await s.exec(reach("https://api.github.com"))).stdout).not.toContain("exit=0");
      expect((await s.exec(reach(`https://${gatewayHost}`))).stdout).toContain("exit=0");
      // A run's secret reaches a command as its environment.
      const secret = await s.exec(["sh", "-c", 'printf %s "$LIVE_SECRET"'], { env: { LIVE_SECRET: "s3cr3t-live" } });
      expect(secret.stdout).toBe("s3cr3t-live");
    } finally {
      await s.kill();
    }
  });
});
