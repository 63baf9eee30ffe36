/**
 * `bwrap` under a root Patchbay: what the agent writes in its workspace must never be root's
 * on the host (issue 12, finding 6). The agent's uid inside maps to the sandbox's host user,
 * so `chmod 4755` on a copied binary leaves at most a setuid file of that unprivileged user.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundledOpencodeBin } from "../../../src/engine/agent/opencode.ts";
import { createBwrapProvider } from "../../../src/engine/sandbox/bwrap.ts";
import type { Sandbox, SandboxProvider } from "../../../src/engine/sandbox/sandbox.ts";
import { makeRepo, tempDir } from "../../helpers.ts";

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));
const isRoot = process.geteuid?.() === 0;

/** Every file under `dir` (symbolic links not followed) with its lstat. */
function walk(dir: string): { file: string; st: fs.Stats }[] {
  const out: { file: string; st: fs.Stats }[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    out.push({ file, st: fs.lstatSync(file) });
    if (entry.isDirectory()) out.push(...walk(file));
  }
  return out;
}

describe.skipIf(!hasBwrap || !isRoot)("bwrap under a root Patchbay", { timeout: 120_000 }, () => {
  let provider: SandboxProvider;
  let sandbox: Sandbox;
  let dataDir: string;

  beforeAll(async () => {
    const repo = makeRepo(tempDir("remote"), "acme/suid", { "README.md": "# suid\n" });
    dataDir = tempDir("bwrap-root");
    provider = await createBwrapProvider({ dataDir, opencodeBin: bundledOpencodeBin(), killGraceMs: 500 });
    sandbox = await provider.create({
      runId: "run_suid",
      ownerId: "o",
      repository: { fullName: "acme/suid", cloneUrl: `${repo.baseUrl}/acme/suid.git` },
    });
  });
  afterAll(async () => {
    await sandbox?.kill();
    await provider?.close?.();
  });

  it("an agent's chmod 4755 on a copied binary leaves no setuid-root file on the host", async () => {
    const res = await sandbox.exec(["sh", "-c", "cp /usr/bin/id suid-id && chmod 4755 suid-id && ./suid-id -u"]);
    expect(res.exitCode).toBe(0);
    const workspace = path.join(dataDir, "sandboxes", sandbox.id, "repo");
    const made = fs.statSync(path.join(workspace, "suid-id"));
    expect(made.uid).not.toBe(0);
    const suidRoot = walk(workspace)
      .filter(({ st }) => st.uid === 0 && (st.mode & 0o6000) !== 0)
      .map(({ file }) => file);
    expect(suidRoot).toEqual([]);
  });

  it("nothing in the sandbox's writable directories is root's on the host", async () => {
    await sandbox.exec(["sh", "-c", "echo x > /tmp/t && echo y > $HOME/h && mkdir -p d && echo z > d/f"]);
    const root = path.join(dataDir, "sandboxes", sandbox.id);
    const rootOwned = ["repo", "home", "tmp"]
      .flatMap((d) => [{ file: path.join(root, d), st: fs.lstatSync(path.join(root, d)) }, ...walk(path.join(root, d))])
      .filter(({ st }) => st.uid === 0)
      .map(({ file }) => file);
    expect(rootOwned).toEqual([]);
    // The checkout stays a working repository for the agent's git.
    expect((await sandbox.exec(["git", "status", "--porcelain"])).stdout).toContain("suid-id");
  });

  it("the sandbox user can reach its sandbox but nothing else in the data dir", () => {
    const asSandboxUser = (...argv: string[]) =>
      spawnSync(argv[0]!, argv.slice(1), { uid: 65534, gid: 65534, cwd: "/" }).status;
    expect(asSandboxUser("test", "-r", path.join(dataDir, "sandboxes", sandbox.id, "repo", "README.md"))).toBe(0);
    expect(asSandboxUser("ls", dataDir)).not.toBe(0);
    expect(asSandboxUser("ls", path.join(dataDir, "sandboxes"))).not.toBe(0);
    expect(asSandboxUser("ls", path.join(dataDir, "mirrors"))).not.toBe(0);
    expect(fs.readdirSync(path.join(dataDir, "mirrors")).length).toBeGreaterThan(0);
  });
});
