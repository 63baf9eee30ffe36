/**
 * The checks of `patchbay doctor`, one function each: what it found, and when it fails, the
 * fix in one line. A check that does not apply to this set-up (bwrap when the sandbox is
 * local, E2B without e2b) is skipped and does not count.
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { App } from "octokit";
import type { Config } from "../config.ts";
import { bundledOpencodeBin } from "../engine/agent/opencode.ts";
import { opencodeEnv } from "../engine/agent/opencode-config.ts";
import { isEngineError } from "../engine/errors.ts";
import { createOctokitClass } from "../engine/github/client.ts";
import { silentLogger } from "../engine/log.ts";
import { createSandboxProvider } from "../engine/sandbox/providers.ts";
import { e2bSdk, type E2bSdk } from "../engine/sandbox/e2b-sdk.ts";
import { freeLoopbackPort } from "../engine/sandbox/process.ts";
import { acquireDataDirLock } from "../engine/store/lock.ts";

export interface CheckOutcome {
  status: "pass" | "fail" | "skip";
  /** What was found (a version, who a token belongs to, why it was skipped). */
  detail: string;
  /** On a failure: what to do, in one line. */
  fix?: string;
}

export interface DoctorDeps {
  /** E2B's SDK (tests pass the stand-in). Default: the real one. */
  e2b?: E2bSdk;
  /** Directory for scratch files (the smoke run's repository and data). Default: the OS temp dir. */
  scratchDir?: string;
}

const run = promisify(execFile);
const pass = (detail: string): CheckOutcome => ({ status: "pass", detail });
const fail = (detail: string, fix: string): CheckOutcome => ({ status: "fail", detail, fix });
const skip = (detail: string): CheckOutcome => ({ status: "skip", detail });
const message = (e: unknown) => (e instanceof Error ? e.message : String(e)).split("\n")[0]!.slice(0, 300);

export function checkNode(version = process.versions.node): CheckOutcome {
  const major = Number(version.split(".")[0]);
  return major >= 20
    ? pass(`Node ${version}`)
    : fail(`Node ${version}`, "install Node 20 or newer (https://nodejs.org, or nvm install 20)");
}

export async function checkGit(config: Config): Promise<CheckOutcome> {
  try {
    const { stdout } = await run("git", ["--version"], { env: { PATH: config.hostPath }, timeout: 15_000 });
    return pass(stdout.trim());
  } catch (e) {
    return fail(
      `git not found on PATH (${message(e)})`,
      "install git (apt-get install git, brew install git) or add its directory to PATH",
    );
  }
}

/** `opencode serve` starts and listens (on loopback, with a scratch home), then is stopped. */
export async function checkOpencode(config: Config, scratch: string): Promise<CheckOutcome> {
  const bin = config.opencodeBin ?? bundledOpencodeBin();
  if (!fs.existsSync(bin))
    return fail(`no opencode binary at ${bin}`, "run npm install (opencode-ai), or set PATCHBAY_OPENCODE_BIN");
  const home = fs.mkdtempSync(path.join(scratch, "opencode-"));
  const port = await freeLoopbackPort();
  const password = randomBytes(18).toString("base64url");
  const child = spawn(bin, ["serve", "--hostname=127.0.0.1", `--port=${port}`], {
    env: { PATH: config.hostPath, HOME: home, ...opencodeEnv({}, password) },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  try {
    const listening = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 60_000);
      const read = (d: Buffer) => {
        output += d.toString();
        if (/listening on/.test(output)) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      child.stdout!.on("data", read);
      child.stderr!.on("data", read);
      child.once("error", (e) => {
        output += message(e);
        clearTimeout(timer);
        resolve(false);
      });
      child.once("exit", () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (!listening)
      return fail(
        `opencode did not start: ${output.trim().slice(-300) || "no output"}`,
        "reinstall it (npm ci), or set PATCHBAY_OPENCODE_BIN to a working opencode 1.18",
      );
    const { stdout } = await run(bin, ["--version"], { env: { PATH: config.hostPath, HOME: home }, timeout: 30_000 });
    return pass(`opencode ${stdout.trim()} starts`);
  } finally {
    if (child.exitCode === null && child.pid) {
      const exited = new Promise((r) => child.once("exit", r));
      process.kill(-child.pid, "SIGKILL");
      await exited;
    }
    fs.rmSync(home, { recursive: true, force: true });
  }
}

/** bubblewrap can make this set-up's sandboxes (the provider's own start-up probes). */
export async function checkBwrap(config: Config, scratch: string): Promise<CheckOutcome> {
  if (config.sandbox !== "bwrap") return skip(`PATCHBAY_SANDBOX=${config.sandbox}`);
  const dataDir = searchableTempDir(scratch, "bwrap-");
  try {
    const provider = await createSandboxProvider({ ...config, dataDir }, silentLogger);
    await provider.close?.();
    return pass("bubblewrap sandboxes work");
  } catch (e) {
    const detail = message(e);
    return fail(
      detail,
      /cannot reach/.test(detail)
        ? "make the data dir and the opencode binary reachable by PATCHBAY_SANDBOX_UID (chmod o+x on their parent directories)"
        : "install bubblewrap (apt-get install bubblewrap) and allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), or use PATCHBAY_SANDBOX=local",
    );
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The data dir can be written, and no other process holds it. */
export async function checkDataDir(config: Config): Promise<CheckOutcome> {
  const dir = config.dataDir;
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const probe = path.join(dir, `.doctor-${process.pid}`);
    fs.writeFileSync(probe, "ok");
    fs.rmSync(probe);
  } catch (e) {
    return fail(
      `${dir} is not writable (${message(e)})`,
      `make ${dir} writable by this user, or set PATCHBAY_DATA_DIR`,
    );
  }
  try {
    const lock = await acquireDataDirLock(dir);
    await lock.release();
    return pass(`${dir} is writable and free`);
  } catch (e) {
    if (!isEngineError(e)) throw e;
    return fail(
      e.message,
      "stop the Patchbay process holding it (this check needs it free), or set PATCHBAY_DATA_DIR to another directory",
    );
  }
}

/** One tiny request to the model endpoint with the configured key. */
export async function checkModel(config: Config): Promise<CheckOutcome> {
  if (!config.openrouterApiKey) return skip("no OPENROUTER_API_KEY: every run must bring billing.openRouterApiKey");
  const url = `${config.openrouterBaseUrl}/chat/completions`;
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { authorization: `Bearer ${config.openrouterApiKey}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: config.defaultModel,
        max_tokens: 1,
        messages: [{ role: "user", content: "ping" }],
      }),
      signal: AbortSignal.timeout(60_000),
    });
    await res.body?.cancel();
    if (res.ok) return pass(`${config.openrouterBaseUrl} answered ${config.defaultModel}`);
    if (res.status === 401 || res.status === 403)
      return fail(
        `${config.openrouterBaseUrl} refused the key (HTTP ${res.status})`,
        "set OPENROUTER_API_KEY to a valid key for PATCHBAY_OPENROUTER_BASE_URL",
      );
    if (res.status === 404 || res.status === 400)
      return fail(
        `${config.openrouterBaseUrl} answered HTTP ${res.status} for ${config.defaultModel}`,
        "set PATCHBAY_DEFAULT_MODEL to a model the endpoint serves",
      );
    return fail(
      `${config.openrouterBaseUrl} answered HTTP ${res.status}`,
      "check the endpoint's status and your credit",
    );
  } catch (e) {
    return fail(
      `cannot reach ${config.openrouterBaseUrl} (${message(e)})`,
      "check PATCHBAY_OPENROUTER_BASE_URL and this host's network or proxy",
    );
  }
}

/** E2B accepts the key (a list of sandboxes). */
export async function checkE2b(config: Config, sdk: E2bSdk = e2bSdk()): Promise<CheckOutcome> {
  if (config.sandbox !== "e2b") return skip(`PATCHBAY_SANDBOX=${config.sandbox}`);
  if (!config.e2bApiKey) return fail("no E2B_API_KEY", "set E2B_API_KEY (https://e2b.dev/dashboard)");
  try {
    await sdk.list({ apiKey: config.e2bApiKey, metadata: { patchbayDoctor: "1" } });
    return pass("E2B accepts the key");
  } catch (e) {
    return fail(`E2B refused: ${message(e)}`, "set E2B_API_KEY to a valid key (https://e2b.dev/dashboard)");
  }
}

const PUBLISH_PERMISSIONS = { contents: "write", pull_requests: "write" } as const;

/** The GitHub token or App is accepted, with what publishing draft pull requests needs. */
export async function checkGitHub(config: Config): Promise<CheckOutcome> {
  const Octokit = createOctokitClass({ baseUrl: config.githubApiUrl, log: silentLogger, rateLimitRetries: 0 });
  if (config.githubAppId && config.githubAppPrivateKey) {
    try {
      const app = new App({
        appId: config.githubAppId,
        privateKey: config.githubAppPrivateKey.replace(/\\n/g, "\n"),
        Octokit,
      });
      const { data } = await app.octokit.request("GET /app");
      const granted = (data?.permissions ?? {}) as Record<string, string>;
      const missing = Object.entries(PUBLISH_PERMISSIONS).filter(([k, v]) => granted[k] !== v);
      if (missing.length)
        return fail(
          `the App lacks ${missing.map(([k, v]) => `${k}: ${v}`).join(", ")}`,
          "grant the App Contents and Pull requests read & write, then accept the new permissions on each installation",
        );
      return pass(`GitHub App ${data?.slug ?? config.githubAppId} can push and open pull requests`);
    } catch (e) {
      return fail(
        `GitHub refused the App (${message(e)})`,
        "check GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY (the App's .pem)",
      );
    }
  }
  if (config.githubToken) {
    try {
      const res = await new Octokit({ auth: config.githubToken }).request("GET /user");
      const scopes = res.headers["x-oauth-scopes"];
      // Classic tokens list their scopes; fine-grained ones do not (their grants show per repository).
      if (typeof scopes === "string" && !/\b(repo|public_repo)\b/.test(scopes))
        return fail(
          `the token's scopes are "${scopes}"`,
          "make a token with the repo scope (or a fine-grained one with Contents and Pull requests write)",
        );
      return pass(`GITHUB_TOKEN of ${res.data.login}${typeof scopes === "string" ? ` (scopes: ${scopes})` : ""}`);
    } catch (e) {
      const status = (e as { status?: number }).status;
      return fail(
        `GitHub refused GITHUB_TOKEN${status ? ` (HTTP ${status})` : ""}: ${message(e)}`,
        "set GITHUB_TOKEN to a valid token with Contents and Pull requests write (classic: repo)",
      );
    }
  }
  return skip("no GitHub credentials: public repositories only, no draft pull requests");
}

/**
 * A new directory under `base` that other users may pass through but not list (0711): a bwrap
 * sandbox's user must reach what is under it, as it reaches the data dir.
 */
export function searchableTempDir(base: string, prefix: string): string {
  fs.mkdirSync(base, { recursive: true });
  const dir = fs.mkdtempSync(path.join(base, prefix));
  fs.chmodSync(dir, 0o711);
  return dir;
}

/**
 * The doctor's scratch directory, removed by the caller: under the data dir for bwrap (its
 * sandboxes must reach it as they reach the data dir), else under the OS temp dir.
 */
export function scratchDir(config: Config, base?: string): string {
  return searchableTempDir(base ?? (config.sandbox === "bwrap" ? config.dataDir : os.tmpdir()), "patchbay-doctor-");
}
