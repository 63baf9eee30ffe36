/**
 * The E2B template for PATCHBAY_SANDBOX=e2b: Node, git and the same OpenCode version
 * Patchbay pins (package.json `opencode-ai`), preinstalled so a run's sandbox starts without
 * installing anything. No key, token or model configuration is baked in: Patchbay passes the
 * run's gateway token and config when it starts `opencode serve` in each sandbox.
 *
 * Build: `E2B_API_KEY=... npx tsx e2b/template.ts [name]` (default name `patchbay-opencode`),
 * then set PATCHBAY_E2B_TEMPLATE to that name. See the README section "E2B sandboxes".
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { defaultBuildLogger, Template } from "e2b";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
  dependencies: Record<string, string>;
};

/** The template definition (exported so a test or script can inspect it without building). */
export function patchbayTemplate(opencodeVersion = pkg.dependencies["opencode-ai"]!) {
  return (
    Template()
      .fromNodeImage("20")
      .aptInstall(["git", "ca-certificates", "ripgrep"], { noInstallRecommends: true })
      .npmInstall(`opencode-ai@${opencodeVersion}`, { g: true })
      // The runs' checkouts and mirrors live under the default user's home.
      .setUser("user")
      .setWorkdir("/home/user")
  );
}

async function main(): Promise<void> {
  const name = process.argv[2] ?? "patchbay-opencode";
  if (!process.env.E2B_API_KEY) {
    process.stderr.write("E2B_API_KEY is not set\n");
    process.exit(2);
  }
  const info = await Template.build(patchbayTemplate(), name, { onBuildLogs: defaultBuildLogger() });
  process.stdout.write(`built ${name}: ${JSON.stringify(info)}\nset PATCHBAY_E2B_TEMPLATE=${name}\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
