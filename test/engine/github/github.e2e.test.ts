/**
 * GitHub end to end through the engine: a real `opencode serve` driven by the scripted model,
 * the repository served by git http-backend (token required), and the GitHub API stand-in
 * minting installation tokens for a real App key. Every token the stand-in mints carries a
 * canary prefix, so the test can look for it everywhere it must not be.
 */
import { generateKeyPairSync } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunView } from "../../../src/engine/index.ts";
import type { GitHttpServer } from "../../fixtures/git-http-server.ts";
import type { GitHubApiStub } from "../../fixtures/github-api-stub.ts";
import type { ScriptedModel } from "../../fixtures/scripted-model.ts";
import { git } from "../../helpers.ts";
import { LOADED, openHarness, type Harness } from "../../support/harness.ts";
import type { TestPatchbay } from "../../support/patchbay.ts";

const OWNER = "owner-gh";
const APP_ID = "777";
const CANARY = "ghs_CANARY";

let h: Harness;
let model: ScriptedModel;
let gitServer: GitHttpServer;
let stub: GitHubApiStub;
let pb: TestPatchbay;
let gitRoot: string;
let privateKeyPem: string;

beforeAll(async () => {
  const keys = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs1", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  privateKeyPem = keys.privateKey;
  // The harness opens its Patchbay on this git server (token required) instead of file://.
  h = await openHarness({
    repos: {
      "acme/web": { "README.md": "# Web\n", "src/app.js": "export const x = 1;\n" },
      "acme/elsewhere": { "README.md": "# Elsewhere\n" },
    },
    github: {
      appId: APP_ID,
      appPublicKey: keys.publicKey,
      tokenPrefix: CANARY,
      repositories: [
        { id: 501, fullName: "acme/web", installationId: 9 },
        { id: 502, fullName: "acme/elsewhere" },
      ],
    },
    gitHttp: true,
    env: {
      GITHUB_APP_ID: APP_ID,
      GITHUB_APP_PRIVATE_KEY: privateKeyPem,
      OPENROUTER_API_KEY: "sk-or-v1-github-e2e",
    },
  });
  ({ model, pb, repoBase: gitRoot } = h);
  stub = h.github!;
  gitServer = h.gitHttp!;
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

/** Every form a minted token could take on disk or in text: raw, and inside a Basic header. */
function secrets(): string[] {
  const tokens = stub.minted.map((m) => m.token);
  expect(tokens.length).toBeGreaterThan(0);
  const keyBody = privateKeyPem.split("\n").slice(1, 3).join("\n");
  return [
    CANARY,
    ...tokens,
    ...tokens.map((t) => Buffer.from(`x-access-token:${t}`).toString("base64")),
    keyBody,
    keyBody.replace(/\n/g, "\\n"),
  ];
}

/** Files under `dir` containing any of `needles` (binary files included, read as bytes). */
function filesContaining(dir: string, needles: string[]): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.isFile()) {
        const content = fs.readFileSync(p).toString("latin1");
        for (const n of needles) if (content.includes(n)) found.push(`${p} contains ${n.slice(0, 12)}…`);
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return found;
}

function logMessages(run: RunView): string[] {
  return (run.events ?? []).flatMap((e) =>
    e.type === "builder.event" && e.data.kind === "log" ? [e.data.message] : [],
  );
}

describe("GitHub end to end", { timeout: LOADED.testMs }, () => {
  it("a draft_pr run clones and pushes with a scoped installation token, opens a draft PR, a follow-up updates it, and the token is found nowhere", async () => {
    model.script("test/gh-pr", [
      [
        // The agent looks for credentials where a careless implementation would leave them.
        {
          toolCalls: [
            {
              name: "bash",
              args: {
                command:
                  "env; cat .git/config; git config --list --show-origin; git remote -v; cat ~/.git-credentials ~/.gitconfig 2>/dev/null",
                description: "look for credentials",
              },
            },
          ],
        },
        { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "release notes\n" } }] },
        { text: "Added NOTES.md." },
      ],
      [
        { toolCalls: [{ name: "write", args: { filePath: "docs/guide.md", content: "guide\n" } }] },
        { text: "Added a guide." },
      ],
    ]);
    const started = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "Add release notes",
      modelId: "test/gh-pr",
      publish: { mode: "draft_pr" },
    });
    const first = await pb.engine.waitForTurn(OWNER, started.id);
    expect(first.error).toBeNull();
    expect(first.status).toBe("idle");
    const branch = `patchbay/${first.id}`;
    expect(first.publish).toEqual({ mode: "draft_pr", branch, status: "published", ownedBranch: branch });
    const bare = path.join(gitRoot, "acme/web.git");
    expect(first.draftPullRequest).toMatchObject({ branch, base: "main", headSha: git(bare, "rev-parse", branch) });
    expect(git(bare, "show", `${branch}:NOTES.md`)).toBe("release notes");
    const number = first.draftPullRequest!.number;
    expect(stub.pulls.get("acme/web")!.find((p) => p.number === number)).toMatchObject({
      draft: true,
      head: branch,
      base: "main",
      title: "Add release notes",
    });
    const withEvents = await pb.engine.getRun(OWNER, first.id, { events: true, patch: true });
    expect(logMessages(withEvents)).toEqual(
      expect.arrayContaining(["publishing…", expect.stringMatching(new RegExp(`^opened draft PR #${number}: `))]),
    );

    // The App flow: a JWT for the installation lookup, tokens for one repository, `token ghs_…` for pulls.
    expect(stub.requests.find((r) => r.path === "/repos/acme/web/installation")!.authorization).toMatch(/^bearer eyJ/i);
    for (const m of stub.minted) expect(m.repositories).toEqual(["web"]);
    const post = stub.requests.find((r) => r.method === "POST" && r.path === "/repos/acme/web/pulls")!;
    expect(post.authorization).toMatch(new RegExp(`^token ${CANARY}`));
    expect(post.body).toMatchObject({ draft: true });
    // Clone and push reached the git server with the token, and nothing reached it without one.
    expect(gitServer.requests.some((r) => r.service === "upload-pack")).toBe(true);
    expect(gitServer.requests.some((r) => r.service === "receive-pack")).toBe(true);
    for (const r of gitServer.requests) {
      expect(Buffer.from(r.authorization!.replace(/^Basic /, ""), "base64").toString()).toMatch(
        new RegExp(`^x-access-token:${CANARY}`),
      );
    }

    // Canary: the agent saw no token, and none is in the workspace (its .git/config included).
    const sandboxDir = path.join(pb.dataDir, "sandboxes", first.id);
    const workspaceGitConfig = fs.readFileSync(path.join(sandboxDir, "repo", ".git", "config"), "utf8");
    expect(workspaceGitConfig).not.toMatch(/extraheader|ghs_|x-access-token/i);
    const toolOutput = (withEvents.events ?? [])
      .flatMap((e) => (e.type === "builder.event" && e.data.kind === "tool" && e.data.output ? [e.data.output] : []))
      .join("\n");
    expect(toolOutput).toContain('[remote "origin"]'); // the agent's command really ran
    expect(filesContaining(sandboxDir, secrets())).toEqual([]);

    // Follow-up turn: a new commit on the same branch, the same PR updated, never a second one.
    const previousHead = first.draftPullRequest!.headSha;
    await pb.engine.sendMessage(OWNER, first.id, { prompt: "Also add a guide" });
    const second = await pb.engine.waitForTurn(OWNER, first.id);
    expect(second.status).toBe("idle");
    expect(second.publish.status).toBe("published");
    expect(second.draftPullRequest).toMatchObject({ number, branch, headSha: git(bare, "rev-parse", branch) });
    expect(git(bare, "rev-parse", `${branch}^`)).toBe(previousHead);
    expect(git(bare, "show", `${branch}:docs/guide.md`)).toBe("guide");
    expect(stub.requests.filter((r) => r.method === "POST" && r.path === "/repos/acme/web/pulls")).toHaveLength(1);
    expect(
      stub.requests.filter((r) => r.method === "PATCH" && r.path === `/repos/acme/web/pulls/${number}`),
    ).toHaveLength(1);
    const secondEvents = await pb.engine.getRun(OWNER, first.id, { events: true, patch: true });
    expect(logMessages(secondEvents)).toContain(`updated draft PR #${number}: ${second.draftPullRequest!.url}`);

    // Nowhere in responses, events, logs or the data dir (store, event logs, mirrors, sandboxes).
    const needles = secrets();
    const responses = JSON.stringify([
      started,
      first,
      withEvents,
      second,
      secondEvents,
      await pb.engine.getPatch(OWNER, first.id),
      await pb.engine.listRuns(OWNER),
    ]);
    for (const n of needles) expect(responses).not.toContain(n);
    for (const n of needles) expect(pb.logLines.join("\n")).not.toContain(n);
    expect(filesContaining(pb.dataDir, needles)).toEqual([]);
    await pb.engine.endSession(OWNER, first.id);
    expect(filesContaining(pb.dataDir, needles)).toEqual([]);
  });

  it("a publish failure is recorded on the run, which stays idle with its patch; the repository id alone finds the repository", async () => {
    model.script("test/gh-fail", [
      [{ toolCalls: [{ name: "write", args: { filePath: "FAIL.md", content: "x\n" } }] }, { text: "Wrote FAIL.md." }],
    ]);
    stub.failNext("POST", /\/repos\/acme\/web\/pulls$/, {
      status: 403,
      message: "Resource not accessible by integration",
    });
    const started = await pb.engine.startRun(OWNER, {
      repositoryId: 501,
      prompt: "Write a file",
      modelId: "test/gh-fail",
      publish: { mode: "draft_pr", branch: "agent/fail-test" },
    });
    expect(started.repository.fullName).toBe("acme/web");
    const run = await pb.engine.waitForTurn(OWNER, started.id);
    expect(run.status).toBe("idle");
    expect(run.error).toBeNull();
    expect(run.publish).toMatchObject({
      mode: "draft_pr",
      branch: "agent/fail-test",
      status: "failed",
      error: { code: "permission_denied" },
    });
    expect(run.publish.error!.message).toContain("Resource not accessible by integration");
    expect(run.draftPullRequest).toBeNull();
    expect((await pb.engine.getPatch(OWNER, run.id)).patch).toContain("+x");
    const events = await pb.engine.getRun(OWNER, run.id, { events: true });
    expect(logMessages(events).some((m) => m.startsWith("publish failed (permission_denied)"))).toBe(true);
    await pb.engine.endSession(OWNER, run.id);
  });

  it("a repository on no installation, or a draft_pr to main, is refused at startRun before any sandbox starts", async () => {
    const before = fs.existsSync(path.join(pb.dataDir, "sandboxes"))
      ? fs.readdirSync(path.join(pb.dataDir, "sandboxes")).length
      : 0;
    await expect(
      pb.engine.startRun(OWNER, { repository: "acme/elsewhere", prompt: "x", modelId: "test/none" }),
    ).rejects.toMatchObject({
      code: "repository_not_installed",
      message: expect.stringContaining("acme/elsewhere"),
    });
    await expect(
      pb.engine.startRun(OWNER, {
        repository: "acme/web",
        prompt: "x",
        modelId: "test/none",
        publish: { mode: "draft_pr", branch: "main" },
      }),
    ).rejects.toMatchObject({
      code: "invalid_ref",
    });
    expect(stub.minted.some((m) => m.repositories?.includes("elsewhere"))).toBe(false);
    const after = fs.existsSync(path.join(pb.dataDir, "sandboxes"))
      ? fs.readdirSync(path.join(pb.dataDir, "sandboxes")).length
      : 0;
    expect(after).toBe(before);
    expect((await pb.engine.listRuns(OWNER)).runs.every((r) => r.repository.fullName === "acme/web")).toBe(true);
  });

  it("a key's repository allow-list refuses a run on another repository, named or by id, before any sandbox", async () => {
    for (const input of [{ repository: "acme/web" }, { repositoryId: 501 }]) {
      await expect(
        pb.engine.startRun(
          OWNER,
          { ...input, prompt: "x", modelId: "test/none" },
          { allowedRepositories: ["other/*"] },
        ),
      ).rejects.toMatchObject({ code: "repository_not_allowed", message: expect.stringContaining("acme/web") });
    }
    expect((await pb.engine.listRuns(OWNER)).runs.every((r) => r.modelId !== "test/none")).toBe(true);
  });

  it("a run that adds a workflow keeps its patch, and its publish fails with workflow_change_refused", async () => {
    model.script("test/gh-workflow", [
      [
        {
          toolCalls: [
            { name: "write", args: { filePath: ".github/workflows/leak.yml", content: "on: push\njobs: {}\n" } },
          ],
        },
        { text: "Added a workflow." },
      ],
    ]);
    const started = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "Add CI",
      modelId: "test/gh-workflow",
      publish: { mode: "draft_pr" },
    });
    const run = await pb.engine.waitForTurn(OWNER, started.id);
    expect(run.status).toBe("idle");
    expect(run.error).toBeNull();
    expect(run.publish).toMatchObject({ status: "failed", error: { code: "workflow_change_refused" } });
    expect(run.draftPullRequest).toBeNull();
    expect((await pb.engine.getPatch(OWNER, run.id)).patch).toContain(".github/workflows/leak.yml");
    expect(git(path.join(gitRoot, "acme/web.git"), "branch", "--list", `patchbay/${run.id}`)).toBe("");
    await pb.engine.endSession(OWNER, run.id);
  });

  it("publishing onto an existing branch Patchbay did not create fails with branch_not_owned, and succeeds once the message opts in", async () => {
    const bare = path.join(gitRoot, "acme/web.git");
    git(bare, "branch", "release/2.x", "main");
    const before = git(bare, "rev-parse", "release/2.x");
    model.script("test/gh-foreign", [
      [{ toolCalls: [{ name: "write", args: { filePath: "FOREIGN.md", content: "one\n" } }] }, { text: "One." }],
      [{ toolCalls: [{ name: "write", args: { filePath: "FOREIGN.md", content: "two\n" } }] }, { text: "Two." }],
    ]);
    const started = await pb.engine.startRun(OWNER, {
      repository: "acme/web",
      prompt: "Write FOREIGN.md",
      modelId: "test/gh-foreign",
      publish: { mode: "draft_pr", branch: "release/2.x" },
    });
    const first = await pb.engine.waitForTurn(OWNER, started.id);
    expect(first.status).toBe("idle");
    expect(first.publish).toMatchObject({ status: "failed", error: { code: "branch_not_owned" } });
    expect(git(bare, "rev-parse", "release/2.x")).toBe(before);
    expect((await pb.engine.getPatch(OWNER, first.id)).patch).toContain("+one");

    await pb.engine.sendMessage(OWNER, first.id, {
      prompt: "Now write two",
      publish: { mode: "draft_pr", branch: "release/2.x", allowExistingBranch: true },
    });
    const second = await pb.engine.waitForTurn(OWNER, first.id);
    expect(second.publish).toMatchObject({ status: "published", branch: "release/2.x", allowExistingBranch: true });
    expect(second.publish.ownedBranch).toBeUndefined();
    expect(git(bare, "rev-parse", "release/2.x^")).toBe(before);
    expect(git(bare, "show", "release/2.x:FOREIGN.md")).toBe("two");
    await pb.engine.endSession(OWNER, first.id);
  });

  it("without an App or a token, a draft_pr run is refused with publish_not_configured", async () => {
    // The same git server and GitHub, without the App's credentials.
    const bare = await h.openAnother({ OPENROUTER_API_KEY: "sk-or-v1-x" });
    try {
      await expect(
        bare.engine.startRun(OWNER, { repository: "acme/web", prompt: "x", publish: { mode: "draft_pr" } }),
      ).rejects.toMatchObject({
        code: "publish_not_configured",
      });
    } finally {
      await bare.close();
    }
  });
});
