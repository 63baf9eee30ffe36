/**
 * The server side of the stream-memory benchmark, as its own process: a real Patchbay (store,
 * engine, HTTP app, local sandboxes) whose agent is a bench-only stand-in that answers a 20 MB
 * text (the red-team pass's run) after 300 steps of 100 KB of text each. Prints
 * `listening <url> <apiKey>`.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import type { AgentDriver, AgentSession, TurnOptions } from "../src/engine/agent/agent.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { createHttpApp } from "../src/http/app.ts";
import { benchRepository } from "./support.ts";

const STEPS = 300;
const STEP_TEXT = "s".repeat(100 * 1024);
const ANSWER = "a".repeat(20 * 1024 * 1024);

const talker: AgentDriver = {
  async start() {
    const session: AgentSession = {
      sessionId: "bench",
      pids: [],
      async runTurn(turn: TurnOptions) {
        for (let i = 0; i < STEPS; i++) turn.onEvent({ kind: "text", text: STEP_TEXT });
        turn.onEvent({ kind: "text", text: ANSWER });
        return { summary: ANSWER };
      },
      async abort() {},
      async close() {},
    };
    return session;
  },
};

const dataDir = process.argv[2]!;
// The one repository the runs name: acme/talk.
const gitBaseUrl = benchRepository(path.join(dataDir, "..", "repos"), "acme/talk", 1);

const config = loadConfig({
  PATCHBAY_DATA_DIR: dataDir,
  PATCHBAY_GIT_BASE_URL: gitBaseUrl,
  OPENROUTER_API_KEY: "sk-bench",
  PATCHBAY_RATE_LIMIT_PER_MIN: "10000000",
  PATH: process.env.PATH ?? "/usr/bin:/bin",
});
const pb = await openPatchbay(config, { log: createLogger({ level: "warn" }), agents: talker });
const { key } = await pb.keys.create({ name: "bench", scopes: ["read:builder", "write:builder"] });
const server = http.createServer(createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config }));
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
process.stdout.write(`listening http://127.0.0.1:${(server.address() as AddressInfo).port} ${key}\n`);
process.on("SIGTERM", () => {
  server.closeAllConnections();
  server.close();
  void pb.close().then(() => process.exit(0));
});
