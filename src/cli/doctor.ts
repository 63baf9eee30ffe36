/**
 * `patchbay doctor`: checks this set-up and prints each check ✓ or ✗ (with the fix in one
 * line), or skipped when it does not apply; exits 0 only when every check that applies
 * passed. The last check is a smoke run: one real turn (the configured sandbox, the bundled
 * OpenCode, the gateway) against the built-in smoke model on a scratch repository.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { parseArgs, promisify } from "node:util";
import type { Config } from "../config.ts";
import { createLogger, openPatchbay } from "../engine/index.ts";
import {
  checkBwrap,
  checkDataDir,
  checkE2b,
  checkGit,
  checkGitHub,
  checkModel,
  checkNode,
  checkOpencode,
  scratchDir,
  searchableTempDir,
  type CheckOutcome,
  type DoctorDeps,
} from "./doctor-checks.ts";
import { EXIT } from "./errors.ts";
import { SMOKE_FILE, SMOKE_MODEL, startSmokeModel } from "./smoke-model.ts";

export type { CheckOutcome, DoctorDeps } from "./doctor-checks.ts";

export interface CheckResult extends CheckOutcome {
  name: string;
}

const run = promisify(execFile);

/** A bare repository `doctor/smoke.git` under `root` with one commit; returns its base URL. */
async function smokeRepository(config: Config, root: string): Promise<string> {
  const work = path.join(root, "work");
  const bare = path.join(root, "repos", "doctor", "smoke.git");
  fs.mkdirSync(work, { recursive: true });
  fs.writeFileSync(path.join(work, "README.md"), "# Smoke\n");
  const git = (cwd: string, ...args: string[]) =>
    run("git", ["-c", "user.name=Patchbay doctor", "-c", "user.email=doctor@patchbay.invalid", ...args], {
      cwd,
      env: { PATH: config.hostPath, GIT_CONFIG_NOSYSTEM: "1", HOME: root },
    });
  await git(work, "init", "-q", "-b", "main");
  await git(work, "add", "-A");
  await git(work, "commit", "-q", "-m", "smoke");
  fs.mkdirSync(path.dirname(bare), { recursive: true });
  await git(root, "clone", "-q", "--bare", work, bare);
  return `file://${path.join(root, "repos")}`;
}

/** One turn on the smoke model in a Patchbay of its own (scratch data dir), with this set-up's sandbox. */
export async function smokeRun(config: Config, scratch: string): Promise<CheckOutcome> {
  if (config.sandbox === "e2b")
    return { status: "skip", detail: "e2b VMs reach the model gateway only through PATCHBAY_PUBLIC_GATEWAY_URL" };
  const root = searchableTempDir(scratch, "smoke-");
  const model = await startSmokeModel();
  const started = Date.now();
  try {
    const smokeConfig: Config = Object.freeze({
      ...config,
      dataDir: path.join(root, "data"),
      gitBaseUrl: await smokeRepository(config, root),
      openrouterBaseUrl: model.baseUrl,
      openrouterApiKey: "patchbay-doctor-smoke",
      defaultModel: SMOKE_MODEL,
      models: [],
      warmPoolSize: 0,
      gatewayPort: 0,
      githubToken: undefined,
      githubAppId: undefined,
      githubAppPrivateKey: undefined,
      secretKey: undefined,
    });
    const pb = await openPatchbay(smokeConfig, { log: createLogger({ level: "silent" }) });
    try {
      const owner = smokeConfig.localOwner;
      const smoke = await pb.engine.startRun(owner, {
        repository: "doctor/smoke",
        prompt: `Write ${SMOKE_FILE}.`,
        validationMode: "minimal",
      });
      const done = await pb.engine.waitForTurn(owner, smoke.id, AbortSignal.timeout(300_000));
      const { patch } = await pb.engine.getPatch(owner, smoke.id);
      if (done.status === "idle") await pb.engine.endSession(owner, smoke.id);
      if (done.status !== "idle" || !patch?.includes(SMOKE_FILE))
        return {
          status: "fail",
          detail: `the smoke turn ended ${done.status}${done.error ? ` (${done.error.code}: ${done.error.message})` : ""}${done.status === "idle" ? " without the expected patch" : ""}`,
          fix: "fix the checks above first; then run with PATCHBAY_LOG_LEVEL=debug patchbay run --repo ... to see where it stops",
        };
    } finally {
      await pb.close();
    }
    return {
      status: "pass",
      detail: `a turn ran (${config.sandbox} sandbox) in ${((Date.now() - started) / 1000).toFixed(1)} s and its patch adds ${SMOKE_FILE}`,
    };
  } catch (e) {
    return {
      status: "fail",
      detail: `the smoke run failed: ${(e instanceof Error ? e.message : String(e)).split("\n")[0]}`,
      fix: "fix the checks above first, then run doctor again",
    };
  } finally {
    await model.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/** Run every check in order; the smoke run last (and not with `smoke: false`). */
export async function runDoctor(
  config: Config,
  opts: DoctorDeps & { smoke?: boolean; onResult?: (r: CheckResult) => void } = {},
): Promise<CheckResult[]> {
  const scratch = scratchDir(config, opts.scratchDir);
  const results: CheckResult[] = [];
  type Check = [string, () => CheckOutcome | Promise<CheckOutcome>];
  const checks: Check[] = [
    ["Node", () => checkNode()],
    ["git", () => checkGit(config)],
    ["opencode", () => checkOpencode(config, scratch)],
    ["bwrap", () => checkBwrap(config, scratch)],
    ["data dir", () => checkDataDir(config)],
    ["model endpoint", () => checkModel(config)],
    ["E2B", () => checkE2b(config, opts.e2b)],
    ["GitHub", () => checkGitHub(config)],
    ...(opts.smoke === false ? [] : [["smoke run", () => smokeRun(config, scratch)] satisfies Check]),
  ];
  try {
    for (const [name, check] of checks) {
      const result = { name, ...(await check()) };
      results.push(result);
      opts.onResult?.(result);
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  return results;
}

/** A result as the terminal shows it: `✓ name  detail`, a failure's fix indented below. */
export function formatResult(r: CheckResult): string {
  const mark = r.status === "pass" ? "✓" : r.status === "fail" ? "✗" : "-";
  const head = `${mark} ${r.name.padEnd(15)} ${r.status === "skip" ? `skipped: ${r.detail}` : r.detail}`;
  return r.fix ? `${head}\n  fix: ${r.fix}` : head;
}

/** `patchbay doctor [--json] [--skip-smoke]`; resolves with the exit code. */
export async function doctorCommand(config: Config, args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: "boolean" }, "skip-smoke": { type: "boolean" } } });
  const results = await runDoctor(config, {
    smoke: !values["skip-smoke"],
    ...(values.json ? {} : { onResult: (r: CheckResult) => process.stdout.write(formatResult(r) + "\n") }),
  });
  const failed = results.filter((r) => r.status === "fail").length;
  if (values.json) process.stdout.write(JSON.stringify({ ok: failed === 0, checks: results }, null, 2) + "\n");
  else process.stdout.write(failed ? `\n${failed} check(s) failed.\n` : "\nAll checks passed.\n");
  return failed ? EXIT.failed : EXIT.ok;
}
