/** Opens a real Patchbay (embedded store, local sandbox, real OpenCode) on temp dirs for tests. */
import { loadConfig, type Config } from "../../src/config.ts";
import { createLogger, openPatchbay, type Patchbay } from "../../src/engine/index.ts";
import { tempDir } from "../helpers.ts";

export interface TestPatchbay extends Patchbay {
  dataDir: string;
  logLines: string[];
}

export async function openTestPatchbay(
  env: Record<string, string>,
  overrides: Partial<Config> = {},
): Promise<TestPatchbay> {
  const dataDir = tempDir("data");
  // The host's PATH, as a started server has it: sandbox commands (node, npm) find their tools.
  const config = loadConfig(
    { PATH: process.env.PATH, PATCHBAY_DATA_DIR: dataDir, PATCHBAY_LOG_LEVEL: "debug", ...env },
    overrides,
  );
  const logLines: string[] = [];
  const log = createLogger({ level: "debug", write: (l) => logLines.push(l) });
  const pb = await openPatchbay(config, { log });
  return Object.assign(pb, { dataDir, logLines });
}
