/**
 * The `local` sandbox provider: no isolation, for trusted repositories on your own machine.
 * A sandbox is a directory, `<dataDir>/sandboxes/<runId>/`, holding the checkout (`repo/`,
 * the workdir), a private HOME (`home/`) and a TMPDIR (`tmp/`); its processes run as the
 * Patchbay user, with a minimal environment that never includes Patchbay's own (API keys).
 * Everything but how a command starts is the host base's (`host.ts`).
 */
import path from "node:path";
import { DEFAULT_HOST_PATH } from "../../config.ts";
import { createHostProvider, sandboxEnv, type HostProviderOptions } from "./host.ts";
import type { SandboxProvider } from "./sandbox.ts";

export interface LocalProviderOptions extends HostProviderOptions {
  /** PATH given to commands in the sandbox (`config.hostPath`). Default: DEFAULT_HOST_PATH. */
  path?: string;
}

/** Create the `local` provider ("no isolation: for trusted repositories on your own machine"). */
export function createLocalProvider(opts: LocalProviderOptions): SandboxProvider {
  const hostPath = opts.path ?? DEFAULT_HOST_PATH;
  return createHostProvider(opts, {
    name: "local",
    // Commands see the host's paths, so a warm sandbox renamed after its run leaves a link
    // at its old path: a server started there keeps its HOME.
    hostPaths: true,
    workdir: (root) => path.join(root, "repo"),
    tmpdir: (root) => path.join(root, "tmp"),
    command: (root, argv, cwd) => ({
      file: argv[0]!,
      args: argv.slice(1),
      cwd,
      env: sandboxEnv({ path: hostPath, home: path.join(root, "home"), tmp: path.join(root, "tmp") }),
    }),
  });
}
