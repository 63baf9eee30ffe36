/**
 * Publishing against a real git server (git http-backend, token required) and the GitHub
 * API stand-in: commit and push with an installation token, draft PR, follow-ups, crash
 * recovery and every failure. Workspaces are real clones changed on disk; the patch comes
 * from the engine's own `computeDiff`, as after a turn.
 */
import { generateKeyPairSync } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig, type Config } from "../../../src/config.ts";
import { computeDiff, createHostGit, credentialEnv } from "../../../src/engine/git/git.ts";
import { createRepositoryAccess, type RepositoryAccess } from "../../../src/engine/github/access.ts";
import { createPublisher, type Publisher, type PublishRequest } from "../../../src/engine/publish/publish.ts";
import type { RepositoryRef } from "../../../src/engine/run/schema.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { startGitHttpServer, type GitHttpServer } from "../../fixtures/git-http-server.ts";
import { startGitHubApiStub, type GitHubApiStub } from "../../fixtures/github-api-stub.ts";
import { git, makeRepo, tempDir } from "../../helpers.ts";

const APP_ID = "1234";
const hostGit = createHostGit();

let gitRoot: string;
let baseSha: string;
let gitServer: GitHttpServer;
let stub: GitHubApiStub;
let store: RunStore;
let config: Config;
let access: RepositoryAccess;
let publisher: Publisher;
let web: RepositoryRef;

beforeAll(async () => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    // PKCS#1 is the format GitHub hands out for App keys.
    privateKeyEncoding: { type: "pkcs1", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  gitRoot = tempDir("gh-repos");
  baseSha = makeRepo(gitRoot, "acme/web", { "README.md": "# Web\n", "src/app.js": "export const x = 1;\n" }).headSha;
  makeRepo(gitRoot, "acme/locked", { "README.md": "# Locked\n" });
  makeRepo(gitRoot, "acme/elsewhere", { "README.md": "# Elsewhere\n" });
  stub = await startGitHubApiStub({
    appId: APP_ID,
    appPublicKey: publicKey,
    gitRoot,
    repositories: [
      { id: 101, fullName: "acme/web", installationId: 42 },
      { id: 102, fullName: "acme/locked", installationId: 42 },
      { id: 103, fullName: "acme/elsewhere" },
    ],
  });
  gitServer = await startGitHttpServer({
    root: gitRoot,
    // acme/locked: the token may read but not push (as with a read-only installation).
    authorize: (token, repo, service) =>
      stub.tokenAllows(token, repo) && !(repo === "acme/locked" && service === "receive-pack"),
  });
  const dataDir = tempDir("gh-data");
  config = loadConfig({
    PATCHBAY_DATA_DIR: dataDir,
    PATCHBAY_GIT_BASE_URL: gitServer.baseUrl,
    PATCHBAY_GITHUB_API_URL: stub.baseUrl,
    GITHUB_APP_ID: APP_ID,
    // As pasted into an .env file: one line with literal "\n".
    GITHUB_APP_PRIVATE_KEY: privateKey.replace(/\n/g, "\\n"),
  });
  store = await createSqliteStore({ dataDir });
  access = createRepositoryAccess(config, store, { maxRateLimitWaitSeconds: 5 });
  publisher = createPublisher({ access, config });
  web = (await access.resolve({ fullName: "acme/web" })).ref;
});

afterAll(async () => {
  await store?.close();
  await gitServer?.close();
  await stub?.close();
});

/** A real clone of `fullName` from the git server, with `files` written into it. */
async function changedWorkspace(fullName: string, files: Record<string, string>, from?: string): Promise<string> {
  const dir = from ?? path.join(tempDir("ws"), "repo");
  if (!from) {
    const url = `${gitServer.baseUrl}/${fullName}.git`;
    const credential = await access.cloneCredential({
      fullName,
      owner: fullName.split("/")[0]!,
      name: fullName.split("/")[1]!,
    });
    const res = await hostGit(["clone", "--quiet", "--", url, dir], { env: credentialEnv(credential, url) });
    expect(res.stderr).toBe("");
    expect(res.exitCode).toBe(0);
  }
  for (const [file, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), content);
  }
  return dir;
}

async function request(
  runId: string,
  repo: RepositoryRef,
  workdir: string,
  extra: Partial<PublishRequest> = {},
): Promise<PublishRequest> {
  const sha = git(workdir, "rev-parse", "HEAD");
  const diff = await computeDiff(hostGit, workdir, sha);
  return {
    runId,
    repository: repo,
    baseSha: sha,
    baseRef: "main",
    binaryPatch: diff.binaryPatch,
    prompts: ["Add release notes\nwith details"],
    summary: "Added NOTES.md.",
    diffStats: diff.diffStats,
    changedPaths: diff.changedPaths,
    ...extra,
  };
}

const bare = (fullName: string) => path.join(gitRoot, `${fullName}.git`);
const pullPosts = (branch: string) =>
  stub.requests.filter((r) => r.method === "POST" && r.path.endsWith("/pulls") && r.body?.head === branch);

describe("repository access", () => {
  it("an App resolves a repository with a JWT installation lookup and a token scoped to that one repository", async () => {
    const lookup = stub.requests.find((r) => r.method === "GET" && r.path === "/repos/acme/web/installation")!;
    expect(lookup.authorization).toMatch(/^bearer eyJ[\w-]+\.[\w-]+\.[\w-]+$/i);
    const mint = stub.requests.find((r) => r.method === "POST" && r.path === "/app/installations/42/access_tokens")!;
    expect(mint.authorization).toMatch(/^bearer eyJ/i);
    expect(mint.body).toMatchObject({ repositories: ["web"], permissions: { contents: "read", metadata: "read" } });
    const get = stub.requests.find((r) => r.method === "GET" && r.path === "/repos/acme/web")!;
    expect(get.authorization).toMatch(/^token ghs_/);
    expect(web).toEqual({ fullName: "acme/web", owner: "acme", name: "web", id: 101 });
    // Remembered, so the id alone finds it next time (without asking GitHub).
    expect(await store.getRepositoryById("101")).toMatchObject({ fullName: "acme/web", defaultBranch: "main" });
    expect((await access.resolve({ id: "101" })).ref.fullName).toBe("acme/web");
  });

  it("a repository on no installation is refused, and an unknown id is not found", async () => {
    await expect(access.resolve({ fullName: "acme/elsewhere" })).rejects.toMatchObject({
      code: "repository_not_installed",
    });
    await expect(access.resolve({ fullName: "acme/nothing" })).rejects.toMatchObject({
      code: "repository_not_installed",
    });
    await expect(access.resolve({ id: "999" })).rejects.toMatchObject({ code: "repository_not_found" });
  });

  it("with a token, the token is used for the API (by id too) and for git", async () => {
    const tokenStub = await startGitHubApiStub({
      repositories: [{ id: 7, fullName: "acme/web" }],
      tokens: ["ghp_personal0123456789"],
    });
    const tokenStore = await createSqliteStore({ dataDir: tempDir("gh-token-data") });
    try {
      const tokenAccess = createRepositoryAccess(
        loadConfig({
          PATCHBAY_DATA_DIR: tempDir("x"),
          PATCHBAY_GITHUB_API_URL: tokenStub.baseUrl,
          GITHUB_TOKEN: "ghp_personal0123456789",
        }),
        tokenStore,
      );
      expect(tokenAccess.mode).toBe("token");
      const resolved = await tokenAccess.resolve({ id: "7" });
      expect(resolved.ref).toEqual({ fullName: "acme/web", owner: "acme", name: "web", id: 7 });
      expect(tokenStub.requests.map((r) => `${r.method} ${r.path} ${r.authorization}`)).toEqual([
        "GET /repositories/7 token ghp_personal0123456789",
      ]);
      const cred = await tokenAccess.cloneCredential(resolved.ref);
      expect(Buffer.from(cred!.authorizationHeader.replace(/^Basic /, ""), "base64").toString()).toBe(
        "x-access-token:ghp_personal0123456789",
      );
    } finally {
      await tokenStore.close();
      await tokenStub.close();
    }
  });

  it("with neither App nor token: no API calls, no credential, and publishing is refused", async () => {
    const publicStub = await startGitHubApiStub({ repositories: [] });
    const publicStore = await createSqliteStore({ dataDir: tempDir("gh-public-data") });
    try {
      const cfg = loadConfig({ PATCHBAY_DATA_DIR: tempDir("x"), PATCHBAY_GITHUB_API_URL: publicStub.baseUrl });
      const publicAccess = createRepositoryAccess(cfg, publicStore);
      expect(publicAccess.mode).toBe("public");
      expect((await publicAccess.resolve({ fullName: "acme/web" })).ref.fullName).toBe("acme/web");
      expect(await publicAccess.cloneCredential(web)).toBeUndefined();
      await expect(
        createPublisher({ access: publicAccess, config: cfg }).check({ repository: web }),
      ).rejects.toMatchObject({ code: "publish_not_configured" });
      await expect(publicAccess.forPublishing(web)).rejects.toMatchObject({ code: "publish_not_configured" });
      expect(publicStub.requests).toEqual([]);
    } finally {
      await publicStore.close();
      await publicStub.close();
    }
  });
});

describe("publishing a draft pull request", () => {
  it("commits on patchbay/<run id>, pushes with the installation token and opens a draft PR; a follow-up adds a commit and updates the same PR", async () => {
    const ws = await changedWorkspace("acme/web", {
      "NOTES.md": "release notes\n",
      "src/app.js": "export const x = 2;\n",
    });
    const first = await publisher.publish(await request("run_one", web, ws));
    expect(first.status).toBe("published");
    if (first.status !== "published") return;
    expect(first.created).toBe(true);
    expect(first.branch).toBe("patchbay/run_one");
    expect(first.draftPullRequest).toMatchObject({
      branch: "patchbay/run_one",
      base: "main",
      url: expect.stringContaining("/pull/"),
    });
    // The branch exists on the server with the agent's change, on top of the base.
    expect(git(bare("acme/web"), "rev-parse", "patchbay/run_one")).toBe(first.draftPullRequest.headSha);
    expect(git(bare("acme/web"), "show", "patchbay/run_one:NOTES.md")).toBe("release notes");
    expect(git(bare("acme/web"), "rev-parse", "patchbay/run_one^")).toBe(baseSha);
    expect(git(bare("acme/web"), "log", "-1", "--format=%an <%ae>%n%s", "patchbay/run_one")).toBe(
      "Patchbay <patchbay@localhost>\nAdd release notes",
    );
    // The push carried the installation token, and the token was minted for this one repository with write access.
    const pushes = gitServer.requests.filter((r) => r.service === "receive-pack" && r.method === "POST");
    const pushToken = Buffer.from(pushes.at(-1)!.authorization!.replace(/^Basic /, ""), "base64").toString();
    expect(pushToken).toMatch(/^x-access-token:ghs_/);
    const writeMint = stub.minted.find((m) => m.token === pushToken.slice("x-access-token:".length))!;
    expect(writeMint).toMatchObject({
      installationId: 42,
      repositories: ["web"],
      permissions: { contents: "write", pull_requests: "write" },
    });
    const [post] = pullPosts("patchbay/run_one");
    expect(post!.authorization).toBe(`token ${writeMint.token}`);
    expect(post!.body).toMatchObject({
      draft: true,
      base: "main",
      head: "patchbay/run_one",
      title: "Add release notes",
    });
    expect(String(post!.body!.body)).toContain("Added NOTES.md.");
    expect(String(post!.body!.body)).toContain("2 files changed, +2 −1");

    // Follow-up turn: more changes (cumulative patch against the same base).
    await changedWorkspace("acme/web", { "docs/guide.md": "guide\n" }, ws);
    const second = await publisher.publish(
      await request("run_one", web, ws, {
        baseSha,
        prompts: ["Add release notes", "Also a guide"],
        summary: "Added a guide.",
      }),
    );
    expect(second).toMatchObject({ status: "published", created: false, committed: true });
    if (second.status !== "published") return;
    expect(second.draftPullRequest.number).toBe(first.draftPullRequest.number);
    expect(git(bare("acme/web"), "rev-parse", "patchbay/run_one^")).toBe(first.draftPullRequest.headSha);
    expect(git(bare("acme/web"), "show", "patchbay/run_one:docs/guide.md")).toBe("guide");
    expect(pullPosts("patchbay/run_one")).toHaveLength(1);
    expect(stub.pulls.get("acme/web")!.filter((p) => p.head === "patchbay/run_one")).toHaveLength(1);
    const patch = stub.requests.filter(
      (r) => r.method === "PATCH" && r.path === `/repos/acme/web/pulls/${first.draftPullRequest.number}`,
    );
    expect(patch).toHaveLength(1);
    expect(String(patch[0]!.body!.body)).toContain("Also a guide");

    // Publishing again with nothing new: no commit, same PR.
    const third = await publisher.publish(await request("run_one", web, ws, { baseSha }));
    expect(third).toMatchObject({
      status: "published",
      committed: false,
      draftPullRequest: { headSha: second.draftPullRequest.headSha },
    });
  });

  it("after a crash between push and record, the open PR for the branch is found and no second one is created", async () => {
    const ws = await changedWorkspace("acme/web", { "CRASH.md": "x\n" });
    const existing = stub.addPull("acme/web", {
      title: "earlier",
      body: "",
      head: "patchbay/run_crash",
      base: "main",
      draft: true,
      state: "open",
    });
    const res = await publisher.publish(await request("run_crash", web, ws));
    expect(res).toMatchObject({ status: "published", created: false, draftPullRequest: { number: existing.number } });
    expect(pullPosts("patchbay/run_crash")).toHaveLength(0);
  });

  it("a run without changes publishes nothing", async () => {
    const ws = await changedWorkspace("acme/web", {});
    expect(await publisher.publish(await request("run_empty", web, ws))).toMatchObject({ status: "skipped" });
    expect(git(bare("acme/web"), "branch", "--list", "patchbay/run_empty")).toBe("");
  });

  it("refuses the main line and invalid names as publish branches", async () => {
    await expect(publisher.check({ repository: web, branch: "main" })).rejects.toMatchObject({ code: "invalid_ref" });
    await expect(publisher.check({ repository: web, branch: "trunk", defaultBranch: "trunk" })).rejects.toMatchObject({
      code: "invalid_ref",
    });
    await expect(publisher.check({ repository: web, branch: "release", baseRef: "release" })).rejects.toMatchObject({
      code: "invalid_ref",
    });
    await expect(publisher.check({ repository: web, branch: "-evil" })).rejects.toMatchObject({ code: "invalid_ref" });
    await expect(publisher.check({ repository: web, branch: "a..b" })).rejects.toMatchObject({ code: "invalid_ref" });
    await expect(publisher.check({ repository: web, branch: "HEAD" })).rejects.toMatchObject({ code: "invalid_ref" });
    await expect(publisher.check({ repository: web, branch: "feature/ok" })).resolves.toBeUndefined();
    const ws = await changedWorkspace("acme/web", { "X.md": "x\n" });
    await expect(publisher.publish(await request("run_main", web, ws, { branch: "main" }))).rejects.toMatchObject({
      code: "invalid_ref",
    });
    expect(git(bare("acme/web"), "rev-parse", "main")).toBe(baseSha);
  });
});

describe("publishing is scoped", () => {
  it("an existing branch Patchbay did not create is refused with branch_not_owned, and pushed to with allowExistingBranch", async () => {
    // A branch people work on (another team's release line), reachable with the server's credential.
    git(bare("acme/web"), "branch", "release/1.x", baseSha);
    const ws = await changedWorkspace("acme/web", { "HIJACK.md": "agent commit\n" });
    await expect(
      publisher.publish(await request("run_foreign", web, ws, { branch: "release/1.x" })),
    ).rejects.toMatchObject({ code: "branch_not_owned", message: expect.stringContaining("allowExistingBranch") });
    expect(git(bare("acme/web"), "rev-parse", "release/1.x")).toBe(baseSha);
    expect(pullPosts("release/1.x")).toHaveLength(0);

    const res = await publisher.publish(
      await request("run_foreign", web, ws, { branch: "release/1.x", allowExistingBranch: true }),
    );
    expect(res).toMatchObject({ status: "published", committed: true, branchCreated: false });
    expect(git(bare("acme/web"), "rev-parse", "release/1.x^")).toBe(baseSha);
    expect(git(bare("acme/web"), "show", "release/1.x:HIJACK.md")).toBe("agent commit");
  });

  it("a branch Patchbay created (the run's own, or the one recorded for its chain) needs no opt-in", async () => {
    const ws = await changedWorkspace("acme/web", { "OWN.md": "one\n" });
    const created = await publisher.publish(await request("run_owner", web, ws, { branch: "feature/owned" }));
    expect(created).toMatchObject({ status: "published", branchCreated: true });
    await changedWorkspace("acme/web", { "OWN.md": "two\n" }, ws);
    // A chained run: another run id, the branch recorded as owned by its chain.
    const chained = await publisher.publish(
      await request("run_chained", web, ws, { baseSha, branch: "feature/owned", ownedBranch: "feature/owned" }),
    );
    expect(chained).toMatchObject({ status: "published", committed: true, branchCreated: false });
    expect(git(bare("acme/web"), "show", "feature/owned:OWN.md")).toBe("two");
    // The run's own default branch left over by a crash (pushed, never recorded) is still its own.
    git(bare("acme/web"), "branch", "patchbay/run_leftover", baseSha);
    const leftover = await publisher.publish(await request("run_leftover", web, ws, { baseSha }));
    expect(leftover).toMatchObject({ status: "published", committed: true });
    // Another run's default branch is not this run's.
    await expect(
      publisher.publish(await request("run_thief", web, ws, { baseSha, branch: "patchbay/run_leftover" })),
    ).rejects.toMatchObject({ code: "branch_not_owned" });
  });

  it("changes under .github/workflows/ are refused with workflow_change_refused unless the server allows them", async () => {
    const ws = await changedWorkspace("acme/web", {
      ".github/workflows/exfiltrate.yml": "on: push\njobs: {}\n",
      "src/app.js": "export const x = 3;\n",
    });
    const err = (await publisher.publish(await request("run_ci", web, ws)).catch((e: unknown) => e)) as {
      code: string;
      details?: { paths?: string[] };
    };
    expect(err).toMatchObject({ code: "workflow_change_refused" });
    expect(err.details!.paths).toEqual([".github/workflows/exfiltrate.yml"]);
    expect(git(bare("acme/web"), "branch", "--list", "patchbay/run_ci")).toBe("");
    expect(pullPosts("patchbay/run_ci")).toHaveLength(0);

    const allowing = createPublisher({ access, config: { ...config, publishAllowWorkflows: true } });
    const res = await allowing.publish(await request("run_ci", web, ws));
    expect(res).toMatchObject({ status: "published", branchCreated: true });
    expect(git(bare("acme/web"), "show", "patchbay/run_ci:.github/workflows/exfiltrate.yml")).toBe(
      "on: push\njobs: {}",
    );
  });

  it("the settings parse PATCHBAY_PUBLISH_ALLOW_WORKFLOWS, off by default", () => {
    expect(loadConfig({}).publishAllowWorkflows).toBe(false);
    expect(loadConfig({ PATCHBAY_PUBLISH_ALLOW_WORKFLOWS: "1" }).publishAllowWorkflows).toBe(true);
    expect(() => loadConfig({ PATCHBAY_PUBLISH_ALLOW_WORKFLOWS: "yes" })).toThrow(/PATCHBAY_PUBLISH_ALLOW_WORKFLOWS/);
  });
});

describe("publishing failures", () => {
  it("no permission to open the PR (403) fails with permission_denied", async () => {
    const ws = await changedWorkspace("acme/web", { "P.md": "p\n" });
    stub.failNext("POST", /\/repos\/acme\/web\/pulls$/, {
      status: 403,
      message: "Resource not accessible by integration",
    });
    await expect(publisher.publish(await request("run_noperm", web, ws))).rejects.toMatchObject({
      code: "permission_denied",
      message: expect.stringContaining("Resource not accessible by integration"),
    });
  });

  it("no permission to push fails with permission_denied and the credential scrubbed from the message", async () => {
    const locked = (await access.resolve({ fullName: "acme/locked" })).ref;
    const ws = await changedWorkspace("acme/locked", { "L.md": "l\n" });
    const err = (await publisher.publish(await request("run_locked", locked, ws)).catch((e: unknown) => e)) as Error;
    expect(err).toMatchObject({ code: "permission_denied" });
    expect(err.message).not.toMatch(/ghs_|x-access-token|Basic /);
  });

  it("a protected branch fails with branch_protected", async () => {
    gitServer.protectBranch("acme/web", "patchbay/protected");
    const ws = await changedWorkspace("acme/web", { "B.md": "b\n" });
    await expect(
      publisher.publish(await request("run_prot", web, ws, { branch: "patchbay/protected" })),
    ).rejects.toMatchObject({
      code: "branch_protected",
      message: expect.stringContaining("GH006"),
    });
  });

  it("a PR that already exists but cannot be found fails with pr_exists", async () => {
    const ws = await changedWorkspace("acme/web", { "E.md": "e\n" });
    stub.failNext("POST", /\/repos\/acme\/web\/pulls$/, {
      status: 422,
      message: "Validation Failed",
      body: {
        errors: [
          {
            resource: "PullRequest",
            code: "custom",
            message: "A pull request already exists for other:patchbay/run_exists.",
          },
        ],
      },
    });
    await expect(publisher.publish(await request("run_exists", web, ws))).rejects.toMatchObject({
      code: "pr_exists",
      message: expect.stringContaining("already exists"),
    });
  });

  it("a secondary rate limit is retried after the retry-after GitHub sent", async () => {
    const ws = await changedWorkspace("acme/web", { "R.md": "r\n" });
    stub.failNext("POST", /\/repos\/acme\/web\/pulls$/, {
      status: 429,
      message: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
      headers: { "retry-after": "1" },
    });
    const res = await publisher.publish(await request("run_rate", web, ws));
    expect(res.status).toBe("published");
    const posts = pullPosts("patchbay/run_rate");
    expect(posts.map((p) => p.status)).toEqual([429, 201]);
    expect(posts[1]!.at - posts[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it("a rate limit longer than we wait fails with github_rate_limited and the wait GitHub asked for", async () => {
    const ws = await changedWorkspace("acme/web", { "S.md": "s\n" });
    const reset = Math.floor(Date.now() / 1000) + 3600;
    stub.failNext("GET", /\/repos\/acme\/web\/pulls$/, {
      status: 403,
      message: "API rate limit exceeded for installation ID 42.",
      headers: { "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(reset) },
    });
    const started = Date.now();
    const err = (await publisher.publish(await request("run_limit", web, ws)).catch((e: unknown) => e)) as {
      code: string;
      details?: { retryAfterSeconds?: number };
    };
    expect(err).toMatchObject({ code: "github_rate_limited" });
    expect(err.details!.retryAfterSeconds).toBeGreaterThan(3500);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});
