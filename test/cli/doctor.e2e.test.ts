/**
 * `patchbay doctor`: a passing set-up end to end (the CLI, its smoke run on the real OpenCode),
 * and each check failing with its fix: no git on PATH, a data dir another Patchbay holds, a
 * model endpoint answering 401, a GitHub token or App the GitHub stand-in refuses, an E2B key
 * the E2B stand-in refuses, an old Node.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig, type Config } from "../../src/config.ts";
import {
  checkBwrap,
  checkDataDir,
  checkE2b,
  checkGit,
  checkGitHub,
  checkModel,
  checkNode,
} from "../../src/cli/doctor-checks.ts";
import { generateKeyPairSync } from "node:crypto";
import { e2bCloud } from "../fixtures/e2b-cloud.ts";
import { startGitHubApiStub } from "../fixtures/github-api-stub.ts";
import { tempDir } from "../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { listen } from "../support/http.ts";
import { startServe } from "../support/serve.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const GOOD_TOKEN = "ghp_doctor_good_token";
let fx: Fixtures;

beforeAll(async () => {
  fx = await startFixtures({ github: { repositories: [{ id: 1, fullName: "acme/web" }], tokens: [GOOD_TOKEN] } });
}, LOADED.hookMs);

afterAll(async () => {
  await fx?.close();
}, LOADED.hookMs);

function doctor(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ["bin/patchbay.mjs", "doctor", ...args],
      {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: process.env.HOME ?? "/tmp",
          // Scratch files (the smoke run's OpenCode among them) under the suite's root.
          TMPDIR: tempDir("doctor-tmp"),
          PATCHBAY_DATA_DIR: tempDir("doctor-data"),
          OPENROUTER_API_KEY: "sk-doctor-test",
          PATCHBAY_OPENROUTER_BASE_URL: fx.model.baseUrl,
          PATCHBAY_GITHUB_API_URL: fx.github!.baseUrl,
          ...env,
        },
        timeout: LOADED.turnWaitMs,
      },
      (_err, stdout) => resolve({ code: child.exitCode, stdout }),
    );
  });
}

const config = (env: Record<string, string> = {}): Config =>
  loadConfig({ PATH: process.env.PATH, PATCHBAY_DATA_DIR: tempDir("doctor-cfg"), ...env });

describe("patchbay doctor", { timeout: LOADED.testMs }, () => {
  it("passes on a working set-up, smoke run included, and exits 0", async () => {
    const { code, stdout } = await doctor([], { GITHUB_TOKEN: GOOD_TOKEN });
    expect(stdout).toMatch(/^✓ Node +Node \d+/m);
    expect(stdout).toMatch(/^✓ git +git version/m);
    expect(stdout).toMatch(/^✓ opencode +opencode 1\.18\.\d+ starts/m);
    expect(stdout).toMatch(/^- bwrap +skipped: PATCHBAY_SANDBOX=local/m);
    expect(stdout).toMatch(/^✓ data dir +.* is writable and free/m);
    expect(stdout).toMatch(/^✓ model endpoint /m);
    expect(stdout).toMatch(/^✓ GitHub +GITHUB_TOKEN of stub-user \(scopes: repo, workflow\)/m);
    expect(stdout).toMatch(
      /^✓ smoke run +a turn ran \(local sandbox\) in [\d.]+ s and its patch adds PATCHBAY_DOCTOR\.txt/m,
    );
    expect(stdout).toContain("All checks passed.");
    expect(code).toBe(0);
  });

  it("exits 1 with the failed check and its fix (--json), a token the GitHub stand-in refuses", async () => {
    const { code, stdout } = await doctor(["--json", "--skip-smoke"], { GITHUB_TOKEN: "ghp_revoked" });
    expect(code).toBe(1);
    const report = JSON.parse(stdout) as { ok: boolean; checks: { name: string; status: string; fix?: string }[] };
    expect(report.ok).toBe(false);
    expect(report.checks.find((c) => c.name === "GitHub")).toMatchObject({
      status: "fail",
      detail: expect.stringContaining("HTTP 401"),
      fix: expect.stringContaining("GITHUB_TOKEN"),
    });
    expect(report.checks.filter((c) => c.status === "fail").map((c) => c.name)).toEqual(["GitHub"]);
    expect(stdout).not.toContain("ghp_revoked");
  });

  it("fails git on a PATH without it", async () => {
    const r = await checkGit(config({ PATH: tempDir("empty-path") }));
    expect(r).toMatchObject({ status: "fail", fix: expect.stringContaining("install git") });
  });

  it("fails the data dir while another Patchbay holds it", async () => {
    const dataDir = tempDir("held");
    const held = await startServe({ ...fx.env, PATCHBAY_DATA_DIR: dataDir, PATCHBAY_WARM_POOL_SIZE: "0" });
    try {
      const r = await checkDataDir(config({ PATCHBAY_DATA_DIR: dataDir }));
      expect(r.status).toBe("fail");
      expect(r.detail).toContain(`in use by another Patchbay process (pid ${held.proc.pid})`);
      expect(r.fix).toMatch(/stop the Patchbay process/);
    } finally {
      await held.stop();
    }
    expect((await checkDataDir(config({ PATCHBAY_DATA_DIR: dataDir }))).status).toBe("pass");
  });

  it("fails the model endpoint when it answers 401 to the configured key", async () => {
    const refusing = await listen((_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: "No auth credentials found", code: 401 } }));
    });
    try {
      const r = await checkModel(
        config({ OPENROUTER_API_KEY: "sk-or-bad", PATCHBAY_OPENROUTER_BASE_URL: `${refusing.base}/v1` }),
      );
      expect(r).toMatchObject({ status: "fail", detail: expect.stringContaining("HTTP 401") });
      expect(r.fix).toContain("OPENROUTER_API_KEY");
    } finally {
      await refusing.close();
    }
    const none = await checkModel(config());
    expect(none.status).toBe("skip");
  });

  it("fails E2B on a key the E2B stand-in refuses, passes on one it accepts, skips without e2b", async () => {
    const cloud = e2bCloud(tempDir("doctor-e2b"), { apiKeys: ["e2b_good"] });
    const bad = await checkE2b(config({ PATCHBAY_SANDBOX: "e2b", E2B_API_KEY: "e2b_bad" }), cloud.sdk);
    expect(bad).toMatchObject({ status: "fail", detail: expect.stringContaining("401"), fix: expect.any(String) });
    const good = await checkE2b(config({ PATCHBAY_SANDBOX: "e2b", E2B_API_KEY: "e2b_good" }), cloud.sdk);
    expect(good.status).toBe("pass");
    expect((await checkE2b(config(), cloud.sdk)).status).toBe("skip");
  });

  it("passes a GitHub App the stand-in accepts and fails one signed with another key", async () => {
    const pem = () =>
      generateKeyPairSync("rsa", {
        modulusLength: 2048,
        privateKeyEncoding: { type: "pkcs8", format: "pem" },
        publicKeyEncoding: { type: "spki", format: "pem" },
      });
    const app = pem();
    const stub = await startGitHubApiStub({ appId: "4242", appPublicKey: app.publicKey, repositories: [] });
    try {
      const env = { PATCHBAY_GITHUB_API_URL: stub.baseUrl, GITHUB_APP_ID: "4242" };
      const good = await checkGitHub(config({ ...env, GITHUB_APP_PRIVATE_KEY: app.privateKey }));
      expect(good).toMatchObject({ status: "pass", detail: expect.stringContaining("patchbay-stub") });
      const bad = await checkGitHub(config({ ...env, GITHUB_APP_PRIVATE_KEY: pem().privateKey }));
      expect(bad).toMatchObject({ status: "fail", fix: expect.stringContaining("GITHUB_APP_PRIVATE_KEY") });
    } finally {
      await stub.close();
    }
  });

  it("checks GitHub tokens and bwrap only where they apply, and an old Node fails", async () => {
    const gh = { PATCHBAY_GITHUB_API_URL: fx.github!.baseUrl };
    expect((await checkGitHub(config({ ...gh, GITHUB_TOKEN: GOOD_TOKEN }))).status).toBe("pass");
    expect((await checkGitHub(config(gh))).status).toBe("skip");
    expect((await checkBwrap(config(), tempDir("bwrap"))).status).toBe("skip");
    // Selected: the provider's own probes run (bubblewrap works on this machine, as the sandbox tests need).
    const dataDir = tempDir("bwrap-data");
    fs.chmodSync(dataDir, 0o711);
    const bwrap = config({ PATCHBAY_SANDBOX: "bwrap", PATCHBAY_DATA_DIR: dataDir });
    expect(await checkBwrap(bwrap, dataDir)).toMatchObject({ status: "pass" });
    // A data dir the sandbox's user cannot pass through: the provider's probe says so, and the fix names it.
    fs.chmodSync(dataDir, 0o700);
    if (process.getuid?.() === 0)
      expect(await checkBwrap(bwrap, dataDir)).toMatchObject({
        status: "fail",
        fix: expect.stringContaining("PATCHBAY_SANDBOX_UID"),
      });
    expect(checkNode("18.19.0")).toMatchObject({ status: "fail", fix: expect.stringContaining("Node 20") });
  });
});
