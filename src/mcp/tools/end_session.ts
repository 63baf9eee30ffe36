/** `end_session`: finish an idle run and free its sandbox. */
import { defineRunTool } from "../tool.ts";

export const endSessionTool = defineRunTool({
  name: "end_session",
  title: "End a run's session",
  description: [
    "End the warm session of an idle run: its sandbox and agent stop and the run becomes completed. The patch, summary and events stay available (get_patch, get_run, stream_events).",
    "Use it when you are done with a run, to free resources (sessions also end by themselves after the idle timeout). A later send_message starts a chained run instead of continuing this one.",
    "A run that is still working answers error session_busy (use cancel_run to stop it). Ending an already finished run changes nothing. Returns the run.",
  ].join("\n\n"),
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
  scope: "write:builder",
  call: (engine, ownerId, runId) => engine.endSession(ownerId, runId),
});
