/**
 * Secrets and the network policy on e2b, through the E2B stand-in (test/fixtures/e2b-cloud.ts;
 * OpenCode, the gateway, git and the store are real): a run's secret reaches the agent's
 * shell in the VM and is masked in what Patchbay records; `model-only` closes the VM's egress
 * with E2B's own rules (the gateway's host let out, everything else refused) before the
 * agent's first prompt, and the turn completes through the gateway.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { createLogger, openPatchbay, type Patchbay } from "../../../src/engine/index.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import { freeLoopbackPort } from "../../../src/engine/sandbox/process.ts";
import { e2bCloud } from "../../fixtures/e2b-cloud.ts";
import { tempDir } from "../../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../../support/harness.ts";

const OWNER = "owner-e2b-env";
const CANARY = `e2b-canary-${randomBytes(12).toString("hex")}`;
let fx: Fixtures;
let pb: Patchbay;
let cloud: ReturnType<typeof e2bCloud>;
const lines: string[] = [];

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        "test/e2b-env": [
          [
            { toolCalls: [{ name: "bash", args: { command: 'echo "token=$DEPLOY_TOKEN"', description: "print" } }] },
            { text: "Printed." },
          ],
        ],
      },
    },
  });
  const gatewayPort = await freeLoopbackPort();
  const config = loadConfig({
    ...fx.env,
    PATH: process.env.PATH,
    PATCHBAY_DATA_DIR: tempDir("data"),
    PATCHBAY_SANDBOX: "e2b",
    E2B_API_KEY: "e2b_test_key",
    PATCHBAY_GATEWAY_PORT: String(gatewayPort),
    PATCHBAY_PUBLIC_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
    PATCHBAY_WARM_POOL_SIZE: "0",
  });
  cloud = e2bCloud(tempDir("e2b-cloud"), { hosts: "loopback" });
  pb = await openPatchbay(config, {
    log: createLogger({ level: "debug", write: (l) => lines.push(l) }),
    sandboxes: createE2bProvider({
      apiKey: "e2b_test_key",
      publicGatewayUrl: config.publicGatewayUrl!,
      sessionTtlMs: config.sessionTtlMs,
      turnTimeoutMs: config.turnTimeoutMs,
      sdk: cloud.sdk,
    }),
  });
}, LOADED.hookMs);

afterAll(async () => {
  await pb?.close();
  for (const id of cloud?.alive().keys() ?? []) await cloud.sdk.kill(id, { apiKey: "k" });
  await fx?.close();
}, LOADED.hookMs);

describe("environment on e2b (SDK stand-in)", { timeout: LOADED.testMs }, () => {
  it("a secret reaches the agent's shell in the VM, masked; model-only closes the VM's egress before the first prompt", async () => {
    const started = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "print the token",
      modelId: "test/e2b-env",
      validationMode: "minimal",
      environment: { secrets: { DEPLOY_TOKEN: CANARY }, network: "model-only" },
    });
    const run = await pb.engine.waitForTurn(OWNER, started.id);
    expect(run.status).toBe("idle");
    expect(run.summary).toBe("Printed.");
    const events = await pb.engine.events(OWNER, started.id, 0);
    const text = JSON.stringify(events);
    expect(text).toContain("token=[secret:DEPLOY_TOKEN]");
    expect(text).not.toContain(CANARY);
    expect(lines.join("\n")).not.toContain(CANARY);

    const vm = cloud.calls.find((c) => c.op === "create")!;
    expect(vm).toBeDefined();
    const network = cloud.calls.filter((c) => c.op === "updateNetwork");
    expect(network).toEqual([expect.objectContaining({ args: { allowOut: ["127.0.0.1"], denyOut: ["0.0.0.0/0"] } })]);
    // The secret went to the agent's server as its environment, never into OpenCode's config.
    const serve = cloud.calls.find((c) => c.op === "run" && String((c.args as { cmd: string }).cmd).includes("serve"))!
      .args as { envs: Record<string, string> };
    expect(serve.envs.DEPLOY_TOKEN).toBe(CANARY);
    expect(serve.envs.OPENCODE_CONFIG_CONTENT).not.toContain(CANARY);
    await pb.engine.endSession(OWNER, started.id);
    expect(await pb.store.getSecret(started.id, "env:DEPLOY_TOKEN")).toBeUndefined();
  });

  it("a run without model-only leaves the VM's network alone", async () => {
    const before = cloud.calls.filter((c) => c.op === "updateNetwork").length;
    const started = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "print the token",
      modelId: "test/e2b-env",
      validationMode: "minimal",
    });
    const run = await pb.engine.waitForTurn(OWNER, started.id);
    expect(run.status).toBe("idle");
    expect(cloud.calls.filter((c) => c.op === "updateNetwork").length).toBe(before);
    await pb.engine.endSession(OWNER, started.id);
  });
});
