/**
 * The e2b provider against an SDK stand-in. E2B's API and its envd (Connect RPC streams)
 * cannot be pointed at a simple local server, so the stand-in is injected through the
 * provider's `sdk` option: it records every SDK call, and runs commands for real with bash
 * on this machine, with `/home/user` mapped to a temp dir, so clone, checkout and exec are
 * the real thing.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import { createSandboxProvider } from "../../../src/engine/sandbox/providers.ts";
import {
  createE2bProvider,
  shellQuote,
  type E2bCommandHandle,
  type E2bSandboxHandle,
  type E2bSdk,
} from "../../../src/engine/sandbox/e2b.ts";
import { git, makeRepo, tempDir, waitFor } from "../../helpers.ts";

interface Call {
  sandboxId?: string;
  op: string;
  args: unknown;
}

function standIn() {
  const calls: Call[] = [];
  const alive = new Map<string, { metadata: Record<string, string>; home: string }>();
  let seq = 0;
  const run = (home: string, cmd: string, opts: { cwd?: string; envs?: Record<string, string> }) => {
    const map = (s: string) => s.split("/home/user").join(home);
    return spawn("bash", ["-c", map(cmd)], {
      cwd: map(opts.cwd ?? "/home/user"),
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, ...opts.envs },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
  };
  const sdk: E2bSdk = {
    async create(template, opts) {
      const sandboxId = `sbx${++seq}`;
      const home = tempDir("e2b-home");
      alive.set(sandboxId, { metadata: opts.metadata, home });
      calls.push({ op: "create", args: { template, ...opts, apiKey: "[key]" } });
      const handle: E2bSandboxHandle = {
        sandboxId,
        commands: {
          async run(cmd, o) {
            calls.push({ sandboxId, op: "run", args: { cmd, ...o } });
            const child = run(home, cmd, o);
            let stdout = "";
            let stderr = "";
            child.stdout!.setEncoding("utf8").on("data", (d: string) => (o.onStdout ? o.onStdout(d) : (stdout += d)));
            child.stderr!.setEncoding("utf8").on("data", (d: string) => (o.onStderr ? o.onStderr(d) : (stderr += d)));
            const done = new Promise<number>((r) => child.on("close", (code) => r(code ?? 137)));
            if (o.background) {
              const h: E2bCommandHandle = {
                pid: child.pid!,
                wait: async () => ({ exitCode: await done }),
                kill: async () => {
                  process.kill(-child.pid!, "SIGKILL");
                  return true;
                },
              };
              return h;
            }
            const exitCode = await done;
            // Like the SDK: a non-zero exit throws CommandExitError carrying the result.
            if (exitCode !== 0) throw Object.assign(new Error(`exit ${exitCode}`), { exitCode, stdout, stderr });
            return { exitCode, stdout, stderr };
          },
        },
        getHost: (port) => `${port}-${sandboxId}.e2b.app`,
        async setTimeout(ms) {
          calls.push({ sandboxId, op: "setTimeout", args: ms });
        },
        async kill() {
          calls.push({ sandboxId, op: "kill", args: null });
          alive.delete(sandboxId);
        },
      };
      return handle;
    },
    async list(opts) {
      calls.push({ op: "list", args: opts.metadata });
      return [...alive.entries()]
        .filter(([, s]) => Object.entries(opts.metadata).every(([k, v]) => s.metadata[k] === v))
        .map(([sandboxId, s]) => ({ sandboxId, metadata: s.metadata }));
    },
    async kill(id) {
      calls.push({ sandboxId: id, op: "kill", args: null });
      alive.delete(id);
    },
  };
  return { sdk, calls, alive };
}

function setup() {
  const repo = makeRepo(
    tempDir("remote"),
    "acme/cloud",
    { "README.md": "# cloud\n" },
    { branches: { dev: { "DEV.md": "dev\n" } } },
  );
  const s = standIn();
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
    expect(alive.has("sbx1")).toBe(false);
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
    expect(alive.size).toBe(0);
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
    const left = [...alive.values()].map((s) => s.metadata.patchbayRunId ?? s.metadata.other);
    expect(left.sort()).toEqual(["app", "run_kept", "run_live"]);
    await mine.kill();
  });

  it("refuses to start without E2B_API_KEY or PATCHBAY_PUBLIC_GATEWAY_URL, with one line naming it", async () => {
    const base = { PATCHBAY_DATA_DIR: tempDir("data"), PATCHBAY_SANDBOX: "e2b" };
    await expect(createSandboxProvider(loadConfig(base), silentLogger)).rejects.toThrow(
      /^PATCHBAY_SANDBOX=e2b needs E2B_API_KEY$/,
    );
    const err = await createSandboxProvider(loadConfig({ ...base, E2B_API_KEY: "k" }), silentLogger).catch(
      (e: Error) => e,
    );
    expect((err as Error).message).toMatch(/^PATCHBAY_SANDBOX=e2b needs PATCHBAY_PUBLIC_GATEWAY_URL: [^\n]+$/);
    expect(fs.existsSync(path.join(base.PATCHBAY_DATA_DIR, "sandboxes"))).toBe(false);
  });
});
