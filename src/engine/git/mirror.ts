/**
 * The local mirror cache: one bare `git clone --mirror` per repository under
 * `<dataDir>/mirrors/<owner>/<name>.git`, fetched before each use, so a run clones from the
 * network once and afterwards only fetches what changed. Workspaces are then cloned from
 * the mirror on the local disk.
 *
 * The mirror's remote URL never holds a credential: it is passed per command through the
 * environment (`credentialEnv`).
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import { RepositoryFullName } from "../run/schema.ts";
import type { GitCredential } from "../sandbox/sandbox.ts";
import { credentialEnv, gitOrThrow, PATCHBAY_IDENTITY, type GitRunner } from "./git.ts";
import { createSerialQueues } from "../serial.ts";

export interface MirrorRequest {
  /** `owner/name`. */
  fullName: string;
  /** Where the repository is fetched from; never contains credentials. */
  cloneUrl: string;
  credential?: GitCredential;
  signal?: AbortSignal;
}

export interface MirrorCache {
  /** Path the mirror of `fullName` has (whether or not it exists yet). */
  pathOf(fullName: string): string;
  /**
   * Bring the mirror up to date (clone it the first time, fetch afterwards), then run `fn`
   * with its path while no other request for the same repository touches it. Throws
   * `EngineError("clone_failed")` when the remote cannot be cloned or fetched.
   */
  withMirror<T>(req: MirrorRequest, fn: (mirrorDir: string) => Promise<T>): Promise<T>;
}

export interface MirrorCacheOptions {
  /** Mirrors live in `<dataDir>/mirrors`. */
  dataDir: string;
  /** Runs git on the host. */
  run: GitRunner;
  log?: Logger;
  /** Longest a clone or fetch may take. Default 10 minutes. */
  timeoutMs?: number;
}

/** Create the mirror cache. Requests for one repository are serialised in this process. */
export function createMirrorCache(opts: MirrorCacheOptions): MirrorCache {
  const log = opts.log ?? silentLogger;
  const root = path.join(opts.dataDir, "mirrors");
  const timeoutMs = opts.timeoutMs ?? 10 * 60_000;
  // One queue per repository: a fetch and a clone of the same mirror never overlap.
  const serial = createSerialQueues();

  const pathOf = (fullName: string): string => {
    // The name becomes a path: only a validated owner/name may (no `..`, no absolute path).
    if (!RepositoryFullName.safeParse(fullName).success) {
      throw new EngineError("invalid_repository", `repository ${JSON.stringify(fullName)} must be owner/name`);
    }
    const [owner, name] = fullName.split("/") as [string, string];
    return path.join(root, owner, `${name}.git`);
  };

  const update = async (req: MirrorRequest, dir: string): Promise<void> => {
    const what = `could not fetch ${req.fullName}`;
    const env = credentialEnv(req.credential, req.cloneUrl);
    const common = { env, timeoutMs, signal: req.signal, code: "clone_failed" as const, credential: req.credential };
    if (fs.existsSync(dir)) {
      // The base URL may have changed since the mirror was made (configuration); follow it.
      await gitOrThrow(opts.run, ["config", "remote.origin.url", req.cloneUrl], { ...common, cwd: dir, what });
      await gitOrThrow(opts.run, ["fetch", "--quiet", "--prune", "origin", "+refs/*:refs/*"], {
        ...common,
        cwd: dir,
        what,
      });
      await followDefaultBranch(dir, req);
      log.debug("mirror fetched", { repository: req.fullName });
      return;
    }
    // Clone next to the final place and rename: an interrupted clone never leaves a
    // half-made mirror that a later fetch would trust.
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    const partial = `${dir}.partial-${randomBytes(4).toString("hex")}`;
    try {
      await gitOrThrow(opts.run, ["clone", "--quiet", "--mirror", "--", req.cloneUrl, partial], {
        ...common,
        what: `could not clone ${req.fullName}`,
      });
      fs.renameSync(partial, dir);
    } finally {
      fs.rmSync(partial, { recursive: true, force: true });
    }
    log.info("mirror cloned", { repository: req.fullName });
  };

  /**
   * `fetch` does not move a bare repository's HEAD when the remote's default branch
   * changes; read it from the remote so "no ref" keeps meaning the current default branch.
   */
  const followDefaultBranch = async (dir: string, req: MirrorRequest): Promise<void> => {
    const out = await gitOrThrow(opts.run, ["ls-remote", "--symref", "origin", "HEAD"], {
      cwd: dir,
      env: credentialEnv(req.credential, req.cloneUrl),
      timeoutMs,
      signal: req.signal,
      code: "clone_failed",
      what: `could not read the default branch of ${req.fullName}`,
      credential: req.credential,
    });
    const m = /^ref: (refs\/heads\/\S+)\tHEAD$/m.exec(out);
    if (!m) return; // an empty remote has no default branch to follow
    await gitOrThrow(opts.run, ["symbolic-ref", "HEAD", m[1]!], {
      cwd: dir,
      code: "clone_failed",
      what: `could not update the default branch of ${req.fullName}`,
    });
  };

  return {
    pathOf,
    withMirror<T>(req: MirrorRequest, fn: (mirrorDir: string) => Promise<T>): Promise<T> {
      const dir = pathOf(req.fullName);
      return serial(dir, async () => {
        await update(req, dir);
        return fn(dir);
      });
    },
  };
}

export interface CheckoutOptions {
  run: GitRunner;
  mirrorDir: string;
  /** Directory to create the checkout in; must not exist or be empty. */
  workdir: string;
  /** Set as `origin` of the checkout (the real remote, without credentials). */
  cloneUrl: string;
  fullName: string;
  /** Branch, tag or (abbreviated) sha; the default branch when unset. Validated by the caller. */
  ref?: string;
  signal?: AbortSignal;
}

export interface CheckoutResult {
  baseSha: string;
  /** The branch, tag or sha checked out; the default branch's name when no ref was asked. */
  baseRef: string;
  kind: "branch" | "tag" | "sha";
}

/**
 * Clone a working checkout from a mirror and check out `ref`: a branch (as a local branch
 * tracking `origin/<ref>`), else a tag, else a commit id (both detached). Objects are
 * hard-linked from the mirror, so this is fast and needs no network. The checkout gets
 * Patchbay's identity in its local config so that `git commit` inside it works.
 * Throws `EngineError("invalid_ref")` when the ref names nothing in the repository.
 */
export async function checkoutFromMirror(opts: CheckoutOptions): Promise<CheckoutResult> {
  const { run, workdir } = opts;
  await gitOrThrow(run, ["clone", "--quiet", "--no-checkout", "--", opts.mirrorDir, workdir], {
    signal: opts.signal,
    code: "sandbox_failed",
    what: `could not create a workspace for ${opts.fullName}`,
  });
  const at = { cwd: workdir, signal: opts.signal, code: "sandbox_failed" as const };
  await gitOrThrow(run, ["remote", "set-url", "origin", opts.cloneUrl], {
    ...at,
    what: "could not set the workspace's remote",
  });
  const target = await checkOutRef(opts, false);
  await gitOrThrow(run, ["config", "user.name", PATCHBAY_IDENTITY.name], {
    ...at,
    what: "could not configure the workspace",
  });
  await gitOrThrow(run, ["config", "user.email", PATCHBAY_IDENTITY.email], {
    ...at,
    what: "could not configure the workspace",
  });
  return target;
}

/**
 * Bring a checkout made by {@link checkoutFromMirror} (and never worked in: a warm pool's
 * repository entry) to `ref` of the mirror as it is now: its branches and tags fetched from
 * the mirror on the local disk, the default branch followed, then `ref` checked out as a
 * fresh checkout would have it, with nothing else left in the tree. Only moves what differs.
 */
export async function updateFromMirror(opts: CheckoutOptions): Promise<CheckoutResult> {
  const { run, workdir } = opts;
  const at = { cwd: workdir, signal: opts.signal, code: "sandbox_failed" as const };
  const what = `could not update the workspace of ${opts.fullName}`;
  await gitOrThrow(
    run,
    [
      "fetch",
      "--quiet",
      "--prune",
      "--",
      opts.mirrorDir,
      "+refs/heads/*:refs/remotes/origin/*",
      "+refs/tags/*:refs/tags/*",
    ],
    { ...at, what },
  );
  const head = await run(["symbolic-ref", "--quiet", "HEAD"], { cwd: opts.mirrorDir, signal: opts.signal });
  const branch = head.exitCode === 0 ? head.stdout.trim().replace(/^refs\/heads\//, "") : "";
  if (branch)
    await gitOrThrow(run, ["symbolic-ref", "refs/remotes/origin/HEAD", `refs/remotes/origin/${branch}`], {
      ...at,
      what,
    });
  return checkOutRef(opts, true);
}

/** Resolve `opts.ref` (the default branch when unset) in the checkout and check it out; `force` discards what the tree holds. */
async function checkOutRef(opts: CheckoutOptions, force: boolean): Promise<CheckoutResult> {
  const { run, workdir } = opts;
  const at = { cwd: workdir, signal: opts.signal };
  const must = (args: string[], what: string) => gitOrThrow(run, args, { ...at, code: "sandbox_failed", what });
  const resolve = async (rev: string): Promise<string | undefined> => {
    const res = await run(["rev-parse", "--verify", "--quiet", "--end-of-options", `${rev}^{commit}`], at);
    return res.exitCode === 0 ? res.stdout.trim() : undefined;
  };

  let target: CheckoutResult;
  const ref = opts.ref;
  if (ref === undefined) {
    const head = await run(["symbolic-ref", "--quiet", "refs/remotes/origin/HEAD"], at);
    const branch = head.exitCode === 0 ? head.stdout.trim().replace(/^refs\/remotes\/origin\//, "") : "";
    const sha = branch ? await resolve(`refs/remotes/origin/${branch}`) : undefined;
    if (!sha) throw new EngineError("invalid_ref", `${opts.fullName} has no default branch (is it empty?)`);
    target = { baseSha: sha, baseRef: branch, kind: "branch" };
  } else {
    target = await resolveRef(ref, opts.fullName, resolve);
  }

  const f = force ? ["--force"] : [];
  if (target.kind === "branch") {
    // A local branch named like the ref, tracking it: what a developer would have after
    // `git clone -b`, so an agent's `git status` and `git log` read naturally.
    await must(
      ["checkout", "--quiet", ...f, "-B", target.baseRef, "--track", `refs/remotes/origin/${target.baseRef}`],
      `could not check out ${target.baseRef}`,
    );
  } else {
    await must(
      ["-c", "advice.detachedHead=false", "checkout", "--quiet", ...f, "--detach", target.baseSha],
      `could not check out ${target.baseRef}`,
    );
  }
  if (force) await must(["clean", "--quiet", "-ffdx"], `could not clean the workspace of ${opts.fullName}`);
  return target;
}

/** Branch first, then tag, then commit id; `refs/heads/x` and `refs/tags/x` are understood too. */
async function resolveRef(
  ref: string,
  fullName: string,
  resolve: (rev: string) => Promise<string | undefined>,
): Promise<CheckoutResult> {
  const branch = ref.startsWith("refs/heads/")
    ? ref.slice("refs/heads/".length)
    : ref.startsWith("refs/tags/")
      ? undefined
      : ref;
  const tag = ref.startsWith("refs/tags/")
    ? ref.slice("refs/tags/".length)
    : ref.startsWith("refs/heads/")
      ? undefined
      : ref;
  if (branch) {
    const sha = await resolve(`refs/remotes/origin/${branch}`);
    if (sha) return { baseSha: sha, baseRef: branch, kind: "branch" };
  }
  if (tag) {
    const sha = await resolve(`refs/tags/${tag}`);
    if (sha) return { baseSha: sha, baseRef: tag, kind: "tag" };
  }
  // Only hex may be read as a commit id: anything else (`HEAD`, `origin/x`) would let
  // rev-parse's wider syntax pick something the user did not name.
  if (/^[0-9a-f]{4,64}$/i.test(ref)) {
    const sha = await resolve(ref.toLowerCase());
    if (sha) return { baseSha: sha, baseRef: ref, kind: "sha" };
  }
  throw new EngineError("invalid_ref", `ref ${JSON.stringify(ref)} not found in ${fullName}`, { ref });
}
