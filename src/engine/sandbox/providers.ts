/** Picks the sandbox provider named by PATCHBAY_SANDBOX. */
import type { Config } from "../../config.ts";
import { bundledOpencodeBin } from "../agent/opencode.ts";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { createBwrapProvider } from "./bwrap.ts";
import { createLocalProvider } from "./local.ts";
import type { SandboxProvider } from "./sandbox.ts";

/** The provider PATCHBAY_SANDBOX names. Throws EngineError("sandbox_failed") when it cannot run here. */
export async function createSandboxProvider(config: Config, log: Logger): Promise<SandboxProvider> {
  switch (config.sandbox) {
    case "local":
      return createLocalProvider({ dataDir: config.dataDir, log });
    case "bwrap":
      return createBwrapProvider({
        dataDir: config.dataDir,
        opencodeBin: config.opencodeBin ?? bundledOpencodeBin(),
        log,
      });
    default:
      throw new EngineError("sandbox_failed", `PATCHBAY_SANDBOX=${config.sandbox} is not available in this build yet`);
  }
}
