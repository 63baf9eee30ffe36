/**
 * Preparing a sandbox's home for `opencode serve`.
 *
 * Each time OpenCode starts an instance it makes sure its global config dir
 * (`$XDG_CONFIG_HOME/opencode`) holds `@opencode-ai/plugin`, and in a fresh home it installs
 * it from the npm registry in the background (opencode 1.18.33, `Npm.install`): about 60 MB
 * written per sandbox (node_modules and the npm cache), a network fetch, and about 1 s of
 * CPU competing with the run's first prompt (measured on 2 cores: CPU from POST to the first
 * model request 2.2 s with it, 1.1 s without). Patchbay's agents load no plugins, so the
 * package is never used.
 *
 * OpenCode skips the install when `node_modules` exists and the dir's `package-lock.json`
 * lists the package (it compares names only), so that is what this writes.
 */
import type { Logger } from "../log.ts";
import type { Sandbox, WarmSandbox } from "../sandbox/sandbox.ts";

const LOCK = JSON.stringify({ packages: { "": { dependencies: { "@opencode-ai/plugin": "*" } } } });

/** Shell run inside the sandbox; an existing lock file (a resumed home) is left alone. */
const SCRIPT = [
  'd="${XDG_CONFIG_HOME:-$HOME/.config}/opencode"',
  'mkdir -p "$d/node_modules"',
  '[ -e "$d/package-lock.json" ] || printf "%s" "$1" > "$d/package-lock.json"',
].join(" && ");

/**
 * Mark OpenCode's plugin package as installed in the sandbox's home. Never throws: if it
 * cannot, OpenCode installs the package as it would have anyway.
 */
export async function skipPluginInstall(sandbox: Sandbox | WarmSandbox, log: Logger): Promise<void> {
  try {
    const res = await sandbox.exec(["sh", "-c", SCRIPT, "sh", LOCK], { timeoutMs: 30_000 });
    if (res.exitCode !== 0)
      log.warn("could not mark OpenCode's plugin package as installed", { stderr: res.stderr.slice(-500) });
  } catch (e) {
    log.warn("could not mark OpenCode's plugin package as installed", { error: e });
  }
}
