/**
 * Repository access: which repository a run means, and the credentials to reach it.
 *
 * Three modes, chosen once from the configuration:
 * - `app`: a GitHub App (`GITHUB_APP_ID` + `GITHUB_APP_PRIVATE_KEY`). The repository must
 *   be on one of the App's installations; each credential is an installation token minted
 *   for that one repository (`repositories: [name]`), read-only for cloning and with
 *   contents/pull-request write for publishing. Tokens live an hour and are cached by octokit.
 * - `token`: `GITHUB_TOKEN` for everything.
 * - `public`: neither. Public clones only, no API calls, publishing refused.
 *
 * Credentials leave this module only as a `GitCredential` (an Authorization header value the
 * engine passes to one git command) or inside an `Octokit`; each token is registered with
 * the logger's redaction as soon as it exists.
 */
import { App } from "octokit";
import type { Octokit } from "octokit";
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { RepositoryFullName, type RepositoryRef } from "../run/schema.ts";
import type { GitCredential } from "../sandbox/sandbox.ts";
import type { RunStore } from "../store/store.ts";
import { createOctokitClass, type GitHubClientOptions } from "./client.ts";
import { toGitHubError } from "./errors.ts";

export type AccessMode = "app" | "token" | "public";

/** A repository the server can reach, as resolved at the start of a run. */
export interface ResolvedRepository {
  ref: RepositoryRef;
  /** The repository's default branch, when GitHub told us. */
  defaultBranch?: string;
}

/** What publishing needs: an API client and a git credential, both allowed to write. */
export interface PublishingClient {
  octokit: Octokit;
  credential: GitCredential;
  defaultBranch?: string;
}

export interface RepositoryAccess {
  readonly mode: AccessMode;
  /** True when pushing branches and opening pull requests is possible (an App or a token). */
  readonly canPublish: boolean;
  /**
   * Resolve `owner/name` or a GitHub repository id to a repository this server can reach,
   * remembering id and name in the store. Throws `repository_not_found` (unknown id, or a
   * repository the token cannot see) or `repository_not_installed` (the App is not on it).
   */
  resolve(input: { fullName?: string; id?: string }): Promise<ResolvedRepository>;
  /** The credential for cloning and fetching; undefined in `public` mode. */
  cloneCredential(repo: RepositoryRef): Promise<GitCredential | undefined>;
  /** A client allowed to push and open pull requests. Throws `publish_not_configured` in `public` mode. */
  forPublishing(repo: RepositoryRef): Promise<PublishingClient>;
}

export interface RepositoryAccessOptions extends Partial<
  Pick<GitHubClientOptions, "maxRateLimitWaitSeconds" | "rateLimitRetries">
> {
  log?: Logger;
}

/** Permissions asked for each use of an installation token: never more than the use needs. */
const READ_PERMISSIONS = { contents: "read", metadata: "read" } as const;
const WRITE_PERMISSIONS = { contents: "write", pull_requests: "write", metadata: "read" } as const;

/** `Basic base64(x-access-token:TOKEN)`: the form GitHub documents for tokens over HTTPS. */
export function basicCredential(token: string): GitCredential {
  return { authorizationHeader: `Basic ${Buffer.from(`x-access-token:${token}`).toString("base64")}` };
}

/**
 * Create the repository access for a server. Makes no network call until a run asks.
 */
export function createRepositoryAccess(
  config: Config,
  store: RunStore,
  opts: RepositoryAccessOptions = {},
): RepositoryAccess {
  const log = opts.log ?? silentLogger;
  const OctokitClass = createOctokitClass({
    baseUrl: config.githubApiUrl,
    log,
    ...(opts.maxRateLimitWaitSeconds !== undefined ? { maxRateLimitWaitSeconds: opts.maxRateLimitWaitSeconds } : {}),
    ...(opts.rateLimitRetries !== undefined ? { rateLimitRetries: opts.rateLimitRetries } : {}),
  });
  const mode: AccessMode =
    config.githubAppId && config.githubAppPrivateKey ? "app" : config.githubToken ? "token" : "public";

  // Keys pasted into an environment variable often carry literal "\n" instead of newlines.
  const app =
    mode === "app"
      ? new App({
          appId: config.githubAppId!,
          privateKey: config.githubAppPrivateKey!.replace(/\\n/g, "\n"),
          Octokit: OctokitClass,
        })
      : undefined;
  const tokenOctokit = mode === "token" ? new OctokitClass({ auth: config.githubToken }) : undefined;
  log.redact(config.githubToken);

  const split = (fullName: string) => fullName.split("/") as [string, string];
  const refOf = (fullName: string, id?: string | number): RepositoryRef => {
    const [owner, name] = split(fullName);
    return { fullName, owner, name, ...(id !== undefined ? { id: Number(id) } : {}) };
  };

  async function remember(data: {
    id: number;
    full_name: string;
    default_branch?: string;
  }): Promise<ResolvedRepository> {
    const fullName = RepositoryFullName.parse(data.full_name);
    await store.upsertRepository({
      id: String(data.id),
      fullName,
      ...(data.default_branch ? { defaultBranch: data.default_branch } : {}),
      updatedAt: new Date().toISOString(),
    });
    return { ref: refOf(fullName, data.id), ...(data.default_branch ? { defaultBranch: data.default_branch } : {}) };
  }

  // Installation ids, looked up once per repository (fresh again at each run's resolve, so an
  // App removed from a repository is noticed when the next run starts).
  const installations = new Map<string, number>();

  async function installationId(fullName: string, fresh = false): Promise<number> {
    const cached = installations.get(fullName);
    if (cached !== undefined && !fresh) return cached;
    const [owner, repo] = split(fullName);
    try {
      const { data } = await app!.octokit.request("GET /repos/{owner}/{repo}/installation", { owner, repo });
      installations.set(fullName, data.id);
      return data.id;
    } catch (e) {
      installations.delete(fullName);
      const err = toGitHubError(e, `looking up the GitHub App installation of ${fullName}`, {
        notFound: "repository_not_installed",
        fallback: "clone_failed",
      });
      if (err.code === "repository_not_installed") {
        throw new EngineError(
          "repository_not_installed",
          `${fullName} is not on an installation of this server's GitHub App (or does not exist); install the App on it first`,
          { repository: fullName },
        );
      }
      throw err;
    }
  }

  /** A fresh-or-cached installation token for one repository with the given permissions. */
  async function installationToken(
    fullName: string,
    permissions: Record<string, "read" | "write">,
    fresh = false,
  ): Promise<string> {
    const id = await installationId(fullName, fresh);
    try {
      const auth = (await app!.octokit.auth({
        type: "installation",
        installationId: id,
        repositoryNames: [split(fullName)[1]],
        permissions,
      })) as { token: string };
      log.redact(auth.token);
      return auth.token;
    } catch (e) {
      throw toGitHubError(e, `minting an installation token for ${fullName}`, { fallback: "clone_failed" });
    }
  }

  return {
    mode,
    canPublish: mode !== "public",

    async resolve(input) {
      let fullName = input.fullName;
      if (!fullName) {
        const id = String(input.id);
        const known = await store.getRepositoryById(id);
        if (known) fullName = RepositoryFullName.parse(known.fullName);
        else if (mode === "token") {
          // A token can read a repository by id; an App JWT cannot, and public mode makes no calls.
          try {
            const { data } = await tokenOctokit!.request("GET /repositories/{repository_id}", {
              repository_id: Number(id),
            });
            return await remember(data);
          } catch (e) {
            const err = toGitHubError(e, `looking up repository id ${id}`, {
              notFound: "repository_not_found",
              fallback: "clone_failed",
            });
            if (err.code !== "repository_not_found") throw err;
          }
        }
        if (!fullName)
          throw new EngineError(
            "repository_not_found",
            `repository id ${id} is not known to this server; pass repository as owner/name once`,
            { repositoryId: id },
          );
      }
      const [owner, repo] = split(fullName);
      if (mode === "public") {
        const known = await store.getRepositoryByName(fullName);
        return {
          ref: refOf(fullName, known?.id),
          ...(known?.defaultBranch ? { defaultBranch: known.defaultBranch } : {}),
        };
      }
      const octokit =
        mode === "token"
          ? tokenOctokit!
          : new OctokitClass({ auth: await installationToken(fullName, READ_PERMISSIONS, true) });
      try {
        const { data } = await octokit.rest.repos.get({ owner, repo });
        return await remember(data);
      } catch (e) {
        const err = toGitHubError(e, `looking up ${fullName}`, {
          notFound: "repository_not_found",
          fallback: "clone_failed",
        });
        if (err.code === "repository_not_found") {
          throw new EngineError(
            "repository_not_found",
            `repository ${fullName} was not found, or this server's credentials cannot see it`,
            { repository: fullName },
          );
        }
        throw err;
      }
    },

    async cloneCredential(repo) {
      if (mode === "public") return undefined;
      if (mode === "token") return basicCredential(config.githubToken!);
      return basicCredential(await installationToken(repo.fullName, READ_PERMISSIONS));
    },

    async forPublishing(repo) {
      if (mode === "public") {
        throw new EngineError(
          "publish_not_configured",
          "publishing needs a GitHub App (GITHUB_APP_ID + GITHUB_APP_PRIVATE_KEY) or GITHUB_TOKEN on the server",
        );
      }
      const known = await store.getRepositoryByName(repo.fullName);
      const token = mode === "token" ? config.githubToken! : await installationToken(repo.fullName, WRITE_PERMISSIONS);
      return {
        octokit: mode === "token" ? tokenOctokit! : new OctokitClass({ auth: token }),
        credential: basicCredential(token),
        ...(known?.defaultBranch ? { defaultBranch: known.defaultBranch } : {}),
      };
    },
  };
}
