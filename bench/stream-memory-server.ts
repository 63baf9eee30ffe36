/**
 * The server side of the stream-memory benchmark, as its own process: a real Patchbay (store,
 * engine, HTTP app, local sandboxes) whose agent is a bench-only stand-in that answers a 20 MB
 * text (the red-team pass's run) after 300 steps of 100 KB of text each. Prints
 * `listening <url> <apiKey>`.
 */
import { serveWithAgent } from "./agent-server.ts";
import type { AgentDriver, AgentSession, TurnOptions } from "../src/engine/agent/agent.ts";

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

await serveWithAgent(talker, "talk");
