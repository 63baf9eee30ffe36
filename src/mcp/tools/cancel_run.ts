/** `cancel_run`: stop a run, whatever it is doing. */
import { defineRunTool } from "../tool.ts";

export const cancelRunTool = defineRunTool({
  name: "cancel_run",
  title: "Cancel a run",
  description: [
    "Cancel a run: the agent's current turn is aborted, its sandbox stops, and the run becomes cancelled. Work already done is kept as the patch (get_patch).",
    "Use it to stop a run that is going the wrong way or taking too long. To finish a run normally after its turn ended, use end_session instead. Cancelling a finished run changes nothing. Returns the run.",
  ].join("\n\n"),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  scope: "write:builder",
  call: (engine, ownerId, runId) => engine.cancel(ownerId, runId),
});
