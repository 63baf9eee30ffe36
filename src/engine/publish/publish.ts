/**
 * Publishing: a run's changes as a commit on its branch and a draft pull request.
 *
 * Everything happens engine-side, in a scratch repository Patchbay owns, never in the
 * agent's workspace: the agent can write its `.git/config` and hooks (a proxy, an
 * `insteadOf` redirect, a pre-push hook), any of which would hand it a token used there.
 * The scratch repository fetches the base commit (and the branch, when it exists), builds
 * the tree "base + the run's cumulative patch" in a temporary index, commits it on top of
 * the branch, and pushes. The credential rides on each command's environment
 * (`credentialEnv`), so it is in no file, URL or argument.
 *
 * What a publish may touch is scoped: a branch that already exists on the remote is pushed to
 * only when Patchbay created it for this run or its chain (`ownedBranch`, or the run's own
 * `patchbay/<run id>`) or the request opted in (`allowExistingBranch`), else branch_not_owned;
 * a commit that changes `.github/workflows/` (code that runs with the repository's secrets)
 * is pushed only when the server allows it, else workflow_change_refused.
 *
 * Then the pull request: an open one for the branch is looked up first, so a publish retried
 * after a crash (branch pushed, PR not recorded) finds it instead of opening a second; it is
 * updated, or a draft is created.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import {
  createHostGit,
  credentialEnv,
  gitOrThrow,
  hostGitOptions,
  scrubCredential,
  validateBranchName,
  type GitRunner,
} from "../git/git.ts";
import type { PublishingClient, RepositoryAccess } from "../github/access.ts";
import { toGitHubError } from "../github/errors.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type { DiffStats, DraftPullRequest, RepositoryRef } from "../run/schema.ts";
import type { GitCredential } from "../sandbox/sandbox.ts";
import { commitMessage, pullRequestBody, pullRequestTitle } from "./pull-request-text.ts";

/** What to publish: one run's state after a turn. */
export interface PublishRequest {
  runId: string;
  repository: RepositoryRef;
  /** The commit the run's workspace started from. */
  baseSha: string;
  /** The ref that was checked out (the pull request's base). */
  baseRef: string;
  /** `publish.branch` of the run; default `patchbay/<run id>`. */
  branch?: string;
  /** The branch Patchbay created for this run or its chain: it may exist without `allowExistingBranch`. */
  ownedBranch?: string;
  /** The request's opt-in to push onto an existing branch Patchbay did not create. */
  allowExistingBranch?: boolean;
  /** The run's cumulative patch against `baseSha`, with binary contents (`computeDiff().binaryPatch`). */
  binaryPatch: string;
  /** Every prompt of the run, oldest first. */
  prompts: string[];
  summary: string | null;
  diffStats: DiffStats | null;
  changedPaths: string[];
  signal?: AbortSignal;
}

export type PublishResult =
  | {
      status: "published";
      branch: string;
      draftPullRequest: DraftPullRequest;
      /** True when this publish opened the pull request (false: an open one was updated). */
      created: boolean;
      /** False when the branch already held exactly these changes (no new commit). */
      committed: boolean;
      /** True when this publish created the branch on the remote (Patchbay owns it from then on). */
      branchCreated: boolean;
    }
  /** Nothing to publish: the run changed nothing and no branch exists yet. */
  | { status: "skipped"; branch: string; reason: string };

export interface Publisher {
  /**
   * Refuse a publish request before a run starts: no credentials (`publish_not_configured`),
   * or a branch that is not a valid name or is the repository's main line (`invalid_ref`).
   */
  check(input: { branch?: string; repository: RepositoryRef; defaultBranch?: string; baseRef?: string }): Promise<void>;
  /** Commit, push, and open or update the draft pull request. Throws EngineError (see module doc). */
  publish(req: PublishRequest): Promise<PublishResult>;
}

export interface PublisherOptions {
  access: RepositoryAccess;
  config: Pick<Config, "gitBaseUrl" | "dataDir" | "hostPath" | "hostProxyEnv" | "publishAllowWorkflows">;
  log?: Logger;
  /** Runs git on the host. Default: `createHostGit` with HOME at `<dataDir>/git-home`. */
  git?: GitRunner;
  /** Where scratch repositories are made. Default `<dataDir>/publish`. */
  workRoot?: string;
  /** Longest a fetch or push may take. Default 10 minutes. */
  timeoutMs?: number;
}

/** The fields of a pull request publishing records. */
interface PullSummary {
  number: number;
  html_url: string;
  base: { ref: string };
}
const pullSummary = (p: PullSummary): PullSummary => ({
  number: p.number,
  html_url: p.html_url,
  base: { ref: p.base.ref },
});

/** Branch names a publish never pushes to, whatever the repository calls its default. */
const MAIN_LINES = new Set(["main", "master"]);

/** Where GitHub Actions reads workflows from; `.github` itself too, should it be a file or a symlink. */
const isWorkflowPath = (p: string) =>
  p === ".github" || p === ".github/workflows" || p.startsWith(".github/workflows/");

/** The branch a run publishes to. */
export function publishBranch(runId: string, branch?: string): string {
  return branch ?? `patchbay/${runId}`;
}

/** Create the publisher. */
export function createPublisher(opts: PublisherOptions): Publisher {
  const log = opts.log ?? silentLogger;
  const git = opts.git ?? createHostGit(hostGitOptions(opts.config));
  const workRoot = opts.workRoot ?? path.join(opts.config.dataDir, "publish");
  const timeoutMs = opts.timeoutMs ?? 10 * 60_000;

  async function checkBranch(branch: string, guarded: (string | undefined)[]): Promise<void> {
    await validateBranchName(git, branch);
    if (MAIN_LINES.has(branch) || guarded.includes(branch)) {
      throw new EngineError(
        "invalid_ref",
        `publish.branch ${JSON.stringify(branch)} is the repository's main line; Patchbay publishes to a branch of its own`,
        { ref: branch },
      );
    }
  }

  /** Run git; on failure classify the reason (GitHub's own words) and scrub the credential. */
  async function remoteGit(
    args: string[],
    o: { cwd: string; credential: GitCredential; url: string; what: string; signal?: AbortSignal },
  ): Promise<string> {
    const res = await git(args, {
      cwd: o.cwd,
      env: credentialEnv(o.credential, o.url),
      timeoutMs,
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (res.exitCode === 0) return res.stdout;
    const text = scrubCredential(res.timedOut ? "git timed out" : res.stderr, o.credential);
    const reason = text
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !/^To |^hint:/.test(l))
      .join("; ")
      .slice(0, 1500);
    if (/GH006|protected branch/i.test(text))
      throw new EngineError("branch_protected", `${o.what}: the branch is protected (${reason})`);
    if (
      /error: 403|returned error: 403|Permission to .* denied|permission denied|write access .* not granted/i.test(text)
    ) {
      throw new EngineError("permission_denied", `${o.what}: no permission (${reason})`);
    }
    if (/Authentication failed|returned error: 401|could not read Username/i.test(text)) {
      throw new EngineError("permission_denied", `${o.what}: the git server rejected the credentials (${reason})`);
    }
    if (/non-fast-forward|fetch first|\[rejected\]/i.test(text)) {
      throw new EngineError(
        "publish_failed",
        `${o.what}: the branch moved on the remote while publishing; publish again (${reason})`,
      );
    }
    throw new EngineError("publish_failed", `${o.what}: ${reason || `git exited with code ${res.exitCode}`}`);
  }

  async function findOpenPull(
    client: PublishingClient,
    repo: RepositoryRef,
    branch: string,
  ): Promise<PullSummary | undefined> {
    try {
      const { data } = await client.octokit.rest.pulls.list({
        owner: repo.owner,
        repo: repo.name,
        head: `${repo.owner}:${branch}`,
        state: "open",
        per_page: 5,
      });
      return data[0] && pullSummary(data[0]);
    } catch (e) {
      throw toGitHubError(e, `looking for an open pull request for ${branch}`);
    }
  }

  return {
    async check(input) {
      if (!opts.access.canPublish) {
        throw new EngineError(
          "publish_not_configured",
          "publish.mode draft_pr needs a GitHub App (GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY) or GITHUB_TOKEN on the server",
        );
      }
      if (input.branch !== undefined) await checkBranch(input.branch, [input.defaultBranch, input.baseRef]);
    },

    async publish(req) {
      const branch = publishBranch(req.runId, req.branch);
      const repo = req.repository;
      if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(req.baseSha))
        throw new EngineError("internal", `base ${JSON.stringify(req.baseSha)} is not a full commit id`);
      const client = await opts.access.forPublishing(repo);
      await checkBranch(branch, [client.defaultBranch, req.baseRef]);
      // A pull request's base must be a branch: a run started from a commit id targets the default branch.
      const base = /^[0-9a-f]{7,64}$/.test(req.baseRef) && client.defaultBranch ? client.defaultBranch : req.baseRef;
      const url = `${opts.config.gitBaseUrl}/${repo.fullName}.git`;
      const plog = log.child({ runId: req.runId, repository: repo.fullName, branch });
      const text = {
        runId: req.runId,
        prompts: req.prompts,
        summary: req.summary,
        diffStats: req.diffStats,
        changedPaths: req.changedPaths,
      };

      fs.mkdirSync(workRoot, { recursive: true, mode: 0o700 });
      const scratch = path.join(workRoot, `${req.runId}-${randomBytes(4).toString("hex")}.git`);
      const remote = {
        cwd: scratch,
        credential: client.credential,
        url,
        ...(req.signal ? { signal: req.signal } : {}),
      };
      const local = { cwd: scratch, code: "publish_failed" as const, ...(req.signal ? { signal: req.signal } : {}) };
      let headSha: string;
      let committed = false;
      let branchCreated = false;
      try {
        await gitOrThrow(git, ["init", "--quiet", "--bare", scratch], {
          code: "publish_failed",
          what: "could not make a scratch repository",
        });
        const heads = await remoteGit(["ls-remote", "--heads", "--", url, `refs/heads/${branch}`], {
          ...remote,
          what: `could not read ${repo.fullName}`,
        });
        const remoteHead = /^([0-9a-f]{40,64})\trefs\/heads\//m.exec(heads)?.[1];
        const owned = branch === publishBranch(req.runId) || branch === req.ownedBranch;
        if (remoteHead && !owned && !req.allowExistingBranch) {
          throw new EngineError(
            "branch_not_owned",
            `branch ${branch} already exists on ${repo.fullName} and Patchbay did not create it; publish to a new branch, or set publish.allowExistingBranch to push onto it`,
            { branch },
          );
        }
        // Shallow is enough: the new commit needs its parent's id and the base's tree, and the
        // remote already has both histories.
        await remoteGit(
          ["fetch", "--quiet", "--no-tags", "--depth=1", "--", url, req.baseSha, ...(remoteHead ? [remoteHead] : [])],
          {
            ...remote,
            what: `could not fetch ${repo.fullName}`,
          },
        );

        const index = path.join(scratch, "publish.index");
        const withIndex = { ...local, env: { GIT_INDEX_FILE: index } };
        await gitOrThrow(git, ["read-tree", req.baseSha], { ...withIndex, what: "could not read the base tree" });
        if (req.binaryPatch.trim() !== "") {
          await gitOrThrow(git, ["apply", "--cached", "--binary", "--whitespace=nowarn", "-"], {
            ...withIndex,
            stdin: req.binaryPatch,
            what: "the run's patch does not apply to its base",
          });
        }
        const tree = (await gitOrThrow(git, ["write-tree"], { ...withIndex, what: "could not write the tree" })).trim();
        const parent = remoteHead ?? req.baseSha;
        const parentTree = (
          await gitOrThrow(git, ["rev-parse", `${parent}^{tree}`], { ...local, what: "could not read the branch" })
        ).trim();
        if (tree === parentTree) {
          if (!remoteHead) return { status: "skipped", branch, reason: "the run has no changes to publish" };
          headSha = remoteHead; // the branch already holds exactly these changes
        } else {
          if (!opts.config.publishAllowWorkflows) {
            const changed = await gitOrThrow(
              git,
              ["diff-tree", "-r", "-z", "--no-renames", "--name-only", parentTree, tree],
              {
                ...local,
                what: "could not list the changed files",
              },
            );
            const workflows = changed.split("\0").filter(isWorkflowPath);
            if (workflows.length) {
              throw new EngineError(
                "workflow_change_refused",
                `the changes touch GitHub Actions workflows (${workflows.slice(0, 5).join(", ")}); this server does not publish those (PATCHBAY_PUBLISH_ALLOW_WORKFLOWS)`,
                { paths: workflows.slice(0, 20) },
              );
            }
          }
          headSha = (
            await gitOrThrow(git, ["commit-tree", tree, "-p", parent, "-F", "-"], {
              ...local,
              stdin: commitMessage(text),
              what: "could not commit",
            })
          ).trim();
          // Never forced: if someone moved the branch since ls-remote, the push is refused.
          await remoteGit(["push", "--quiet", "--no-verify", "--", url, `${headSha}:refs/heads/${branch}`], {
            ...remote,
            what: `could not push ${branch}`,
          });
          committed = true;
          branchCreated = !remoteHead;
          plog.info("pushed", { headSha });
        }
      } finally {
        await fs.promises.rm(scratch, { recursive: true, force: true });
      }

      const title = pullRequestTitle(text);
      const body = pullRequestBody(text);
      let pull: PullSummary | undefined = await findOpenPull(client, repo, branch);
      let created = false;
      if (!pull) {
        try {
          const { data } = await client.octokit.rest.pulls.create({
            owner: repo.owner,
            repo: repo.name,
            head: branch,
            base,
            title,
            body,
            draft: true,
          });
          pull = pullSummary(data);
          created = true;
        } catch (e) {
          const err = toGitHubError(e, `opening the draft pull request for ${branch}`);
          if (err.code !== "pr_exists") throw err;
          // Opened meanwhile (or by a publish whose answer was lost): adopt it if we can see it.
          pull = await findOpenPull(client, repo, branch);
          if (!pull) throw err;
        }
      }
      if (!created) {
        try {
          await client.octokit.rest.pulls.update({
            owner: repo.owner,
            repo: repo.name,
            pull_number: pull.number,
            body,
          });
        } catch (e) {
          throw toGitHubError(e, `updating pull request #${pull.number}`);
        }
      }
      plog.info(created ? "opened draft pull request" : "updated pull request", { number: pull.number });
      return {
        status: "published",
        branch,
        created,
        committed,
        branchCreated,
        draftPullRequest: { number: pull.number, url: pull.html_url, branch, headSha, base: pull.base.ref },
      };
    },
  };
}
