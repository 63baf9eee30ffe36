/**
 * A Patchbay whose runs use a stand-in agent (no OpenCode), served on 127.0.0.1 for a bench
 * module's child process: it prints `listening <url> <key>` and stops on SIGTERM. The servers
 * of `sse-fanout` and `stream-memory` differ only in their agent and settings.
 */
import type { AddressInfo } from "node:net";
import path from "node:path";
import type { AgentDriver } from "../src/engine/agent/agent.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { createHttpApp, createHttpServer } from "../src/http/app.ts";
import { benchRepository } from "./support.ts";

export async function serveWithAgent(
  agents: AgentDriver,
  /** The one repository the runs name, `acme/<repo>`. */
  repo: string,
  env: Record<string, string> = {},
): Promise<void> {
  const dataDir = process.argv[2]!;
  const gitBaseUrl = benchRepository(path.join(dataDir, "..", "repos"), `acme/${repo}`, 1);
  const config = loadConfig({
    PATCHBAY_DATA_DIR: dataDir,
    PATCHBAY_GIT_BASE_URL: gitBaseUrl,
    OPENROUTER_API_KEY: "sk-bench",
    PATCHBAY_RATE_LIMIT_PER_MIN: "10000000",
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    ...env,
  });
  const pb = await openPatchbay(config, { log: createLogger({ level: "warn" }), agents });
  const { key } = await pb.keys.create({ name: "bench", scopes: ["read:builder", "write:builder"] });
  const server = createHttpServer(createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config }));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  process.stdout.write(`listening http://127.0.0.1:${(server.address() as AddressInfo).port} ${key}\n`);
  process.on("SIGTERM", () => {
    server.closeAllConnections();
    server.close();
    void pb.close().then(() => process.exit(0));
  });
}
