/**
 * The server side of the SSE fan-out benchmark, run as its own process: a real Patchbay
 * (store, engine, HTTP app, local sandboxes) whose agent is a bench-only stand-in that emits
 * timestamped events at a fixed rate instead of calling a model. The prompt says when and how
 * fast: `emit <startEpochMs> <durationMs> <perSecond>`. The timestamp in each event lets the
 * subscribers measure delivery lag. Prints `listening <url> <apiKey>`.
 */
import { serveWithAgent } from "./agent-server.ts";
import type { AgentDriver, AgentSession, TurnOptions } from "../src/engine/agent/agent.ts";

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

await serveWithAgent(emitter, "fanout", {
  // The bench holds 1,000 streams of one key open on purpose (the default cap is 20).
  PATCHBAY_MAX_STREAMS_PER_KEY: "5000",
  PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "100",
  PATCHBAY_TURN_TIMEOUT_MS: "600000",
});
