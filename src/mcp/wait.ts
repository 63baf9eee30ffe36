/**
 * Waiting for a turn on behalf of a tool call (`start_run` / `send_message` with `wait`),
 * with one MCP progress notification per meaningful agent step when the client asked for
 * progress. Waiting is tied to the request: if the client cancels it or goes away, the wait
 * stops and the run carries on (an assistant can pick it up with `get_run`/`stream_events`).
 */
import * as z from "zod";
import type { RunEvent } from "../engine/events/schema.ts";
import { RunView } from "../engine/run/view.ts";
import { describeStep } from "../engine/index.ts";
import { describeRun } from "./describe.ts";
import { followFromNow } from "./follow.ts";
import type { ToolContext, ToolOutput } from "./tool.ts";

/** Result of `start_run` and `send_message`: the run, and whether the turn was waited for. */
export const TurnResult = RunView.extend({
  waited: z
    .boolean()
    .describe(
      "true when the tool waited until the turn ended (wait: true); the summary, changedPaths and diffStats are then final for this turn",
    ),
});
export type TurnResult = z.infer<typeof TurnResult>;

/** Input field shared by the tools that start a turn. */
export const WaitField = z
  .boolean()
  .optional()
  .describe(
    "Wait until the turn ends (the run is idle, completed, failed or cancelled) and return its summary, changedPaths and diffStats. Progress notifications are sent per agent step when you pass a progressToken. Default false: return at once with the run id.",
  );

/**
 * How long a result waits after the last progress notification. The SDK's client handles
 * notifications a microtask late but responses at once, so a notification read in the same
 * chunk as the response finds its progress handler already gone and is dropped.
 */
const PROGRESS_SETTLE_MS = 50;

/** Wait for the run's current turn to end; never cancels the run. */
export async function waitForTurnWithProgress(
  ctx: ToolContext,
  runId: string,
): Promise<{ run: RunView; waited: boolean }> {
  const { engine, caller, extra, log } = ctx;
  // Written before the wait begins, so a process that dies during it leaves the run to answer with.
  await ctx.calls?.waiting(extra, runId);
  const progressToken = extra._meta?.progressToken;
  let progress = 0;
  let lastSentAt = 0;
  // Ends after the status that ends the turn, or when the client cancels the request or goes away.
  const follow = await followFromNow(engine, caller.ownerId, runId, { until: "turn", signal: extra.signal });
  try {
    for await (const ev of follow) {
      // The status that ends the turn is the result itself, not progress.
      if (progressToken === undefined || endsTurn(ev)) continue;
      const message = describeStep(ev);
      if (!message) continue;
      progress += 1;
      lastSentAt = Date.now();
      extra
        .sendNotification({ method: "notifications/progress", params: { progressToken, progress, message } })
        // A lost progress notification must not fail the tool call.
        .catch((e: unknown) => log.debug("progress notification not sent", { runId, error: e }));
    }
  } finally {
    const sinceLast = Date.now() - lastSentAt;
    if (sinceLast < PROGRESS_SETTLE_MS) await new Promise((r) => setTimeout(r, PROGRESS_SETTLE_MS - sinceLast));
  }
  // A cancelled or gone client stopped the wait, not the run: it carries on.
  return { run: await engine.getRun(caller.ownerId, runId), waited: !extra.signal.aborted };
}

const endsTurn = (ev: RunEvent) =>
  ev.type === "run.status" && ev.data.status !== "running" && ev.data.status !== "queued";

/** A turn's result as `start_run` and `send_message` return it. */
export function turnOutput(run: RunView, waited: boolean): ToolOutput<TurnResult> {
  const next =
    run.status === "queued" || run.status === "running"
      ? "\nThe turn is still running: follow it with stream_events or get_run."
      : "";
  return { structured: { ...run, waited }, text: describeRun(run) + next };
}
