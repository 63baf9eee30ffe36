/** Picks the sandbox provider named by PATCHBAY_SANDBOX. */
import type { Config } from "../../config.ts";
import { bundledOpencodeBin } from "../agent/opencode.ts";
import { EngineError } from "../errors.ts";
import { createHostGit, hostGitOptions } from "../git/git.ts";
import type { Logger } from "../log.ts";
import { createBwrapProvider } from "./bwrap.ts";
import { createE2bProvider } from "./e2b.ts";
import { createLocalProvider } from "./local.ts";
import type { SandboxProvider } from "./sandbox.ts";

/** The provider PATCHBAY_SANDBOX names. Throws EngineError("sandbox_failed") when it cannot run here. */
export async function createSandboxProvider(config: Config, log: Logger): Promise<SandboxProvider> {
  // One server for every run serves their workspaces as host directories: only `local` has
  // its runs' workspaces on the host, unisolated, to begin with.
  if (config.sharedAgent && config.sandbox !== "local")
    throw new EngineError(
      "sandbox_failed",
      `PATCHBAY_SHARED_AGENT=1 needs PATCHBAY_SANDBOX=local (got ${config.sandbox}): a shared OpenCode server would cross the ${config.sandbox} sandboxes' isolation`,
    );
  const hostGit = () => createHostGit(hostGitOptions(config));
  switch (config.sandbox) {
    case "local":
      return createLocalProvider({ dataDir: config.dataDir, path: config.hostPath, gitRunner: hostGit(), log });
    case "bwrap":
      return createBwrapProvider({
        dataDir: config.dataDir,
        path: config.hostPath,
        gitRunner: hostGit(),
        opencodeBin: config.opencodeBin ?? bundledOpencodeBin(),
        sandboxUser: config.sandboxUser,
        log,
      });
    case "e2b":
      if (!config.e2bApiKey) throw new EngineError("sandbox_failed", "PATCHBAY_SANDBOX=e2b needs E2B_API_KEY");
      // The gateway listens on this host's loopback, which a cloud VM cannot reach.
      if (!config.publicGatewayUrl)
        throw new EngineError(
          "sandbox_failed",
          "PATCHBAY_SANDBOX=e2b needs PATCHBAY_PUBLIC_GATEWAY_URL: the URL at which E2B sandboxes reach this server's model gateway",
        );
      // The proxy behind that URL targets a port, and VMs that outlive a restart keep calling it.
      if (config.gatewayPort === 0)
        throw new EngineError(
          "sandbox_failed",
          "PATCHBAY_SANDBOX=e2b needs PATCHBAY_GATEWAY_PORT: the fixed loopback port the proxy behind PATCHBAY_PUBLIC_GATEWAY_URL forwards to",
        );
      return createE2bProvider({
        apiKey: config.e2bApiKey,
        template: config.e2bTemplate,
        publicGatewayUrl: config.publicGatewayUrl,
        sessionTtlMs: config.sessionTtlMs,
        turnTimeoutMs: config.turnTimeoutMs,
        log,
      });
  }
}
