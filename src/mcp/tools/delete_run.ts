/** `delete_run`: delete a finished run and everything kept for it. */
import * as z from "zod";
import { defineTool, RunIdArgs } from "../tool.ts";

export const DeleteRunResult = z.object({
  runId: z.string(),
  deleted: z.literal(true),
});

export const deleteRunTool = defineTool({
  name: "delete_run",
  title: "Delete a run",
  description: [
    "Delete a finished run for good: its record, turns, event log, patch, summary, secrets and webhook deliveries. It cannot be read, followed or continued afterwards.",
    "Only finished runs can be deleted (completed, failed, cancelled, or idle with the session ended): a run that is still working or has its session open answers error run_active (use cancel_run or end_session first).",
  ].join("\n\n"),
  input: RunIdArgs,
  output: DeleteRunResult,
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: false },
  scope: "write:builder",
  async run({ runId }, ctx) {
    await ctx.engine.deleteRun(ctx.caller.ownerId, runId);
    return { structured: { runId, deleted: true as const }, text: `Deleted run ${runId}.` };
  },
});
