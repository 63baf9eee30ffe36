/** Shared test helpers: temp dirs under the suite root, git repositories, waiting. */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** A fresh directory under the per-suite root (checked for leftover processes at the end). */
export function tempDir(prefix = "t"): string {
  const root = process.env.PATCHBAY_TEST_ROOT ?? path.join(os.tmpdir(), "patchbay-test-adhoc");
  fs.mkdirSync(root, { recursive: true });
  return fs.mkdtempSync(path.join(root, `${prefix}-`));
}

const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: "Test",
  GIT_AUTHOR_EMAIL: "test@example.com",
  GIT_COMMITTER_NAME: "Test",
  GIT_COMMITTER_EMAIL: "test@example.com",
  GIT_CONFIG_NOSYSTEM: "1",
};

export function git(cwd: string, ...args: string[]): string {
  return execFileSync("git", args, { cwd, env: GIT_ENV, encoding: "utf8" }).trim();
}

/**
 * Create a bare repository `<base>/<owner>/<name>.git` with the given files committed on
 * `main`, so that `PATCHBAY_GIT_BASE_URL=file://<base>` serves it. Returns the base dir.
 */
export function makeRepo(
  base: string,
  fullName: string,
  files: Record<string, string>,
  opts: { branches?: Record<string, Record<string, string>> } = {},
): { base: string; baseUrl: string; bare: string; headSha: string } {
  const bare = path.join(base, `${fullName}.git`);
  fs.mkdirSync(path.dirname(bare), { recursive: true });
  const work = fs.mkdtempSync(path.join(base, "work-"));
  git(work, "init", "-q", "-b", "main");
  for (const [file, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(work, file)), { recursive: true });
    fs.writeFileSync(path.join(work, file), content);
  }
  git(work, "add", "-A");
  git(work, "commit", "-q", "-m", "initial");
  const headSha = git(work, "rev-parse", "HEAD");
  for (const [branch, bfiles] of Object.entries(opts.branches ?? {})) {
    git(work, "checkout", "-q", "-b", branch, "main");
    for (const [file, content] of Object.entries(bfiles)) fs.writeFileSync(path.join(work, file), content);
    git(work, "add", "-A");
    git(work, "commit", "-q", "-m", `on ${branch}`);
    git(work, "checkout", "-q", "main");
  }
  git(base, "clone", "-q", "--bare", work, bare);
  fs.rmSync(work, { recursive: true, force: true });
  return { base, baseUrl: `file://${base}`, bare, headSha };
}

/**
 * Wait until `fn` returns something truthy. Checks back off from `intervalMs` (default 50 ms)
 * to `maxIntervalMs` (default 1 s), so a slow condition on a loaded machine costs a check a
 * second, not twenty. Default bound 60 s; pass more for anything that waits on an OpenCode turn.
 * For HTTP resources, use `pollHttp` (test/support/poll.ts): it also honours 429 Retry-After.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; maxIntervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let interval = opts.intervalMs ?? 50;
  const maxInterval = Math.max(interval, opts.maxIntervalMs ?? 1000);
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? "condition"}`);
    await new Promise((r) => setTimeout(r, Math.min(interval, Math.max(0, deadline - Date.now()) + 1)));
    interval = Math.min(maxInterval, interval * 1.5);
  }
}

/** PIDs of processes whose working directory is `dir` or below it (Linux `/proc`), optionally only those whose command line matches. */
export function processesUnder(dir: string, command?: RegExp): number[] {
  return fs.readdirSync("/proc").flatMap((entry) => {
    if (!/^\d+$/.test(entry)) return [];
    try {
      const cwd = fs.readlinkSync(`/proc/${entry}/cwd`);
      if (cwd !== dir && !cwd.startsWith(dir + path.sep)) return [];
      if (command && !command.test(fs.readFileSync(`/proc/${entry}/cmdline`, "utf8"))) return [];
      return [Number(entry)];
    } catch (e) {
      // The process ended while we looked (ENOENT, ESRCH), or is not ours to read (EACCES).
      if (["ENOENT", "ESRCH", "EACCES"].includes((e as NodeJS.ErrnoException).code ?? "")) return [];
      throw e;
    }
  });
}

/** PIDs of `opencode` processes working under `dir` (a data dir, or one run's sandbox). */
export function opencodeUnder(dir: string): number[] {
  return processesUnder(dir, /opencode/);
}

/** Whether bubblewrap runs here with the namespaces the `bwrap` provider needs (suites skip, not fail, without). */
export function bwrapWorks(): boolean {
  try {
    execFileSync("bwrap", ["--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "true"], { stdio: "pipe" });
    return true;
  } catch {
    return false;
  }
}

/**
 * What the embedded store's database holds on disk (store.db and its WAL) as text, for
 * checks that a secret never reaches it: records are JSON, stored as UTF-8 in the pages.
 */
export function storeDbText(dataDir: string): string {
  return ["store.db", "store.db-wal"]
    .map((f) => path.join(dataDir, f))
    .filter((f) => fs.existsSync(f))
    .map((f) => fs.readFileSync(f).toString("utf8"))
    .join("\n");
}
