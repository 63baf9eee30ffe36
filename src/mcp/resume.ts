/**
 * Resuming a stream another transport opened: a client whose `start_run` / `send_message` with
 * `wait` was in flight when Patchbay died reconnects (GET with `Last-Event-ID`) to the new
 * process, or a client cut off from one replica reconnects to another. The SDK's transport
 * cannot serve it (the request was made to another transport, so it has no place to send a
 * response to), so Patchbay serves that stream itself: it replays what the log holds after the
 * cursor, and then, while a live process still writes the stream (another replica whose call
 * goes on), sends each frame that process stores as it comes. Once no live process writes it,
 * it answers every request of the stream not answered yet, with its original id, and ends the
 * stream.
 *
 * - A call waiting on a run (its run id was recorded before the wait began) gets the run's
 *   turn result, as the tool would have returned it: recovery has settled the run by then
 *   (a running turn ends failed `server_restart`), and a turn still going is followed to its end.
 * - A call that died before it had a run gets a `server_restart` tool error.
 * - Any other request of the stream gets a JSON-RPC internal error: send it again.
 *
 * The answer is written to the log before it is sent, once per stream however many times the
 * client reconnects; the call's pending record goes with it.
 */
import type { ServerResponse } from "node:http";
import type { EventId } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { CallToolResult, JSONRPCMessage, RequestId } from "@modelcontextprotocol/sdk/types.js";
import { EngineError, type Engine, type Logger } from "../engine/index.ts";
import { ProtocolCode, toolError } from "./errors.ts";
import { isResponse, type ForeignStream, type SessionEventStore } from "./event-store.ts";
import { followFromNow } from "./follow.ts";
import type { SessionRecords } from "./session-records.ts";
import { turnOutput } from "./wait.ts";

const KEEP_ALIVE_MS = 15_000;

export interface ResumeTarget {
  sessionId: string;
  ownerId: string;
  events: SessionEventStore;
  stream: ForeignStream;
}

export interface StreamResumer {
  /** Serve `GET` with `Last-Event-ID: lastEventId` on a foreign stream to `res`. */
  serve(target: ResumeTarget, lastEventId: EventId, res: ServerResponse): Promise<void>;
}

export function createStreamResumer(deps: { engine: Engine; records: SessionRecords; log: Logger }): StreamResumer {
  const { engine, records, log } = deps;
  /** Answering in progress, by session and stream: one per stream whatever the reconnects. */
  const answering = new Map<string, Promise<void>>();

  /** What the tool call `requestId` would have returned. */
  async function answerOf(t: ResumeTarget, requestId: RequestId): Promise<JSONRPCMessage> {
    const record = await records.get(t.sessionId);
    const call = record?.calls.find((c) => c.requestId === requestId && c.streamId === t.stream.id);
    if (!call)
      return {
        jsonrpc: "2.0",
        id: requestId,
        error: {
          code: ProtocolCode.InternalError,
          message: "the server restarted while handling this request; send it again",
        },
      };
    let result: CallToolResult;
    if (!call.runId) {
      result = toolError(
        new EngineError(
          "server_restart",
          `the server restarted before ${call.tool} had a run to wait on; look for the run with list_runs before calling again`,
        ),
      );
    } else {
      try {
        result = await turnResultOf(t.ownerId, call.runId);
      } catch (e) {
        result = toolError(e);
      }
    }
    return { jsonrpc: "2.0", id: requestId, result };
  }

  async function turnResultOf(ownerId: string, runId: string): Promise<CallToolResult> {
    let run = await engine.getRun(ownerId, runId);
    if (run.status === "queued" || run.status === "running") {
      const follow = await followFromNow(engine, ownerId, runId, { until: "turn" });
      for await (const _ of follow) {
        // Only its end matters.
      }
      run = await engine.getRun(ownerId, runId);
    }
    const { structured, text } = turnOutput(run, true);
    return { content: [{ type: "text", text }], structuredContent: structured as Record<string, unknown> };
  }

  /** Answer the requests of the stream `eventId` is on that `answered` lacks. */
  function answer(t: ResumeTarget, eventId: EventId, answered: ReadonlySet<RequestId>): Promise<void> {
    const key = `${t.sessionId} ${t.stream.id}`;
    let done = answering.get(key);
    if (!done) {
      done = (async () => {
        for (const id of t.stream.requestIds) {
          if (answered.has(id)) continue;
          const message = await answerOf(t, id);
          await t.events.storeAnswer(eventId, message as JSONRPCMessage & { id: RequestId });
          log.info("answered an MCP call a previous process left", { sessionId: t.sessionId.slice(0, 8), id });
        }
      })();
      answering.set(key, done);
      void done.then(
        () => answering.delete(key),
        () => answering.delete(key),
      );
    }
    return done;
  }

  return {
    async serve(t, lastEventId, res) {
      res.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-cache, no-transform",
        connection: "keep-alive",
        "mcp-session-id": t.sessionId,
      });
      res.flushHeaders();
      let cursor = lastEventId;
      const answered = new Set(t.stream.answered);
      const replay = () =>
        t.events.replayEventsAfter(cursor, {
          send: async (id, message) => {
            if (res.destroyed) return;
            res.write(`event: message\nid: ${id}\ndata: ${JSON.stringify(message)}\n\n`);
            cursor = id;
            if (isResponse(message)) answered.add(message.id);
          },
        });
      const unanswered = () => t.stream.requestIds.some((id) => !answered.has(id));
      const gone = new AbortController();
      res.once("close", () => gone.abort());
      // A comment now and then, as the SDK's streams do, so idle timeouts on the way keep it open.
      const keepAlive = setInterval(() => res.destroyed || res.write(": keepalive\n\n"), KEEP_ALIVE_MS);
      try {
        await replay();
        while (unanswered() && !res.destroyed) {
          const state = await t.events.next(cursor, gone.signal);
          if (state === "aborted") return;
          // The session ended meanwhile: nothing more will come.
          if (state === "gone") break;
          if (state === "orphaned") await answer(t, cursor, answered);
          await replay();
        }
      } catch (e) {
        // Dropped for the bounds meanwhile, or the answer could not be written: the client
        // reconnects and gets what is left.
        log.warn("could not resume an MCP stream", { error: e });
        res.destroy();
        return;
      } finally {
        clearInterval(keepAlive);
      }
      res.end();
    },
  };
}
