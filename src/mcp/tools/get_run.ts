/** `get_run`: one run's status and results. */
import { defineRunTool } from "../tool.ts";

export const getRunTool = defineRunTool({
  name: "get_run",
  title: "Get a run",
  description: [
    "Get a run's current state: status (queued, running, idle, completed, failed, cancelled), whether its session is still warm (sessionActive, sessionExpiresAt), the agent's summary of the last turn, changedPaths, diffStats, error, draft pull request and token usage.",
    "Use it to check on a run you started without wait, or before send_message. For the diff use get_patch; for the activity log use stream_events.",
  ].join("\n\n"),
  annotations: { readOnlyHint: true, openWorldHint: false },
  scope: "read:builder",
  call: (engine, ownerId, runId) => engine.getRun(ownerId, runId),
});
