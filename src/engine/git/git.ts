/**
 * Git, the engine's way. Every git command goes through a `GitRunner`: an argument array,
 * never a shell string, so nothing a user typed (a ref, a branch name, a path) is ever
 * parsed by a shell. `createHostGit` runs git on the host with a clean environment; a
 * provider that isolates its workspace can hand `computeDiff` a runner that executes inside
 * the sandbox instead.
 *
 * Order: types, runner, ref validation, credentials, diff and apply.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { DEFAULT_HOST_PATH, type Config } from "../../config.ts";
import { EngineError, type ErrorCode } from "../errors.ts";
import { GitRefInput, type DiffStats } from "../run/schema.ts";
import type { ExecResult, GitCredential } from "../sandbox/sandbox.ts";

export interface GitRunOptions {
  /** Working directory of the git process. */
  cwd?: string;
  /** Extra environment on top of the runner's clean one. */
  env?: Record<string, string>;
  /** Kill git (and its helpers) after this long; the result then has `timedOut`. */
  timeoutMs?: number;
  /** Text written to git's stdin. */
  stdin?: string;
  /** Kill git when aborted; the result then has a non-zero exit code. */
  signal?: AbortSignal;
  /** Output a sandboxed runner keeps (default its own cap): a patch must arrive whole. */
  maxOutputBytes?: number;
}

/** Runs `git <args>` and reports its exit code and complete output. Never throws for a non-zero exit. */
export type GitRunner = (args: string[], opts?: GitRunOptions) => Promise<ExecResult>;

/** The identity git records for commits and reflogs Patchbay makes. */
export const PATCHBAY_IDENTITY = { name: "Patchbay", email: "patchbay@localhost" } as const;

/** The largest diff Patchbay takes from a workspace (a sandbox's exec keeps only 1 MB by default). */
const MAX_PATCH_BYTES = 512 * 1024 * 1024;

export interface HostGitOptions {
  /**
   * An empty directory used as HOME, so that a user's ~/.gitconfig (aliases, credential
   * helpers, `core.sshCommand`, …) never changes what Patchbay's git does. Default: a
   * private directory made with mkdtemp on first use.
   */
  home?: string;
  /** PATH used to find git (`config.hostPath`). Default: DEFAULT_HOST_PATH. */
  path?: string;
  /** Proxy and TLS variables git may need to reach its server (`config.hostProxyEnv`). Default: none. */
  proxyEnv?: Readonly<Record<string, string>>;
  /** Timeout for every command without its own `timeoutMs`. Default 10 minutes. */
  defaultTimeoutMs?: number;
}

/** Host git as the config sets it up: HOME at `<dataDir>/git-home`, the host's PATH and proxy settings. */
export function hostGitOptions(config: Pick<Config, "dataDir" | "hostPath" | "hostProxyEnv">): HostGitOptions {
  return { home: path.join(config.dataDir, "git-home"), path: config.hostPath, proxyEnv: config.hostProxyEnv };
}

/**
 * A `GitRunner` for the host. The environment is built from scratch: no inherited `GIT_*`
 * variables (a stray `GIT_DIR` would point commands at another repository), no prompts,
 * no system or user configuration, and a fixed committer identity.
 */
export function createHostGit(opts: HostGitOptions = {}): GitRunner {
  const hostPath = opts.path ?? DEFAULT_HOST_PATH;
  let home = opts.home;
  const homeDir = (): string => {
    if (home === undefined) home = fs.mkdtempSync(path.join(os.tmpdir(), "patchbay-git-home-"));
    else fs.mkdirSync(home, { recursive: true, mode: 0o700 });
    return home;
  };
  const defaultTimeoutMs = opts.defaultTimeoutMs ?? 10 * 60_000;

  return (args, runOpts = {}) => {
    const env: Record<string, string> = {
      ...opts.proxyEnv,
      PATH: hostPath,
      HOME: homeDir(),
      // C locale: git's messages are then stable English, which error reporting relies on.
      LC_ALL: "C",
      GIT_TERMINAL_PROMPT: "0",
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_AUTHOR_NAME: PATCHBAY_IDENTITY.name,
      GIT_AUTHOR_EMAIL: PATCHBAY_IDENTITY.email,
      GIT_COMMITTER_NAME: PATCHBAY_IDENTITY.name,
      GIT_COMMITTER_EMAIL: PATCHBAY_IDENTITY.email,
      ...runOpts.env,
    };
    return runProcess("git", args, {
      cwd: runOpts.cwd,
      env,
      stdin: runOpts.stdin,
      timeoutMs: runOpts.timeoutMs ?? defaultTimeoutMs,
      signal: runOpts.signal,
    });
  };
}

/**
 * Run a program to completion, keeping all of its output (diffs must be complete). It gets
 * its own process group so a timeout also stops the helpers git starts (remote-https,
 * upload-pack), which would otherwise keep the pipes open.
 */
function runProcess(
  file: string,
  args: string[],
  opts: { cwd?: string; env: Record<string, string>; stdin?: string; timeoutMs: number; signal?: AbortSignal },
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env,
      detached: true,
      stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => err.push(b));
    let timedOut = false;
    let spawnError: Error | undefined;
    const killGroup = () => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch (e) {
        // ESRCH: the group is already gone, which is what we wanted.
        if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, opts.timeoutMs);
    const onAbort = () => killGroup();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    if (opts.signal?.aborted) killGroup();
    if (opts.stdin !== undefined && child.stdin) {
      // git may exit before reading all of stdin (e.g. a malformed patch); that is reported
      // through its exit code, so a broken pipe here is not an error of its own.
      child.stdin.on("error", (e: NodeJS.ErrnoException) => {
        if (e.code !== "EPIPE") spawnError = e;
      });
      child.stdin.end(opts.stdin);
    }
    child.on("error", (e) => {
      spawnError = e;
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      const stderr = Buffer.concat(err).toString("utf8") + (spawnError ? `${spawnError.message}\n` : "");
      resolve({
        // git missing reports a negative errno as its code: say 127, "command not found".
        exitCode: spawnError ? 127 : (code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1)),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr,
        ...(timedOut ? { timedOut } : {}),
      });
    });
  });
}

/**
 * Run git and return stdout; on a non-zero exit throw `EngineError(code)` whose message is
 * `what` plus git's own explanation, with any credential scrubbed.
 */
export async function gitOrThrow(
  run: GitRunner,
  args: string[],
  opts: GitRunOptions & { code: ErrorCode; what: string; credential?: GitCredential },
): Promise<string> {
  const { code, what, credential, ...runOpts } = opts;
  const res = await run(args, runOpts);
  if (res.exitCode === 0) return res.stdout;
  const reason = res.timedOut ? "git timed out" : gitReason(res.stderr) || `git exited with code ${res.exitCode}`;
  throw new EngineError(code, scrubCredential(`${what}: ${reason}`, credential));
}

/** The informative part of git's stderr: its `fatal:`/`error:` lines, else the last lines. */
function gitReason(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  const fatal = lines.filter((l) => /^(fatal|error):/.test(l));
  return (fatal.length ? fatal : lines.slice(-3)).join("; ").slice(0, 2000);
}

// ---------------------------------------------------------------------------------------
// Refs and branch names

/**
 * Check a user-supplied ref (branch, tag or sha) before any git command sees it: the schema
 * rules of `GitRefInput` first (so hostile input never reaches a process), then git's own
 * `check-ref-format`. Throws `EngineError("invalid_ref")`.
 */
export async function validateRef(run: GitRunner, ref: string): Promise<void> {
  checkRefSyntax(ref, "ref");
  const res = await run(["check-ref-format", "--allow-onelevel", ref]);
  if (res.exitCode !== 0)
    throw new EngineError("invalid_ref", `ref ${JSON.stringify(ref)} is not a valid git ref name`, { ref });
}

/**
 * Check a branch name Patchbay will create or push (a publish branch): the `GitRefInput`
 * rules, then `git check-ref-format --branch`. `HEAD` and names under `refs/` are refused
 * because pushing them would not create the branch the user asked for.
 * Throws `EngineError("invalid_ref")`.
 */
export async function validateBranchName(run: GitRunner, name: string): Promise<void> {
  checkRefSyntax(name, "branch name");
  if (name === "HEAD" || name.startsWith("refs/")) {
    throw new EngineError("invalid_ref", `branch name ${JSON.stringify(name)} is not allowed`, { ref: name });
  }
  const res = await run(["check-ref-format", "--branch", name]);
  if (res.exitCode !== 0)
    throw new EngineError("invalid_ref", `branch name ${JSON.stringify(name)} is not a valid git branch name`, {
      ref: name,
    });
}

function checkRefSyntax(ref: string, kind: string): void {
  // A leading dash would be read as an option (`--upload-pack=...`): refuse it explicitly
  // even though the schema refuses it too, because this is the line that must never move.
  if (typeof ref !== "string" || ref.startsWith("-") || !GitRefInput.safeParse(ref).success) {
    throw new EngineError(
      "invalid_ref",
      `${kind} ${JSON.stringify(String(ref)).slice(0, 300)} is not a valid git ref name`,
      { ref: String(ref).slice(0, 300) },
    );
  }
}

// ---------------------------------------------------------------------------------------
// Credentials

/**
 * The config key carrying the Authorization header, scoped to the remote's origin so that a
 * redirect to another host never receives it (the same scoping `actions/checkout` uses).
 */
function extraHeaderKey(url: string | undefined): string {
  if (url && /^https?:\/\//i.test(url)) return `http.${new URL(url).origin}/.extraHeader`;
  return "http.extraHeader";
}

/**
 * Per-command git arguments (`-c http.<origin>/.extraHeader=Authorization: …`) that
 * authenticate one command, so a token never lands in `.git/config` or a remote URL. Place
 * them before the subcommand. Note that arguments are visible in the host's process list;
 * prefer `credentialEnv` where other local users could look.
 */
export function credentialArgs(credential: GitCredential | undefined, url?: string): string[] {
  if (!credential) return [];
  return ["-c", `${extraHeaderKey(url)}=Authorization: ${credential.authorizationHeader}`];
}

/**
 * The same per-command credential as environment variables (`GIT_CONFIG_COUNT`/`KEY`/`VALUE`,
 * git ≥ 2.31), which, unlike arguments, other users cannot read from the process list.
 */
export function credentialEnv(credential: GitCredential | undefined, url?: string): Record<string, string> {
  if (!credential) return {};
  return {
    GIT_CONFIG_COUNT: "1",
    GIT_CONFIG_KEY_0: extraHeaderKey(url),
    GIT_CONFIG_VALUE_0: `Authorization: ${credential.authorizationHeader}`,
  };
}

/**
 * Remove a credential from text that may be shown to a user or logged (git's error output):
 * the header value, its token part, the decoded `user:token` of a Basic header, and any
 * `user:password@` in URLs.
 */
export function scrubCredential(text: string, credential?: GitCredential): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi, "$1***@");
  if (!credential) return out;
  const header = credential.authorizationHeader;
  const secrets = new Set<string>([header]);
  const m = /^\s*(\w+)\s+(.+?)\s*$/.exec(header);
  if (m) {
    secrets.add(m[2]!);
    if (m[1]!.toLowerCase() === "basic") {
      const decoded = Buffer.from(m[2]!, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      if (colon >= 0) secrets.add(decoded.slice(colon + 1));
      secrets.add(decoded);
    }
  }
  // Longest first, so a header is replaced whole before its token part could split it.
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) {
    if (s.length >= 4) out = out.split(s).join("[redacted]");
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Diff and apply

export interface DiffResult {
  /** Unified diff against the base; binary files appear as "Binary files … differ". */
  patch: string;
  /** The same diff with binary contents (`--binary`), for `applyPatch` in a chained run. */
  binaryPatch: string;
  /** Every changed path, sorted. */
  changedPaths: string[];
  diffStats: DiffStats;
}

/**
 * Flags that pin the diff's format, whatever the repository's own config says (an agent can
 * write `.git/config`: `diff.noprefix` or `diff.external` would otherwise change or run
 * things), so the patch always applies with `git apply`.
 */
const DIFF_FLAGS = [
  "--no-color",
  "--no-ext-diff",
  "--no-textconv",
  "--no-renames",
  "--no-relative",
  "--src-prefix=a/",
  "--dst-prefix=b/",
  "-U3",
];

/**
 * The working tree's changes against `baseSha`: tracked changes, deletions and new
 * untracked files (`.gitignore` respected), including whatever the agent committed itself.
 * It stages into a temporary index (`GIT_INDEX_FILE`), so the real index and HEAD are
 * untouched and an agent's own staging survives.
 */
export async function computeDiff(run: GitRunner, workdir: string, baseSha: string): Promise<DiffResult> {
  // The base comes from the engine, but it is still an argument: make sure it is an object name.
  if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(baseSha))
    throw new EngineError("internal", `base ${JSON.stringify(baseSha)} is not a full commit id`);
  const gitDir = (
    await gitOrThrow(run, ["rev-parse", "--absolute-git-dir"], {
      cwd: workdir,
      code: "internal",
      what: "cannot find the repository",
    })
  ).trim();
  // The scratch index lives in the git dir, so the path also exists for a runner that
  // executes inside a sandbox; a random name keeps concurrent diffs of one workdir apart.
  const indexFile = path.posix.join(gitDir, `patchbay-diff-${randomBytes(6).toString("hex")}.index`);
  const opts = {
    cwd: workdir,
    env: { GIT_INDEX_FILE: indexFile },
    maxOutputBytes: MAX_PATCH_BYTES,
    code: "internal" as const,
    what: "cannot compute the diff",
  };
  // core.fsmonitor could name a program from the repository's config; never start it.
  const safe = ["-c", "core.fsmonitor=false"];
  try {
    await gitOrThrow(run, [...safe, "read-tree", baseSha], opts);
    await gitOrThrow(run, [...safe, "add", "-A"], opts);
    // One after another: each `git diff` may take the index lock to refresh stat data.
    const patch = await gitOrThrow(run, [...safe, "diff", "--cached", ...DIFF_FLAGS, baseSha, "--"], opts);
    const binaryPatch = await gitOrThrow(
      run,
      [...safe, "diff", "--cached", ...DIFF_FLAGS, "--binary", baseSha, "--"],
      opts,
    );
    const numstat = await gitOrThrow(
      run,
      [...safe, "diff", "--cached", "--no-renames", "--no-relative", "--numstat", "-z", baseSha, "--"],
      opts,
    );
    const { changedPaths, diffStats } = parseNumstat(numstat);
    return { patch, binaryPatch, changedPaths, diffStats };
  } finally {
    // For a host runner this removes the scratch index; for a runner inside a sandbox the
    // host path does not exist (force) and the file goes away with the sandbox.
    await fs.promises.rm(indexFile, { force: true });
  }
}

/** Parse `--numstat -z` (without renames): `added\tdeleted\tpath\0` per file; binary as `-\t-`. */
function parseNumstat(out: string): { changedPaths: string[]; diffStats: DiffStats } {
  const changedPaths: string[] = [];
  let additions = 0;
  let deletions = 0;
  for (const record of out.split("\0")) {
    if (!record) continue;
    const m = /^(-|\d+)\t(-|\d+)\t([\s\S]*)$/.exec(record);
    if (!m) throw new EngineError("internal", `unexpected git numstat output: ${JSON.stringify(record.slice(0, 200))}`);
    if (m[1] !== "-") additions += Number(m[1]);
    if (m[2] !== "-") deletions += Number(m[2]);
    changedPaths.push(m[3]!);
  }
  changedPaths.sort();
  return { changedPaths, diffStats: { files: changedPaths.length, additions, deletions } };
}

/**
 * Apply a `binaryPatch` from `computeDiff` to the working tree (not the index), e.g. to
 * start a chained run where the previous one stopped. An empty patch is a no-op.
 * Throws `EngineError("sandbox_failed")` when the patch does not apply.
 */
export async function applyPatch(run: GitRunner, workdir: string, binaryPatch: string): Promise<void> {
  if (binaryPatch.trim() === "") return;
  await gitOrThrow(run, ["apply", "--binary", "--whitespace=nowarn", "-"], {
    cwd: workdir,
    stdin: binaryPatch,
    code: "sandbox_failed",
    what: "the previous run's patch does not apply",
  });
}
