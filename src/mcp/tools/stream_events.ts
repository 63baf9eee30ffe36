/** `stream_events`: long-poll a run's event log from a cursor. */
import * as z from "zod";
import { RunEvent } from "../../engine/events/schema.ts";
import { RunStatus } from "../../engine/run/schema.ts";
import { describeEvent } from "../../engine/index.ts";
import { RunIdField } from "../fields.ts";
import { sidecar } from "../sidecar.ts";
import { defineTool } from "../tool.ts";

/** Longest a call may wait for new events: below common client request timeouts (60 s). */
export const MAX_WAIT_MS = 30_000;
const DEFAULT_WAIT_MS = 10_000;
const DEFAULT_LIMIT = 100;
/** Most bytes of events one call returns (the first event always): a page must fit a model's context. */
const MAX_PAGE_BYTES = 1024 * 1024;

export const StreamEventsArgs = z
  .object({
    runId: RunIdField,
    after: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe(
        "Return events with an id greater than this (nextCursor of the previous call); default 0, from the start",
      ),
    waitMs: z
      .number()
      .int()
      .min(0)
      .max(MAX_WAIT_MS)
      .optional()
      .describe(
        `How long to wait for new events when there are none yet (0-${MAX_WAIT_MS} ms, default ${DEFAULT_WAIT_MS})`,
      ),
    limit: z
      .number()
      .int()
      .min(1)
      .max(500)
      .optional()
      .describe(`Most events to return (1-500, default ${DEFAULT_LIMIT})`),
  })
  .strict();

export const StreamEventsResult = z.object({
  events: z.array(RunEvent),
  nextCursor: z.number().int().describe("Pass as `after` in the next call"),
  status: RunStatus,
  done: z.boolean().describe("true when the run stopped working and every event so far was returned"),
});
type StreamEventsResult = z.infer<typeof StreamEventsResult>;

/** A status event that ends a turn: the run stopped working, no event follows on its own. */
function endsTurn(ev: RunEvent | undefined): boolean {
  return ev?.type === "run.status" && ev.data.status !== "queued" && ev.data.status !== "running";
}

export const streamEventsTool = defineTool({
  name: "stream_events",
  title: "Stream a run's events",
  description: sidecar(import.meta.url, "stream_events.md"),
  input: StreamEventsArgs,
  output: StreamEventsResult,
  annotations: { readOnlyHint: true, openWorldHint: false },
  scope: "read:builder",
  async run({ runId, after = 0, waitMs = DEFAULT_WAIT_MS, limit = DEFAULT_LIMIT }, ctx) {
    const { engine, caller, extra } = ctx;
    const owner = caller.ownerId;
    const page = { maxBytes: MAX_PAGE_BYTES };
    let events = await engine.events(owner, runId, after, limit, page);
    /** Nothing new, and the run had stopped working at the cursor: nothing comes on its own. */
    let over = false;
    if (events.length === 0 && waitMs > 0) {
      // Follow the run until its next event, the end of its turn, the deadline or the client's cancel.
      const signal = AbortSignal.any([extra.signal, AbortSignal.timeout(waitMs)]);
      const follow = await engine.follow(owner, runId, { after, until: "turn", signal });
      let next = false;
      for await (const _ of follow) {
        next = true;
        break;
      }
      // Ended by itself with nothing after the cursor: the turn was already over there.
      if (!next) over = !signal.aborted;
      else events = await engine.events(owner, runId, after, limit, page);
    } else if (events.length === 0 && after > 0) {
      // No wait asked for: the log answers whether the run stopped at the cursor.
      over = endsTurn((await engine.events(owner, runId, after - 1, 1))[0]);
    }
    const nextCursor = events.at(-1)?.id ?? after;
    // Done when the page ends the turn and nothing follows it (the page may stop at limit or bytes).
    const done = events.length
      ? endsTurn(events.at(-1)) && (await engine.events(owner, runId, nextCursor, 1)).length === 0
      : over;
    const { status } = await engine.getRun(owner, runId);
    const structured: StreamEventsResult = { events, nextCursor, status, done };
    const head = `${events.length} event(s) of run ${runId} after ${after}; next cursor ${nextCursor}; status ${status}${done ? "; done (the run stopped working)" : ""}.`;
    const text = [head, ...events.map(describeEvent)].join("\n");
    return { structured, text };
  },
});
