/**
 * A warm pool's repository entry at the sandbox level: a warm sandbox adopted under its own
 * name holds the repository at its default branch; adopted again for a run it is brought to
 * the run's ref from the mirror as it is now, with nothing left of what the tree held.
 */
import fs from "node:fs";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { bundledOpencodeBin } from "../../../src/engine/agent/opencode.ts";
import { createBwrapProvider } from "../../../src/engine/sandbox/bwrap.ts";
import { createLocalProvider } from "../../../src/engine/sandbox/local.ts";
import type { Sandbox, SandboxProvider, WarmSandbox } from "../../../src/engine/sandbox/sandbox.ts";
import { git, makeRepo, tempDir } from "../../helpers.ts";

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));

const sandboxes: (Sandbox | WarmSandbox)[] = [];
afterEach(async () => {
  await Promise.all(sandboxes.splice(0).map((s) => s.kill()));
});

let seq = 0;
const providers: Record<"local" | "bwrap", (dataDir: string) => Promise<SandboxProvider> | SandboxProvider> = {
  local: (dataDir) => createLocalProvider({ dataDir }),
  bwrap: (dataDir) => createBwrapProvider({ dataDir, opencodeBin: bundledOpencodeBin() }),
};

for (const flavor of ["local", "bwrap"] as const) {
  describe.skipIf(flavor === "bwrap" && !hasBwrap)(`repository entry: ${flavor}`, () => {
    it("is brought to the run's ref from the mirror as it is now, its tree clean, under the run's name where it can be", async () => {
      const remote = tempDir("remote");
      const repo = makeRepo(
        remote,
        "acme/entry",
        { "README.md": "# entry\n" },
        { branches: { feature: { "FEATURE.md": "feature\n" } } },
      );
      const dataDir = tempDir("data");
      const provider = await providers[flavor](dataDir);
      const repository = { fullName: "acme/entry", cloneUrl: `${repo.baseUrl}/acme/entry.git` };
      const warm = await provider.prepare!();
      sandboxes.push(warm);
      const held = await warm.adopt({ runId: warm.id, ownerId: "patchbay", repository });
      expect(held.baseRef).toBe("main");
      expect(held.id).toBe(warm.id);
      // What the entry's tree holds meanwhile (an agent server's stray file) must not reach the run.
      await held.exec(["sh", "-c", "echo stray > STRAY.md && echo changed >> README.md"], { timeoutMs: 30_000 });

      // The remote moves on after the entry was made.
      const work = tempDir("work");
      git(work, "clone", "-q", repo.bare, ".");
      git(work, "checkout", "-q", "feature");
      fs.writeFileSync(path.join(work, "LATER.md"), "later\n");
      git(work, "add", "-A");
      git(work, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "later");
      git(work, "push", "-q", "origin", "feature");
      const featureHead = git(repo.bare, "rev-parse", "refs/heads/feature");

      const runId = `run_entry${++seq}`;
      const s = await warm.adopt({ runId, ownerId: "o", repository, ref: "feature" });
      expect(s.baseRef).toBe("feature");
      expect(s.baseSha).toBe(featureHead);
      const files = await s.exec(
        ["sh", "-c", "ls -A | sort && git status --porcelain && git rev-parse --abbrev-ref HEAD"],
        {
          timeoutMs: 30_000,
        },
      );
      expect(files.stdout.split("\n").filter(Boolean)).toEqual([
        ".git",
        "FEATURE.md",
        "LATER.md",
        "README.md",
        "feature",
      ]);
      // bwrap's workdir is the same inside whatever the directory is called: the run's name.
      // local's processes see host paths, and OpenCode keys its instance by the real one: kept.
      expect(s.id).toBe(flavor === "bwrap" ? runId : warm.id);

      // Another repository is refused.
      const other = await provider.prepare!();
      sandboxes.push(other);
      await other.adopt({ runId: other.id, ownerId: "patchbay", repository });
      await expect(
        other.adopt({ runId: `run_entry${++seq}`, ownerId: "o", repository: { ...repository, fullName: "acme/else" } }),
      ).rejects.toMatchObject({ code: "sandbox_failed" });
    });
  });
}
