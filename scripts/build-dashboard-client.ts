/**
 * Writes src/dashboard/vendor/patchbay-client.js: the typed client (client/index.ts and
 * openapi-fetch) bundled by esbuild into one browser ES module, which the dashboard imports.
 * It is committed, so `npm install` and `npm start` build nothing; `npm run dashboard:build`
 * after changing the client, and test/client/browser-bundle.test.ts fails when it is stale.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const DASHBOARD_CLIENT_FILE = path.join(ROOT, "src/dashboard/vendor/patchbay-client.js");

const BANNER = `// The typed client (client/index.ts) with openapi-fetch, bundled for the dashboard by esbuild.
// Generated: do not edit; run \`npm run dashboard:build\` after changing client/.`;

/** The text the committed bundle must hold for the client as it is now. */
export async function buildDashboardClient(): Promise<string> {
  const out = await build({
    entryPoints: [path.join(ROOT, "client/index.ts")],
    absWorkingDir: ROOT,
    bundle: true,
    format: "esm",
    platform: "browser",
    // What the dashboard's own modules already need (ES modules, async iterators, streams).
    target: ["es2022"],
    // Readable, so a reviewer can read what the page runs; the source maps back by name.
    minify: false,
    legalComments: "none",
    // The bundle names its inputs by path: node_modules/…, the same in every checkout
    // (a worktree's node_modules may be a symlink to another checkout's).
    preserveSymlinks: true,
    banner: { js: BANNER },
    write: false,
    logLevel: "silent",
  });
  return out.outputFiles[0]!.text;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  fs.mkdirSync(path.dirname(DASHBOARD_CLIENT_FILE), { recursive: true });
  fs.writeFileSync(DASHBOARD_CLIENT_FILE, await buildDashboardClient());
  process.stderr.write(`wrote ${path.relative(process.cwd(), DASHBOARD_CLIENT_FILE)}\n`);
}
