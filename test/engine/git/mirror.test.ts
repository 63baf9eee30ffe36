import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createHostGit } from "../../../src/engine/git/git.ts";
import { checkoutFromMirror, createMirrorCache } from "../../../src/engine/git/mirror.ts";
import { git, makeRepo, tempDir } from "../../helpers.ts";

/** Push one more commit on `branch` of a bare repository. */
function pushCommit(bare: string, branch: string, file: string, content: string): string {
  const work = path.join(tempDir("push"), "w");
  git(path.dirname(work), "clone", "-q", "-b", branch, bare, work);
  fs.writeFileSync(path.join(work, file), content);
  git(work, "add", "-A");
  git(work, "commit", "-q", "-m", `update ${file}`);
  git(work, "push", "-q", "origin", branch);
  return git(work, "rev-parse", "HEAD");
}

function setup() {
  const repo = makeRepo(
    tempDir("remote"),
    "acme/widget",
    { "README.md": "# widget\n" },
    { branches: { next: { "NEXT.md": "next\n" } } },
  );
  const dataDir = tempDir("data");
  const run = createHostGit({ home: tempDir("home") });
  const mirrors = createMirrorCache({ dataDir, run });
  const req = { fullName: "acme/widget", cloneUrl: `${repo.baseUrl}/acme/widget.git` };
  return { repo, dataDir, run, mirrors, req };
}

describe("mirror cache", () => {
  it("clones a bare mirror once, then fetches into the same mirror", async () => {
    const { repo, dataDir, mirrors, req } = setup();
    const dir = await mirrors.withMirror(req, async (d) => d);
    expect(dir).toBe(path.join(dataDir, "mirrors", "acme", "widget.git"));
    expect(git(dir, "rev-parse", "--is-bare-repository")).toBe("true");
    expect(git(dir, "config", "remote.origin.url")).toBe(req.cloneUrl);
    // A marker and the directory's inode survive a fetch but not a fresh clone.
    fs.writeFileSync(path.join(dir, "patchbay-marker"), "x");
    const inode = fs.statSync(dir).ino;

    const newSha = pushCommit(repo.bare, "main", "CHANGELOG.md", "v2\n");
    git(repo.bare, "branch", "-D", "next");
    await mirrors.withMirror(req, async () => undefined);
    expect(fs.existsSync(path.join(dir, "patchbay-marker"))).toBe(true);
    expect(fs.statSync(dir).ino).toBe(inode);
    expect(git(dir, "rev-parse", "refs/heads/main")).toBe(newSha);
    // --prune: a branch deleted upstream is deleted in the mirror too.
    expect(git(dir, "for-each-ref", "--format=%(refname)", "refs/heads")).toBe("refs/heads/main");
  });

  it("follows a change of the remote's default branch", async () => {
    const { repo, mirrors, req } = setup();
    const dir = await mirrors.withMirror(req, async (d) => d);
    expect(git(dir, "symbolic-ref", "HEAD")).toBe("refs/heads/main");
    git(repo.bare, "symbolic-ref", "HEAD", "refs/heads/next");
    await mirrors.withMirror(req, async () => undefined);
    expect(git(dir, "symbolic-ref", "HEAD")).toBe("refs/heads/next");
  });

  it("serialises concurrent requests for the same repository", async () => {
    const { mirrors, req } = setup();
    let inside = 0;
    let maxInside = 0;
    const use = () =>
      mirrors.withMirror(req, async () => {
        inside++;
        maxInside = Math.max(maxInside, inside);
        await new Promise((r) => setTimeout(r, 30));
        inside--;
      });
    // A failure in the middle must not break the chain for the requests after it.
    const failing = mirrors.withMirror(req, async () => {
      throw new Error("boom");
    });
    await Promise.all([use(), use(), failing.catch(() => undefined), use(), use()]);
    expect(maxInside).toBe(1);
    await expect(failing).rejects.toThrow("boom");
  });

  it("reports an unreachable repository as clone_failed and leaves no partial mirror", async () => {
    const { dataDir, mirrors } = setup();
    const token = "ghp_supersecrettoken123";
    const credential = { authorizationHeader: `Bearer ${token}` };
    const err = await mirrors
      .withMirror(
        { fullName: "acme/missing", cloneUrl: `file://${tempDir("nowhere")}/acme/missing.git`, credential },
        async () => undefined,
      )
      .catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "clone_failed",
      message: expect.stringMatching(/^could not clone acme\/missing: fatal: /),
    });
    expect(String((err as Error).message)).not.toContain(token);
    expect(fs.readdirSync(path.join(dataDir, "mirrors", "acme"))).toEqual([]);
  });

  it("refuses a repository name that is not owner/name", () => {
    const { mirrors } = setup();
    for (const bad of ["../etc", "acme/../../x", "/abs/path", "acme/.hidden"]) {
      expect(() => mirrors.pathOf(bad)).toThrow(expect.objectContaining({ code: "invalid_repository" }));
    }
  });
});

describe("checkoutFromMirror", () => {
  it("clones from the mirror without the network and points origin at the real remote", async () => {
    const { repo, run, mirrors, req } = setup();
    const workdir = path.join(tempDir("ws"), "repo");
    const out = await mirrors.withMirror(req, (mirrorDir) =>
      checkoutFromMirror({ run, mirrorDir, workdir, cloneUrl: req.cloneUrl, fullName: req.fullName }),
    );
    expect(out).toEqual({ baseSha: repo.headSha, baseRef: "main", kind: "branch" });
    expect(git(workdir, "remote", "get-url", "origin")).toBe(req.cloneUrl);
    expect(git(workdir, "config", "user.email")).toBe("patchbay@localhost");
  });
});
