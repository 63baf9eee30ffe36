/**
 * The seed repository: one empty commit in a bare repository of Patchbay's own, for local
 * sandboxes that exist to host an agent server rather than a run (the shared agent
 * server's). A `local` sandbox made by `create` is always a checkout; this is the cheapest one.
 */
import fs from "node:fs";
import path from "node:path";
import { createHostGit, gitOrThrow } from "../git/git.ts";

/** Owner name no GitHub account can have (double hyphen), so the seed mirror never meets a real one. */
export const SEED_REPOSITORY = "patchbay--pool/seed";

/** Make the seed repository under `<dataDir>/pool-seed` if it is missing; its `file://` URL. */
export async function ensureSeedRepository(dataDir: string): Promise<string> {
  const bare = path.join(dataDir, "pool-seed", `${SEED_REPOSITORY}.git`);
  if (!fs.existsSync(path.join(bare, "HEAD"))) {
    const git = createHostGit({ home: path.join(dataDir, "git-home") });
    fs.mkdirSync(bare, { recursive: true });
    const must = (args: string[], stdin?: string) =>
      gitOrThrow(git, args, {
        cwd: bare,
        code: "sandbox_failed",
        what: "could not make the seed repository",
        ...(stdin !== undefined ? { stdin } : {}),
      });
    await must(["init", "--quiet", "--bare", "--initial-branch=main"]);
    const tree = (await must(["mktree"], "")).trim();
    const commit = (await must(["commit-tree", tree, "-m", "warm pool seed"])).trim();
    await must(["update-ref", "refs/heads/main", commit]);
  }
  return `file://${bare}`;
}
