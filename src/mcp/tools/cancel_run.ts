/** `cancel_run`: stop a run, whatever it is doing. */
import * as z from "zod";
import { RunView } from "../../engine/run/view.ts";
import { describeRun } from "../describe.ts";
import { RunIdField } from "../fields.ts";
import { defineTool } from "../tool.ts";

export const CancelRunArgs = z.object({ runId: RunIdField }).strict();

export const cancelRunTool = defineTool({
  name: "cancel_run",
  title: "Cancel a run",
  description: [
    "Cancel a run: the agent's current turn is aborted, its sandbox stops, and the run becomes cancelled. Work already done is kept as the patch (get_patch).",
    "Use it to stop a run that is going the wrong way or taking too long. To finish a run normally after its turn ended, use end_session instead. Cancelling a finished run changes nothing. Returns the run.",
  ].join("\n\n"),
  input: CancelRunArgs,
  output: RunView,
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  scope: "write:builder",
  async run({ runId }, ctx) {
    const run = await ctx.engine.cancel(ctx.caller.ownerId, runId);
    return { structured: run, text: describeRun(run) };
  },
});
