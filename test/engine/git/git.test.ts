import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { EngineError } from "../../../src/engine/errors.ts";
import {
  applyPatch,
  computeDiff,
  createHostGit,
  credentialArgs,
  credentialEnv,
  gitOrThrow,
  scrubCredential,
  validateBranchName,
  validateRef,
  type GitRunner,
} from "../../../src/engine/git/git.ts";
import { git, tempDir } from "../../helpers.ts";

/** A working repository with a text file, a file to delete, a binary file and a .gitignore. */
function workRepo(): { dir: string; baseSha: string } {
  const dir = tempDir("work");
  git(dir, "init", "-q", "-b", "main");
  fs.writeFileSync(path.join(dir, "a.txt"), "one\ntwo\nthree\n");
  fs.writeFileSync(path.join(dir, "gone.txt"), "bye\n");
  fs.writeFileSync(path.join(dir, ".gitignore"), "ignored/\n");
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", "base");
  return { dir, baseSha: git(dir, "rev-parse", "HEAD") };
}

const PNG_BYTES = Buffer.from([
  0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0xff,
]);

/** Modify a.txt, delete gone.txt, add new.txt and a binary pic.bin, and an ignored file. */
function makeChanges(dir: string): void {
  fs.writeFileSync(path.join(dir, "a.txt"), "one\nTWO\nthree\n");
  fs.rmSync(path.join(dir, "gone.txt"));
  fs.writeFileSync(path.join(dir, "new.txt"), "hello\nworld\n");
  fs.writeFileSync(path.join(dir, "pic.bin"), PNG_BYTES);
  fs.mkdirSync(path.join(dir, "ignored"));
  fs.writeFileSync(path.join(dir, "ignored", "junk.txt"), "not part of the diff\n");
}

const short = (dir: string, file: string, content: string | Buffer) => {
  const p = path.join(tempDir("blob"), file);
  fs.writeFileSync(p, content);
  return git(dir, "hash-object", p).slice(0, 7);
};

function expectedPatch(dir: string): string {
  return [
    "diff --git a/a.txt b/a.txt",
    `index ${short(dir, "a", "one\ntwo\nthree\n")}..${short(dir, "a", "one\nTWO\nthree\n")} 100644`,
    "--- a/a.txt",
    "+++ b/a.txt",
    "@@ -1,3 +1,3 @@",
    " one",
    "-two",
    "+TWO",
    " three",
    "diff --git a/gone.txt b/gone.txt",
    "deleted file mode 100644",
    `index ${short(dir, "g", "bye\n")}..0000000`,
    "--- a/gone.txt",
    "+++ /dev/null",
    "@@ -1 +0,0 @@",
    "-bye",
    "diff --git a/new.txt b/new.txt",
    "new file mode 100644",
    `index 0000000..${short(dir, "n", "hello\nworld\n")}`,
    "--- /dev/null",
    "+++ b/new.txt",
    "@@ -0,0 +1,2 @@",
    "+hello",
    "+world",
    "diff --git a/pic.bin b/pic.bin",
    "new file mode 100644",
    `index 0000000..${short(dir, "p", PNG_BYTES)}`,
    "Binary files /dev/null and b/pic.bin differ",
    "",
  ].join("\n");
}

describe("git runner", () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  });

  it("ignores inherited GIT_* variables and user config, and commits as Patchbay", async () => {
    const { dir } = workRepo();
    const home = tempDir("home");
    // A hostile environment: another repository, and a user config that would rewrite commands.
    process.env.GIT_DIR = "/nonexistent";
    process.env.GIT_AUTHOR_NAME = "Intruder";
    const run = createHostGit({ home });
    const gitDir = await run(["rev-parse", "--absolute-git-dir"], { cwd: dir });
    expect(gitDir).toMatchObject({ exitCode: 0, stdout: `${fs.realpathSync(dir)}/.git\n` });
    const ident = await run(["var", "GIT_AUTHOR_IDENT"], { cwd: dir });
    expect(ident.stdout).toMatch(/^Patchbay <patchbay@localhost> /);
    const global = await run(["config", "--global", "--list"], { cwd: dir });
    expect(global.exitCode).not.toBe(0); // no ~/.gitconfig in the private HOME
  });

  it("kills git at the timeout and says so", async () => {
    const run = createHostGit({ home: tempDir("home") });
    const started = Date.now();
    // A shell alias stands in for a hung fetch; its `sleep` child must die with it (process group),
    // or the open pipe would keep the call waiting for 30 s.
    const res = await run(["-c", "alias.hang=!sleep 30", "hang"], { timeoutMs: 300 });
    expect(res.timedOut).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe("validateRef", () => {
  const run = createHostGit({ home: tempDir("home") });

  it.each(["main", "feature/login-form", "v1.2.3", "0123abcd", "refs/heads/main"])("accepts %s", async (ref) => {
    await expect(validateRef(run, ref)).resolves.toBeUndefined();
  });

  it.each([
    "--upload-pack=x",
    "-b",
    "a..b",
    "refs/heads/x;rm -rf /",
    "x y",
    "a@{1}",
    "x.lock",
    "a/",
    "HEAD~1",
    "a:b",
    "",
  ])("refuses %j before git runs", async (ref) => {
    const calls: string[][] = [];
    const spy: GitRunner = async (args) => {
      calls.push(args);
      return { exitCode: 0, stdout: "", stderr: "" };
    };
    const err = await validateRef(spy, ref).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe("invalid_ref");
    expect(calls).toEqual([]);
  });

  it("refuses what only git check-ref-format knows to be invalid", async () => {
    await expect(validateRef(run, "a//b")).rejects.toMatchObject({ code: "invalid_ref" });
    await expect(validateRef(run, "a/.hidden")).rejects.toMatchObject({ code: "invalid_ref" });
  });
});

describe("validateBranchName", () => {
  const run = createHostGit({ home: tempDir("home") });

  it("accepts a publish branch", async () => {
    await expect(validateBranchName(run, "patchbay/fix-login-1")).resolves.toBeUndefined();
  });

  it.each(["HEAD", "refs/heads/x", "-x", "a..b", "a//b"])("refuses %j", async (name) => {
    await expect(validateBranchName(run, name)).rejects.toMatchObject({ code: "invalid_ref" });
  });
});

describe("credentials", () => {
  const token = "ghs_0123456789abcdefSECRET";
  const credential = { authorizationHeader: `Basic ${Buffer.from(`x-access-token:${token}`).toString("base64")}` };

  it("are given per command, scoped to the remote's origin", () => {
    expect(credentialArgs(credential, "https://github.com/acme/widget.git")).toEqual([
      "-c",
      `http.https://github.com/.extraHeader=Authorization: ${credential.authorizationHeader}`,
    ]);
    expect(credentialEnv(credential, "https://github.com/acme/widget.git")).toEqual({
      GIT_CONFIG_COUNT: "1",
      GIT_CONFIG_KEY_0: "http.https://github.com/.extraHeader",
      GIT_CONFIG_VALUE_0: `Authorization: ${credential.authorizationHeader}`,
    });
    expect(credentialArgs(undefined)).toEqual([]);
    expect(credentialEnv(undefined)).toEqual({});
  });

  it("are scrubbed from git's error messages", async () => {
    const header = credential.authorizationHeader;
    const b64 = header.slice("Basic ".length);
    const text = `fatal: header ${header}; token ${token}; b64 ${b64}; url https://x-access-token:${token}@github.com/a/b`;
    const out = scrubCredential(text, credential);
    expect(out).not.toContain(token);
    expect(out).not.toContain(b64);
    expect(out).toContain("https://***@github.com/a/b");

    // git echoing the token must not reach the EngineError either.
    const echo: GitRunner = async () => ({
      exitCode: 128,
      stdout: "",
      stderr: `fatal: could not read from https://github.com (${token})\n`,
    });
    const err = await gitOrThrow(echo, ["fetch"], {
      code: "clone_failed",
      what: "could not fetch acme/widget",
      credential,
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "clone_failed" });
    expect((err as EngineError).message).toBe(
      "could not fetch acme/widget: fatal: could not read from https://github.com ([redacted])",
    );
  });
});

describe("computeDiff", () => {
  const run = createHostGit({ home: tempDir("home") });

  it("is exactly right for a modified, a new, a deleted and a binary file, ignoring .gitignored files", async () => {
    const { dir, baseSha } = workRepo();
    makeChanges(dir);
    const diff = await computeDiff(run, dir, baseSha);
    expect(diff.patch).toBe(expectedPatch(dir));
    expect(diff.changedPaths).toEqual(["a.txt", "gone.txt", "new.txt", "pic.bin"]);
    expect(diff.diffStats).toEqual({ files: 4, additions: 3, deletions: 2 });
    expect(diff.binaryPatch).toContain("GIT binary patch");
    expect(diff.binaryPatch).not.toContain("ignored/");
  });

  it("leaves the real index and HEAD alone", async () => {
    const { dir, baseSha } = workRepo();
    makeChanges(dir);
    git(dir, "add", "new.txt"); // the agent's own staging must survive
    const before = {
      head: git(dir, "rev-parse", "HEAD"),
      staged: git(dir, "diff", "--cached", "--name-only"),
      status: git(dir, "status", "--porcelain"),
    };
    await computeDiff(run, dir, baseSha);
    expect({
      head: git(dir, "rev-parse", "HEAD"),
      staged: git(dir, "diff", "--cached", "--name-only"),
      status: git(dir, "status", "--porcelain"),
    }).toEqual(before);
    expect(fs.readdirSync(path.join(dir, ".git")).filter((f) => f.startsWith("patchbay-diff"))).toEqual([]);
  });

  it("diffs against the base even after the agent committed", async () => {
    const { dir, baseSha } = workRepo();
    makeChanges(dir);
    git(dir, "add", "-A");
    git(dir, "commit", "-q", "-m", "agent's commit");
    fs.appendFileSync(path.join(dir, "new.txt"), "again\n");
    const diff = await computeDiff(run, dir, baseSha);
    expect(diff.changedPaths).toEqual(["a.txt", "gone.txt", "new.txt", "pic.bin"]);
    expect(diff.diffStats).toEqual({ files: 4, additions: 4, deletions: 2 });
    expect(diff.patch).toContain("+again\n");
  });

  it("is empty when nothing changed", async () => {
    const { dir, baseSha } = workRepo();
    fs.mkdirSync(path.join(dir, "ignored"));
    fs.writeFileSync(path.join(dir, "ignored", "x"), "x");
    expect(await computeDiff(run, dir, baseSha)).toEqual({
      patch: "",
      binaryPatch: "",
      changedPaths: [],
      diffStats: { files: 0, additions: 0, deletions: 0 },
    });
  });

  it("refuses a base that is not a commit id", async () => {
    const { dir } = workRepo();
    await expect(computeDiff(run, dir, "--output=/tmp/x")).rejects.toMatchObject({ code: "internal" });
  });
});

describe("applyPatch", () => {
  const run = createHostGit({ home: tempDir("home") });

  it("re-creates the changes, binary included, in a fresh checkout", async () => {
    const { dir, baseSha } = workRepo();
    makeChanges(dir);
    const diff = await computeDiff(run, dir, baseSha);

    const fresh = path.join(tempDir("fresh"), "repo");
    git(path.dirname(fresh), "clone", "-q", dir, fresh);
    git(fresh, "checkout", "-q", "--detach", baseSha);
    await applyPatch(run, fresh, diff.binaryPatch);

    expect(fs.readFileSync(path.join(fresh, "pic.bin"))).toEqual(PNG_BYTES);
    expect(fs.existsSync(path.join(fresh, "gone.txt"))).toBe(false);
    const again = await computeDiff(run, fresh, baseSha);
    expect(again).toEqual(diff);
  });

  it("is a no-op for an empty patch and fails clearly for one that does not apply", async () => {
    const { dir, baseSha } = workRepo();
    await applyPatch(run, dir, "");
    makeChanges(dir);
    const diff = await computeDiff(run, dir, baseSha);
    // Applying the same patch twice cannot work: the files are already changed.
    await expect(applyPatch(run, dir, diff.binaryPatch)).rejects.toMatchObject({
      code: "sandbox_failed",
      message: expect.stringMatching(/does not apply: error:/),
    });
  });
});
