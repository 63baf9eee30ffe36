/**
 * The warm pool's repository entries: for a repository runs come back to, a sandbox with it
 * checked out at its default branch and an OpenCode server whose instance for that directory
 * is already built, first prompt's lazy work included. A run on that repository takes the
 * entry, has its ref fetched and checked out if it differs (host sandboxes' `adopt`, from the
 * mirror), and gets a session on the server, bound to its token at the gateway by session
 * (as the shared server binds runs: `agent/opencode-shared.ts`), so no config changes and no
 * instance is disposed or built again. What is left before its first model request is the
 * fetch, a session and the prompt.
 *
 * Which repositories: those in PATCHBAY_WARM_REPOS, then the most recently used of those that
 * a second run has come back to, as many as the pool has slots for (all but one: a run on
 * any other repository still finds a plain warm entry; a pool of one gives its slot to the
 * last repeated repository). The server lists the configured models; a run with another
 * model, or one that needs a server of its own (secrets, a closed network), takes the plain
 * path. The clone credential a run brought is kept in memory (never stored) for refills of
 * its repository; a pinned repository before its first run is cloned without one.
 */
import type { AgentSession } from "../agent/agent.ts";
import { createSharedOpencodeServer, type SharedGateway, type SharedOpencodeServer } from "../agent/opencode-shared.ts";
import type { Logger } from "../log.ts";
import type { GitCredential, Sandbox, SandboxProvider, WarmSandbox } from "../sandbox/sandbox.ts";

/** Options for {@link createWarmRepos}. */
export interface WarmReposOptions {
  provider: SandboxProvider;
  gateway: SharedGateway;
  /** Models the entries' servers list; the first is their default. */
  models: readonly string[];
  textOnlyModels?: readonly string[];
  opencodeBin?: string;
  /** PATCHBAY_WARM_REPOS: kept warm whether or not runs came. */
  pinned: readonly string[];
  /** The pool's size: learned repositories take all slots but one (a pool of one: its slot). */
  size: number;
  /** Where a repository is cloned from when no run has named it yet. */
  cloneUrlOf: (fullName: string) => string;
  log: Logger;
}

/** A repository entry ready for a run. */
export interface RepoEntry {
  readonly fullName: string;
  /** The sandbox, adopted under its own name; `adopt` again gives it to the run. */
  readonly sandbox: WarmSandbox;
  /** The workdir the instance was built for (a renamed local sandbox keeps a link there). */
  readonly directory: string;
  readonly server: SharedOpencodeServer;
}

interface Source {
  cloneUrl: string;
  credential?: GitCredential;
  /** Runs seen on it (a second makes it a repeat repository). */
  runs: number;
}

export interface WarmRepos {
  /** Remember a run's repository (most recent first) and its credential for refills. */
  note(repository: { fullName: string; cloneUrl: string }, credential: GitCredential | undefined): void;
  /** Repositories that should have an entry, most wanted first. */
  wanted(): string[];
  /** Make an entry for `fullName` (its sandbox checked out, its server started and its instance built). */
  make(fullName: string, signal: AbortSignal): Promise<RepoEntry>;
  /** Whether an entry's server can serve a run with `modelId`. */
  serves(modelId: string): boolean;
  /** Open a run's agent on a taken entry, in the directory the instance was built for. */
  open(
    entry: RepoEntry,
    sandbox: Sandbox,
    start: { modelToken: string; modelId: string; watchdogMs: number; signal: AbortSignal },
  ): Promise<AgentSession>;
  /** Kill an entry no run took. */
  discard(entry: RepoEntry): Promise<void>;
}

export function createWarmRepos(o: WarmReposOptions): WarmRepos {
  const log = o.log.child({ component: "warm-repos" });
  /** Insertion order is recency: a noted repository is deleted and set again. */
  const sources = new Map<string, Source>();
  const learnedSlots = o.size <= 1 ? o.size : o.size - 1;

  return {
    note(repository, credential) {
      const prior = sources.get(repository.fullName);
      sources.delete(repository.fullName);
      sources.set(repository.fullName, {
        cloneUrl: repository.cloneUrl,
        ...(credential ? { credential } : {}),
        runs: (prior?.runs ?? 0) + 1,
      });
    },

    wanted() {
      const pinned = o.pinned.slice(0, o.size);
      const repeated = [...sources]
        .reverse()
        .filter(([name, s]) => s.runs >= 2 && !pinned.includes(name))
        .map(([name]) => name);
      return [...pinned, ...repeated.slice(0, Math.max(0, learnedSlots - pinned.length))];
    },

    async make(fullName, signal) {
      const source = sources.get(fullName);
      const warm = await o.provider.prepare!();
      let server: SharedOpencodeServer | undefined;
      try {
        const sandbox = await warm.adopt({
          runId: warm.id,
          ownerId: "patchbay",
          repository: { fullName, cloneUrl: source?.cloneUrl ?? o.cloneUrlOf(fullName) },
          ...(source?.credential ? { credential: source.credential } : {}),
          signal,
        });
        server = createSharedOpencodeServer({
          sandbox: async () => sandbox,
          gateway: o.gateway,
          models: o.models,
          ...(o.textOnlyModels?.length ? { textOnlyModels: o.textOnlyModels } : {}),
          ...(o.opencodeBin ? { opencodeBin: o.opencodeBin } : {}),
          warmable: true,
          dedicated: true,
          log,
        });
        await server.prebuild(sandbox.workdir, signal);
        return { fullName, sandbox: warm, directory: sandbox.workdir, server };
      } catch (e) {
        await server?.close().catch(() => undefined);
        await warm.kill();
        throw e;
      }
    },

    serves: (modelId) => o.models.includes(modelId),

    async open(entry, sandbox, start) {
      const agent = await entry.server.open({ sandbox, directory: entry.directory, ...start });
      // The server is the run's alone: it ends with the run's session (all else is the agent's).
      const close = async () => {
        await agent.close();
        await entry.server.close();
      };
      return Object.create(agent, { close: { value: close } }) as AgentSession;
    },

    async discard(entry) {
      await entry.server.close().catch(() => undefined);
      await entry.sandbox.kill();
    },
  };
}
