/**
 * The e2b provider against an SDK stand-in. E2B's API and its envd (Connect RPC streams)
 * cannot be pointed at a simple local server, so the stand-in is injected through the
 * provider's `sdk` option (test/fixtures/e2b-cloud.ts): it records every SDK call, and runs
 * commands for real with bash on this machine, with its own `/home/user` (bubblewrap), so
 * clone, checkout and exec are the real thing.
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import { createSandboxProvider } from "../../../src/engine/sandbox/providers.ts";
import { shellQuote } from "../../../src/engine/sandbox/e2b-sandbox.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import { e2bCloud } from "../../fixtures/e2b-cloud.ts";
import { git, makeRepo, tempDir, waitFor } from "../../helpers.ts";

function setup() {
  const repo = makeRepo(
    tempDir("remote"),
    "acme/cloud",
    { "README.md": "# cloud\n" },
    { branches: { dev: { "DEV.md": "dev\n" } } },
  );
  const s = e2bCloud(tempDir("e2b-cloud"));
  const provider = createE2bProvider({
    apiKey: "e2b_test_key",
    template: "patchbay-opencode",
    publicGatewayUrl: "https://patchbay.example.com/gateway",
    sessionTtlMs: 60_000,
    turnTimeoutMs: 120_000,
    sdk: s.sdk,
    log: silentLogger,
  });
  const cloneUrl = `${repo.baseUrl}/acme/cloud.git`;
  return { ...s, repo, provider, cloneUrl };
}

describe("e2b provider (SDK stand-in)", () => {
  it("creates the sandbox with the run's metadata and clones the ref inside, the credential only in that command's environment", async () => {
    const { provider, calls, repo, cloneUrl } = setup();
    const auth = { authorizationHeader: "Basic c2VjcmV0LXRva2Vu" };
    const s = await provider.create({
      runId: "run_e1",
      ownerId: "owner-9",
      repository: { fullName: "acme/cloud", cloneUrl },
      ref: "dev",
      credential: auth,
    });
    try {
      expect(calls[0]).toMatchObject({
        op: "create",
        args: {
          template: "patchbay-opencode",
          metadata: { patchbay: "1", patchbayRunId: "run_e1", patchbayOwnerId: "owner-9" },
          timeoutMs: 120_000 + 5 * 60_000,
        },
      });
      expect(s).toMatchObject({ provider: "e2b", workdir: "/home/user/repo", baseRef: "dev", listenHost: "0.0.0.0" });
      expect(s.baseSha).toBe(git(repo.bare, "rev-parse", "refs/heads/dev"));
      expect((await s.exec(["cat", "DEV.md"])).stdout).toBe("dev\n");
      const runs = calls.filter((c) => c.op === "run") as { args: { cmd: string; envs: Record<string, string> } }[];
      const withCredential = runs.filter((r) => JSON.stringify(r.args).includes("c2VjcmV0LXRva2Vu"));
      expect(withCredential).toHaveLength(1);
      expect(withCredential[0]!.args.cmd).toContain("'clone'");
      expect(withCredential[0]!.args.cmd).not.toContain("c2VjcmV0LXRva2Vu");
      // The remote URL left in the checkout carries no credential.
      expect((await s.exec(["git", "remote", "get-url", "origin"])).stdout.trim()).toBe(cloneUrl);
      expect(await s.endpoint(4096)).toBe("https://4096-sbx1.e2b.app");
      expect(s.engineUrl(1234)).toBe("https://patchbay.example.com/gateway");
    } finally {
      await s.kill();
    }
  });

  it("exec quotes arguments, reports non-zero exits as results, and extends the VM's life", async () => {
    const { provider, calls, cloneUrl } = setup();
    const s = await provider.create({
      runId: "run_e2",
      ownerId: "o",
      repository: { fullName: "acme/cloud", cloneUrl },
    });
    try {
      const hostile = `$(touch /tmp/pwned-e2b); 'quoted' "double" \`tick\``;
      expect((await s.exec(["printf", "%s", hostile])).stdout).toBe(hostile);
      expect(await s.exec(["sh", "-c", "echo no >&2; exit 4"])).toEqual({ exitCode: 4, stdout: "", stderr: "no\n" });
      expect((await s.exec(["cat"], { stdin: "piped 'in'" })).stdout).toBe("piped 'in'");
      expect(calls.filter((c) => c.op === "setTimeout").every((c) => c.args === 120_000 + 5 * 60_000)).toBe(true);
      expect(calls.filter((c) => c.op === "setTimeout").length).toBeGreaterThan(2);
      expect(shellQuote("a'b")).toBe(`'a'\\''b'`);
    } finally {
      await s.kill();
    }
  });

  it("runs background processes with timeoutMs 0 and kills them and the VM on kill", async () => {
    const { provider, calls, alive, cloneUrl } = setup();
    const s = await provider.create({
      runId: "run_e3",
      ownerId: "o",
      repository: { fullName: "acme/cloud", cloneUrl },
    });
    const proc = s.spawn(["sh", "-c", "echo ready; sleep 60"], { env: { OPENCODE_SERVER_PASSWORD: "pw" } });
    let out = "";
    proc.onOutput((c) => (out += c));
    await waitFor(() => out.includes("ready"), { what: "the background command's output" });
    const spawnCall = calls.find((c) => c.op === "run" && (c.args as { background?: boolean }).background);
    expect(spawnCall?.args).toMatchObject({ background: true, timeoutMs: 0, envs: { OPENCODE_SERVER_PASSWORD: "pw" } });
    await s.kill();
    expect(await proc.exited).toMatchObject({ signal: "SIGKILL" });
    expect(alive().has("sbx1")).toBe(false);
    await expect(s.exec(["true"])).rejects.toMatchObject({ code: "sandbox_failed" });
  });

  it("a failed clone kills the VM and says clone_failed; an unknown ref says invalid_ref", async () => {
    const { provider, alive, cloneUrl } = setup();
    await expect(
      provider.create({
        runId: "run_e4",
        ownerId: "o",
        repository: { fullName: "acme/gone", cloneUrl: "file:///nonexistent/acme/gone.git" },
      }),
    ).rejects.toMatchObject({ code: "clone_failed" });
    await expect(
      provider.create({ runId: "run_e5", ownerId: "o", repository: { fullName: "acme/cloud", cloneUrl }, ref: "nope" }),
    ).rejects.toMatchObject({ code: "invalid_ref" });
    expect(alive().size).toBe(0);
  });

  it("a new provider (a restarted Patchbay) connects to a live VM by id and takes its background process back", async () => {
    const root = tempDir("e2b-cloud");
    const repo = makeRepo(tempDir("remote"), "acme/cloud", { "README.md": "# cloud\n" });
    const providerOver = (cloud: ReturnType<typeof e2bCloud>) =>
      createE2bProvider({
        apiKey: "e2b_test_key",
        publicGatewayUrl: "https://patchbay.example.com/gateway",
        sessionTtlMs: 60_000,
        turnTimeoutMs: 120_000,
        sdk: cloud.sdk,
        log: silentLogger,
      });
    const first = providerOver(e2bCloud(root));
    const s = await first.create({
      runId: "run_r1",
      ownerId: "o",
      repository: { fullName: "acme/cloud", cloneUrl: `${repo.baseUrl}/acme/cloud.git` },
    });
    await s.exec(["sh", "-c", "echo work > WORK.md"]);
    const server = s.spawn(["sh", "-c", "echo up; sleep 60"]);
    let out = "";
    server.onOutput((c) => (out += c));
    await waitFor(() => out.includes("up") && server.pid !== undefined, { what: "the background command" });
    const resume = s.resumeInfo!();
    expect(resume).toEqual({ provider: "e2b", sandboxId: "sbx1", baseSha: s.baseSha, baseRef: "main" });

    // The first provider is gone without killing anything (its process died).
    const cloud = e2bCloud(root);
    const second = providerOver(cloud);
    const again = await second.connect!("run_r1", resume);
    expect(cloud.calls[0]).toMatchObject({
      op: "connect",
      sandboxId: "sbx1",
      args: { timeoutMs: 120_000 + 5 * 60_000 },
    });
    expect(again).toMatchObject({ id: "run_r1", baseSha: s.baseSha, baseRef: "main", workdir: "/home/user/repo" });
    expect((await again.exec(["cat", "WORK.md"])).stdout).toBe("work\n");
    const proc = await again.reconnect!(server.pid!);
    expect(proc.pid).toBe(server.pid);
    expect(
      cloud.calls.find((c) => c.op === "connect" && c.sandboxId === "sbx1" && (c.args as { pid?: number }).pid),
    ).toMatchObject({ args: { pid: server.pid, timeoutMs: 0 } });
    await expect(again.reconnect!(999_999)).rejects.toMatchObject({ code: "sandbox_failed" });
    // The reaper of the new process spares the VM its run still owns.
    await second.reap!(new Set());
    expect(cloud.alive().has("sbx1")).toBe(true);

    await again.kill();
    expect(await proc.exited).toMatchObject({ signal: "SIGKILL" });
    await waitFor(() => cloud.processes("sbx1").length === 0, { what: "the VM's processes to end" });
    expect(cloud.alive().has("sbx1")).toBe(false);
    await expect(second.connect!("run_r1", resume)).rejects.toMatchObject({ code: "sandbox_failed" });
  });

  it("a model-only run's VM connected by another replica holds its egress to that replica's gateway", async () => {
    const root = tempDir("e2b-cloud");
    const repo = makeRepo(tempDir("remote"), "acme/cloud", { "README.md": "# cloud\n" });
    const providerAt = (gateway: string, cloud: ReturnType<typeof e2bCloud>) =>
      createE2bProvider({
        apiKey: "e2b_test_key",
        publicGatewayUrl: gateway,
        sessionTtlMs: 60_000,
        turnTimeoutMs: 120_000,
        sdk: cloud.sdk,
        log: silentLogger,
      });
    const network = { policy: "model-only" as const, gatewayPort: 4000 };
    const made = await providerAt("https://a.patchbay.example.com/gateway", e2bCloud(root)).create({
      runId: "run_m1",
      ownerId: "o",
      repository: { fullName: "acme/cloud", cloneUrl: `${repo.baseUrl}/acme/cloud.git` },
      network,
    });
    await made.restrictNetwork!();

    const cloud = e2bCloud(root);
    const again = await providerAt("https://b.patchbay.example.com/gateway", cloud).connect!(
      "run_m1",
      made.resumeInfo!(),
      { network },
    );
    expect(cloud.calls.filter((c) => c.op === "updateNetwork")).toEqual([
      {
        sandboxId: "sbx1",
        op: "updateNetwork",
        args: { allowOut: ["b.patchbay.example.com"], denyOut: ["0.0.0.0/0"] },
      },
    ]);
    await again.kill();
  });

  it("reap kills the Patchbay sandboxes no live run owns, found by metadata", async () => {
    const { provider, sdk, alive, cloneUrl } = setup();
    // Left by a previous process (not created through this provider instance).
    await sdk.create("opencode", {
      apiKey: "k",
      metadata: { patchbay: "1", patchbayRunId: "run_orphan" },
      timeoutMs: 1,
    });
    await sdk.create("opencode", { apiKey: "k", metadata: { patchbay: "1", patchbayRunId: "run_kept" }, timeoutMs: 1 });
    await sdk.create("opencode", { apiKey: "k", metadata: { other: "app" }, timeoutMs: 1 });
    const mine = await provider.create({
      runId: "run_live",
      ownerId: "o",
      repository: { fullName: "acme/cloud", cloneUrl },
    });
    await provider.reap!(new Set(["run_kept"]));
    const left = [...alive().values()].map((s) => s.metadata.patchbayRunId ?? s.metadata.other);
    expect(left.sort()).toEqual(["app", "run_kept", "run_live"]);
    await mine.kill();
  });

  it("refuses to start without E2B_API_KEY, PATCHBAY_PUBLIC_GATEWAY_URL or a fixed PATCHBAY_GATEWAY_PORT, with one line naming it", async () => {
    const base = { PATCHBAY_DATA_DIR: tempDir("data"), PATCHBAY_SANDBOX: "e2b" };
    await expect(createSandboxProvider(loadConfig(base), silentLogger)).rejects.toThrow(
      /^PATCHBAY_SANDBOX=e2b needs E2B_API_KEY$/,
    );
    const err = await createSandboxProvider(loadConfig({ ...base, E2B_API_KEY: "k" }), silentLogger).catch(
      (e: Error) => e,
    );
    expect((err as Error).message).toMatch(/^PATCHBAY_SANDBOX=e2b needs PATCHBAY_PUBLIC_GATEWAY_URL: [^\n]+$/);
    // A random gateway port would move on every restart, away from the proxy and the VMs that outlive it.
    const noPort = await createSandboxProvider(
      loadConfig({ ...base, E2B_API_KEY: "k", PATCHBAY_PUBLIC_GATEWAY_URL: "https://pb.example.com/gw" }),
      silentLogger,
    ).catch((e: Error) => e);
    expect((noPort as Error).message).toMatch(/^PATCHBAY_SANDBOX=e2b needs PATCHBAY_GATEWAY_PORT: [^\n]+$/);
    expect(fs.existsSync(path.join(base.PATCHBAY_DATA_DIR, "sandboxes"))).toBe(false);
  });
});
