/** Picks the sandbox provider named by PATCHBAY_SANDBOX. */
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { createLocalProvider } from "./local.ts";
import type { SandboxProvider } from "./sandbox.ts";

export async function createSandboxProvider(config: Config, log: Logger): Promise<SandboxProvider> {
  switch (config.sandbox) {
    case "local":
      return createLocalProvider({ dataDir: config.dataDir, log });
    default:
      throw new EngineError("sandbox_failed", `PATCHBAY_SANDBOX=${config.sandbox} is not available in this build yet`);
  }
}
