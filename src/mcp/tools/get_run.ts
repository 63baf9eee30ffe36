/** `get_run`: one run's status and results. */
import * as z from "zod";
import { RunView } from "../../engine/run/view.ts";
import { describeRun } from "../describe.ts";
import { RunIdField } from "../fields.ts";
import { defineTool } from "../tool.ts";

export const GetRunArgs = z
  .object({
    runId: RunIdField,
    fullSummary: z
      .boolean()
      .optional()
      .describe("Return the summary whole, however long (by default it is cut at 16 KB and summaryTruncated says so)"),
  })
  .strict();

export const getRunTool = defineTool({
  name: "get_run",
  title: "Get a run",
  description: [
    "Get a run's current state: status (queued, running, idle, completed, failed, cancelled), whether its session is still warm (sessionActive, sessionExpiresAt) or hibernated (hibernated: nothing runs, a message wakes it), the agent's summary of the last turn, changedPaths, diffStats, error, draft pull request and token usage.",
    "Use it to check on a run you started without wait, or before send_message. For the diff use get_patch; for the activity log use stream_events. A summary over 16 KB is cut (summaryTruncated: true); pass fullSummary: true for all of it.",
  ].join("\n\n"),
  input: GetRunArgs,
  output: RunView,
  annotations: { readOnlyHint: true, openWorldHint: false },
  scope: "read:builder",
  async run({ runId, fullSummary }, ctx) {
    const run = await ctx.engine.getRun(ctx.caller.ownerId, runId, { fullSummary: fullSummary === true });
    return { structured: run, text: describeRun(run) };
  },
});
