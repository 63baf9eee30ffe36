/**
 * The e2e test harness: local git repositories and the scripted model (`startFixtures`), and a
 * real Patchbay on them (embedded store, local sandbox, real OpenCode) in one call
 * (`openHarness`), closed in one call. Variants on top of it: the served HTTP app
 * (./http.ts), a `patchbay serve` child process (./serve.ts), MCP clients (./mcp.ts).
 */
import type { Config } from "../../src/config.ts";
import { startGitHttpServer, type GitHttpServer } from "../fixtures/git-http-server.ts";
import { startGitHubApiStub, type GitHubApiStub, type GitHubApiStubOptions } from "../fixtures/github-api-stub.ts";
import { startScriptedModel, type ScriptedModel, type ScriptedModelOptions } from "../fixtures/scripted-model.ts";
import { makeRepo, tempDir } from "../helpers.ts";
import { openTestPatchbay, type TestPatchbay } from "./patchbay.ts";

/**
 * Bounds for a loaded 2-core machine (other suites running), where starting OpenCode and one
 * scripted turn can take a minute. Generous on purpose: a passing test never waits them out.
 */
export const LOADED = {
  /** PATCHBAY_TURN_TIMEOUT_MS for suites that do not test the timeout itself. */
  turnTimeoutMs: 180_000,
  /** Waiting for one turn to end (a little over the turn timeout, so the timeout shows first). */
  turnWaitMs: 200_000,
  /** One e2e test (`describe(..., { timeout })`): a few turns back to back. */
  testMs: 600_000,
  /** beforeAll/afterAll that open or close a Patchbay, a model, servers. */
  hookMs: 180_000,
} as const;

/** The default repository, `acme/web`: a README, a module, and an npm test script. */
export const WEB_FILES: Record<string, string> = {
  "README.md": "# Web\n\nHello.\n",
  "src/app.js": "export function greet() {\n  return 'hello';\n}\n",
  "package.json": JSON.stringify({ name: "web", version: "1.0.0", scripts: { test: "node test.js" } }, null, 2) + "\n",
  "test.js": "require('node:fs');\nconsole.log('tests ok');\n",
};

export interface FixtureOptions {
  /** Bare repositories served at `file://<repoBase>`, by full name. Default: `acme/web` with WEB_FILES. */
  repos?: Record<string, Record<string, string>>;
  /** Other branches of those repositories: full name -> branch -> files changed on it. */
  branches?: Record<string, Record<string, Record<string, string>>>;
  /** The scripted model's scripts (more can be added later with `model.script`). */
  model?: ScriptedModelOptions;
  /** Start the GitHub API stand-in over the repositories (PATCHBAY_GITHUB_API_URL). */
  github?: Omit<GitHubApiStubOptions, "gitRoot">;
  /**
   * Serve the repositories over HTTP (`git http-backend`, a token required) instead of
   * file://; with the GitHub stand-in, only tokens it accepts or minted for a repository pass.
   */
  gitHttp?: boolean;
}

export interface Fixtures {
  model: ScriptedModel;
  /** Directory of the bare repositories (`<repoBase>/<owner>/<name>.git`). */
  repoBase: string;
  github: GitHubApiStub | undefined;
  gitHttp: GitHttpServer | undefined;
  /**
   * Environment for a Patchbay on these fixtures: the repositories, the model (with a managed
   * key), the GitHub stand-in when started, and turn and session bounds for a loaded machine.
   */
  env: Record<string, string>;
  close(): Promise<void>;
}

/** Start the scripted model and make the repositories (and the GitHub stand-in, if asked). */
export async function startFixtures(opts: FixtureOptions = {}): Promise<Fixtures> {
  const repoBase = tempDir("repos");
  for (const [fullName, files] of Object.entries(opts.repos ?? { "acme/web": WEB_FILES }))
    makeRepo(repoBase, fullName, files, { branches: opts.branches?.[fullName] ?? {} });
  const model = await startScriptedModel(opts.model);
  let github: GitHubApiStub | undefined;
  let gitHttp: GitHttpServer | undefined;
  const close = async () => {
    await gitHttp?.close();
    await github?.close();
    await model.close();
  };
  try {
    github = opts.github ? await startGitHubApiStub({ ...opts.github, gitRoot: repoBase }) : undefined;
    const stub = github;
    gitHttp = opts.gitHttp
      ? await startGitHttpServer({
          root: repoBase,
          ...(stub ? { authorize: (token, repo) => stub.tokenAllows(token, repo) } : {}),
        })
      : undefined;
  } catch (e) {
    await close();
    throw e;
  }
  return {
    model,
    repoBase,
    github,
    gitHttp,
    env: {
      PATCHBAY_GIT_BASE_URL: gitHttp?.baseUrl ?? `file://${repoBase}`,
      PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
      OPENROUTER_API_KEY: "sk-or-v1-harness-managed-key",
      ...(github ? { PATCHBAY_GITHUB_API_URL: github.baseUrl } : {}),
      PATCHBAY_TURN_TIMEOUT_MS: String(LOADED.turnTimeoutMs),
      // Idle sessions must outlive a slow suite's pauses between turns.
      PATCHBAY_SESSION_TTL_MS: "600000",
      // A slow suite's pauses must not hibernate the sessions it inspects; hibernation's own tests turn it on.
      PATCHBAY_HIBERNATE_AFTER_MS: "0",
      PATCHBAY_WATCHDOG_MS: "2000",
    },
    close,
  };
}

export interface HarnessOptions extends FixtureOptions {
  /** The Patchbay's environment, over the fixtures' `env`. */
  env?: Record<string, string>;
  overrides?: Partial<Config>;
}

export interface Harness extends Fixtures {
  pb: TestPatchbay;
  /** Another Patchbay on the same fixtures (other limits or timeouts); closed with the harness. */
  openAnother(env?: Record<string, string>, overrides?: Partial<Config>): Promise<TestPatchbay>;
}

/** A Patchbay with repositories and the scripted model, in one call. Close it in `afterAll` or `finally`. */
export async function openHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const fixtures = await startFixtures(opts);
  const others: TestPatchbay[] = [];
  let pb: TestPatchbay;
  try {
    pb = await openTestPatchbay({ ...fixtures.env, ...opts.env }, opts.overrides);
  } catch (e) {
    await fixtures.close();
    throw e;
  }
  return {
    ...fixtures,
    pb,
    async openAnother(env = {}, overrides = {}) {
      const other = await openTestPatchbay({ ...fixtures.env, ...env }, overrides);
      // A test may also close it in its own finally: Patchbay.close is idempotent.
      others.push(other);
      return other;
    },
    async close() {
      // Every Patchbay first (they stop their OpenCode servers), then what they talked to.
      const results = await Promise.allSettled([...others, pb].map((p) => p.close()));
      await fixtures.close();
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed) throw failed.reason;
    },
  };
}

/** Open a harness, run `fn` with it, and close it whatever happens. */
export async function withHarness<T>(opts: HarnessOptions, fn: (h: Harness) => Promise<T>): Promise<T> {
  const h = await openHarness(opts);
  try {
    return await fn(h);
  } finally {
    await h.close();
  }
}
