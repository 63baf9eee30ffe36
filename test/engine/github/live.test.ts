/**
 * Opt-in, against real GitHub: set PATCHBAY_LIVE_GITHUB_REPO=owner/name and GITHUB_TOKEN (a
 * token that can push to that repository and open pull requests). The test clones the
 * repository, publishes one small change as a draft PR, checks it on GitHub, then closes the
 * PR and deletes its branch. Skipped otherwise.
 * GHES: also set PATCHBAY_GITHUB_API_URL (…/api/v3) and PATCHBAY_GIT_BASE_URL.
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { computeDiff, createHostGit, credentialEnv } from "../../../src/engine/git/git.ts";
import { createRepositoryAccess } from "../../../src/engine/github/access.ts";
import { createPublisher } from "../../../src/engine/publish/publish.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import { tempDir } from "../../helpers.ts";

const repo = process.env.PATCHBAY_LIVE_GITHUB_REPO;
const token = process.env.GITHUB_TOKEN;

describe.skipIf(!repo || !token)("live GitHub (PATCHBAY_LIVE_GITHUB_REPO + GITHUB_TOKEN)", () => {
  it("opens a real draft pull request and closes it again", { timeout: 180_000 }, async () => {
    const dataDir = tempDir("gh-live");
    const config = loadConfig({
      PATCHBAY_DATA_DIR: dataDir,
      GITHUB_TOKEN: token,
      ...(process.env.PATCHBAY_GITHUB_API_URL ? { PATCHBAY_GITHUB_API_URL: process.env.PATCHBAY_GITHUB_API_URL } : {}),
      ...(process.env.PATCHBAY_GIT_BASE_URL ? { PATCHBAY_GIT_BASE_URL: process.env.PATCHBAY_GIT_BASE_URL } : {}),
    });
    const store = await createSqliteStore({ dataDir });
    const access = createRepositoryAccess(config, store);
    const publisher = createPublisher({ access, config });
    const hostGit = createHostGit();
    const runId = `run_live${Date.now().toString(36)}`;
    let cleanup: (() => Promise<void>) | undefined;
    try {
      const resolved = await access.resolve({ fullName: repo! });
      const url = `${config.gitBaseUrl}/${resolved.ref.fullName}.git`;
      const workdir = path.join(dataDir, "ws");
      const clone = await hostGit(["clone", "--quiet", "--depth=1", "--", url, workdir], {
        env: credentialEnv(await access.cloneCredential(resolved.ref), url),
      });
      expect(clone.exitCode, clone.stderr).toBe(0);
      const baseSha = (await hostGit(["rev-parse", "HEAD"], { cwd: workdir })).stdout.trim();
      fs.writeFileSync(
        path.join(workdir, `patchbay-live-${runId}.md`),
        `Patchbay live test ${new Date().toISOString()}\n`,
      );
      const diff = await computeDiff(hostGit, workdir, baseSha);
      const result = await publisher.publish({
        runId,
        repository: resolved.ref,
        baseSha,
        baseRef: resolved.defaultBranch ?? "main",
        binaryPatch: diff.binaryPatch,
        prompts: ["Patchbay live test: add a marker file (closed automatically)"],
        summary: "Live test of draft pull requests; this PR is closed by the test.",
        diffStats: diff.diffStats,
        changedPaths: diff.changedPaths,
      });
      expect(result.status).toBe("published");
      if (result.status !== "published") return;
      const client = await access.forPublishing(resolved.ref);
      const { owner, name } = resolved.ref;
      cleanup = async () => {
        await client.octokit.rest.pulls.update({
          owner,
          repo: name,
          pull_number: result.draftPullRequest.number,
          state: "closed",
        });
        await client.octokit.rest.git.deleteRef({ owner, repo: name, ref: `heads/${result.branch}` });
      };
      const { data: pr } = await client.octokit.rest.pulls.get({
        owner,
        repo: name,
        pull_number: result.draftPullRequest.number,
      });
      expect(pr.draft).toBe(true);
      expect(pr.state).toBe("open");
      expect(pr.head.sha).toBe(result.draftPullRequest.headSha);
    } finally {
      await cleanup?.();
      await store.close();
    }
  });
});
