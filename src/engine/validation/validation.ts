/**
 * validationMode: what runs inside the sandbox after the agent's turn, with a time limit
 * per command, and the structured outcome recorded on the run.
 *
 * - `minimal`: nothing runs (`status: skipped`).
 * - `basic`: the turn's patch must apply cleanly to the base commit (`git apply --check`
 *   against a scratch index of the base), and the project's quick checks run (typecheck or
 *   build; see detect.ts) on what the run's setup installed.
 * - `tests`: `basic`, then the repository's test command. When a check or the tests fail,
 *   the agent gets one bounded chance to fix them in the same session (one more turn with the
 *   failing output), and everything runs once more. `commands` lists both attempts in order;
 *   `status` is the last attempt's.
 *
 * Validation leaves no trace in the patch: files it creates (build output, caches) are
 * removed and tracked files it changes (a lockfile rewritten by an install) are restored.
 */
import { randomBytes } from "node:crypto";
import type { ValidationMode, ValidationResult } from "../run/schema.ts";
import type { ExecResult, Sandbox } from "../sandbox/sandbox.ts";
import { detectChecks, FILES_READ, type PlannedCommand, type RepoFacts, type Stage } from "./detect.ts";

export interface ValidationTimeouts {
  /** Default 300 000. */
  installMs: number;
  /** Default 180 000. */
  checkMs: number;
  /** Default 600 000. */
  testMs: number;
}

export interface ValidateTurnOptions {
  sandbox: Sandbox;
  mode: ValidationMode;
  /** The commit the run started from. */
  baseSha: string;
  /** The turn's binary patch against `baseSha` (empty when nothing changed). */
  patch: string;
  /**
   * `tests` mode: run one more agent turn with this prompt in the same session and return
   * the new binary patch. Called at most once.
   */
  repair?: (prompt: string) => Promise<string>;
  /** Progress lines for the run's event log. */
  onLog?: (message: string) => void;
  signal?: AbortSignal;
  timeouts?: Partial<ValidationTimeouts>;
  /** Variables every check sees (the run's environment: what its setup and the agent's shell see). */
  env?: Record<string, string>;
  /**
   * Run the install stage (default true). False once the run's setup owns installing: the
   * checks then use what setup installed.
   */
  install?: boolean;
}

type CommandResult = ValidationResult["commands"][number];

const OUTPUT_TAIL = 2000;
const GIT_SAFE = ["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"];
const STAGES_BY_MODE: Record<ValidationMode, readonly Stage[]> = {
  minimal: [],
  basic: ["install", "check"],
  tests: ["install", "check", "test"],
};

const tail = (s: string) => (s.length > OUTPUT_TAIL ? s.slice(-OUTPUT_TAIL) : s);

/** Run the checks of `mode` after a turn and report them. Never throws for a failing check. */
export async function validateTurn(opts: ValidateTurnOptions): Promise<ValidationResult> {
  const { mode } = opts;
  if (mode === "minimal") return { mode, status: "skipped", commands: [] };
  const timeouts: ValidationTimeouts = { installMs: 300_000, checkMs: 180_000, testMs: 600_000, ...opts.timeouts };
  const first = await attempt(opts, opts.patch, timeouts);
  if (first.failed.length === 0 || mode !== "tests" || !opts.repair || opts.signal?.aborted) {
    return {
      mode,
      status: first.ran ? (first.failed.length ? "failed" : "passed") : "skipped",
      commands: first.commands,
    };
  }
  opts.onLog?.("validation failed; giving the agent one chance to fix it");
  const patch = await opts.repair(repairPrompt(first.failed));
  const second = await attempt(opts, patch, timeouts);
  return {
    mode,
    status: second.failed.length ? "failed" : "passed",
    commands: [...first.commands, ...second.commands],
  };
}

function repairPrompt(failed: CommandResult[]): string {
  return [
    "The project's checks failed after your changes. Fix the code so that they pass; change a test only if the test itself is wrong.",
    ...failed.map((c) => `$ ${c.command}\n(exit ${c.exitCode ?? "timeout"})\n${c.outputTail}`),
  ].join("\n\n");
}

interface Attempt {
  commands: CommandResult[];
  failed: CommandResult[];
  /** Whether any command really ran. */
  ran: boolean;
}

async function attempt(opts: ValidateTurnOptions, patch: string, timeouts: ValidationTimeouts): Promise<Attempt> {
  const { sandbox } = opts;
  const commands: CommandResult[] = [];
  const record = (c: CommandResult, counts = true) => {
    commands.push(c);
    opts.onLog?.(
      `validation: ${c.command} → ${c.exitCode === null ? "not run" : `exit ${c.exitCode}`} (${Math.round(c.durationMs)} ms)`,
    );
    return counts;
  };
  const failed: CommandResult[] = [];
  let ran = false;

  if (patch.trim() !== "") {
    const r = await checkPatchApplies(sandbox, opts.baseSha, patch);
    ran = true;
    record(r);
    if (r.exitCode !== 0) failed.push(r);
  }

  const planned = detectChecks(await readFacts(sandbox)).filter(
    (c) => STAGES_BY_MODE[opts.mode].includes(c.stage) && (c.stage !== "install" || opts.install !== false),
  );
  if (planned.length === 0) return { commands, failed, ran };
  const snapshot = await takeSnapshot(sandbox);
  try {
    for (const cmd of planned) {
      if (opts.signal?.aborted) break;
      if (cmd.requires && !(await available(sandbox, cmd.requires))) {
        record({
          command: cmd.label,
          exitCode: null,
          durationMs: 0,
          outputTail: `${cmd.requires} is not installed in the sandbox; skipped`,
        });
        continue;
      }
      const timeoutMs =
        cmd.stage === "install" ? timeouts.installMs : cmd.stage === "check" ? timeouts.checkMs : timeouts.testMs;
      const r = await runCommand(sandbox, cmd, timeoutMs, opts.env);
      ran = true;
      record(r);
      if (r.exitCode !== 0) {
        failed.push(r);
        // Checks after a failed install would only report the missing dependencies again.
        if (cmd.stage === "install") break;
      }
    }
  } finally {
    await restoreSnapshot(sandbox, snapshot);
  }
  return { commands, failed, ran };
}

async function runCommand(
  sandbox: Sandbox,
  cmd: PlannedCommand,
  timeoutMs: number,
  env: Record<string, string> = {},
): Promise<CommandResult> {
  const t0 = performance.now();
  let res: ExecResult;
  try {
    res = await sandbox.exec(cmd.argv, { timeoutMs, env: { ...env, CI: "1" } });
  } catch (e) {
    return {
      command: cmd.label,
      exitCode: null,
      durationMs: performance.now() - t0,
      outputTail: tail(e instanceof Error ? e.message : String(e)),
    };
  }
  const output = [res.stdout, res.stderr].filter(Boolean).join("\n");
  return {
    command: cmd.label,
    exitCode: res.timedOut ? null : res.exitCode,
    durationMs: Math.round(performance.now() - t0),
    outputTail: tail(res.timedOut ? `${output}\n[killed after ${timeoutMs} ms]` : output),
  };
}

/** `git apply --check` of the patch against the base commit, in a scratch index (the worktree is not touched). */
async function checkPatchApplies(sandbox: Sandbox, baseSha: string, patch: string): Promise<CommandResult> {
  const t0 = performance.now();
  const label = `git apply --check (patch against ${baseSha.slice(0, 12)})`;
  const gitDir = (await sandbox.exec(["git", "rev-parse", "--absolute-git-dir"])).stdout.trim();
  const index = `${gitDir}/patchbay-validate-${randomBytes(6).toString("hex")}.index`;
  const env = { GIT_INDEX_FILE: index };
  try {
    const read = await sandbox.exec(["git", ...GIT_SAFE, "read-tree", baseSha], { env, timeoutMs: 60_000 });
    const r =
      read.exitCode !== 0
        ? read
        : await sandbox.exec(["git", ...GIT_SAFE, "apply", "--check", "--cached", "--binary", "-"], {
            env,
            stdin: patch,
            timeoutMs: 60_000,
          });
    return {
      command: label,
      exitCode: r.exitCode,
      durationMs: Math.round(performance.now() - t0),
      outputTail: tail([r.stdout, r.stderr].filter(Boolean).join("\n")),
    };
  } finally {
    await sandbox.exec(["rm", "-f", index]);
  }
}

/** The workdir's top-level entries and the files detection reads (detect.ts). */
export async function readFacts(sandbox: Sandbox): Promise<RepoFacts> {
  const ls = await sandbox.exec(["ls", "-A1"]);
  const entries = ls.exitCode === 0 ? ls.stdout.split("\n").filter(Boolean) : [];
  const files: RepoFacts["files"] = {};
  for (const name of FILES_READ) {
    if (!entries.includes(name)) continue;
    const r = await sandbox.exec(["cat", "--", name]);
    if (r.exitCode === 0) files[name] = r.stdout;
  }
  return { entries, files };
}

async function available(sandbox: Sandbox, bin: string): Promise<boolean> {
  // `command -v` is a shell builtin; the name is passed as an argument, never spliced into the script.
  const r = await sandbox.exec(["sh", "-c", 'command -v "$1" >/dev/null 2>&1', "sh", bin], { timeoutMs: 10_000 });
  return r.exitCode === 0;
}

interface Snapshot {
  /** A commit holding the tracked files as they were (HEAD when nothing was changed). */
  tree: string;
  /** Untracked, not ignored files that existed before. */
  untracked: Set<string>;
}

async function takeSnapshot(sandbox: Sandbox): Promise<Snapshot> {
  const stash = await sandbox.exec(["git", ...GIT_SAFE, "stash", "create"]);
  const tree = stash.stdout.trim() || (await sandbox.exec(["git", "rev-parse", "HEAD"])).stdout.trim();
  return { tree, untracked: new Set(await untrackedFiles(sandbox)) };
}

async function untrackedFiles(sandbox: Sandbox): Promise<string[]> {
  const r = await sandbox.exec(["git", ...GIT_SAFE, "ls-files", "--others", "--exclude-standard", "-z"]);
  return r.stdout.split("\0").filter(Boolean);
}

async function restoreSnapshot(sandbox: Sandbox, snap: Snapshot): Promise<void> {
  const created = (await untrackedFiles(sandbox)).filter((f) => !snap.untracked.has(f));
  if (created.length) await sandbox.exec(["git", ...GIT_SAFE, "clean", "-f", "-q", "--", ...created]);
  const changed = await sandbox.exec(["git", ...GIT_SAFE, "diff", "--name-only", "-z", snap.tree, "--"]);
  const paths = changed.stdout.split("\0").filter(Boolean);
  if (paths.length) await sandbox.exec(["git", ...GIT_SAFE, "checkout", snap.tree, "--", ...paths]);
}
