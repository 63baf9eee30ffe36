/**
 * The server side of the SSE fan-out benchmark, run as its own process: a real Patchbay
 * (store, engine, HTTP app, local sandboxes) whose agent is a bench-only stand-in that emits
 * timestamped events at a fixed rate instead of calling a model. The prompt says when and how
 * fast: `emit <startEpochMs> <durationMs> <perSecond>`. The timestamp in each event lets the
 * subscribers measure delivery lag. Prints `listening <url> <apiKey>`.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import type { AgentDriver, AgentSession, TurnOptions } from "../src/engine/agent/agent.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { createHttpApp } from "../src/http/app.ts";
import { benchRepository } from "./support.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Wall-clock milliseconds with sub-millisecond precision, comparable across processes. */
export const nowMs = () => performance.timeOrigin + performance.now();

/** An agent that emits `perSecond` log events for `durationMs`, starting at `startEpochMs`. */
const emitter: AgentDriver = {
  async start() {
    let aborted = false;
    const session: AgentSession = {
      sessionId: "bench",
      pids: [],
      async runTurn(turn: TurnOptions) {
        const [, start, duration, rate] = turn.prompt.split(" ").map(Number) as [number, number, number, number];
        await sleep(Math.max(0, start - nowMs()));
        const interval = 1000 / rate;
        for (let i = 0; !aborted && !turn.signal?.aborted; i++) {
          const due = start + i * interval;
          if (due > start + duration) break;
          await sleep(Math.max(0, due - nowMs()));
          turn.onEvent({ kind: "log", message: `t=${nowMs().toFixed(3)}` });
        }
        return { summary: "emitted" };
      },
      async abort() {
        aborted = true;
      },
      async close() {
        aborted = true;
      },
    };
    return session;
  },
};

const dataDir = process.argv[2]!;
// The one repository the runs name: acme/fanout.
const gitBaseUrl = benchRepository(path.join(dataDir, "..", "repos"), "acme/fanout", 1);

const config = loadConfig({
  PATCHBAY_DATA_DIR: dataDir,
  PATCHBAY_GIT_BASE_URL: gitBaseUrl,
  OPENROUTER_API_KEY: "sk-bench",
  PATCHBAY_RATE_LIMIT_PER_MIN: "10000000",
  // The bench holds 1,000 streams of one key open on purpose (the default cap is 20).
  PATCHBAY_MAX_STREAMS_PER_KEY: "5000",
  PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "100",
  PATCHBAY_TURN_TIMEOUT_MS: "600000",
});
const pb = await openPatchbay(config, { log: createLogger({ level: "warn" }), agents: emitter });
const { key } = await pb.keys.create({ name: "bench", scopes: ["read:builder", "write:builder"] });
const server = http.createServer(createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config }));
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
process.stdout.write(`listening http://127.0.0.1:${(server.address() as AddressInfo).port} ${key}\n`);
process.on("SIGTERM", () => {
  server.closeAllConnections();
  server.close();
  void pb.close().then(() => process.exit(0));
});
