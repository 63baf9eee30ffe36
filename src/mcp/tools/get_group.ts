/** `get_group`: a group of sibling attempts (start_run with attempts > 1) and its best run. */
import * as z from "zod";
import { GroupView } from "../../engine/run/group-schema.ts";
import { defineTool } from "../tool.ts";

export const GetGroupArgs = z
  .object({ groupId: z.string().min(1).max(64).describe("The group id (`group.id` of a run started with attempts)") })
  .strict();

export const getGroupTool = defineTool({
  name: "get_group",
  title: "Get a group of attempts",
  description: [
    "Get a group of sibling runs that one start_run with attempts (2-4) started: each run's status, and once every sibling is idle or ended, its rank and the group's bestRunId.",
    "With validationMode basic or tests the group is ranked by validation (passed first), then by diff size (smaller first); only the best run publishes. Read a sibling's diff with get_patch.",
  ].join("\n\n"),
  input: GetGroupArgs,
  output: GroupView,
  annotations: { readOnlyHint: true, openWorldHint: false },
  scope: "read:builder",
  async run({ groupId }, ctx) {
    const group = await ctx.engine.getGroup(ctx.caller.ownerId, groupId);
    const lines = group.runs.map(
      (r) =>
        `- attempt ${r.attempt}: ${r.id} ${r.status}${r.rank !== null ? `, rank ${r.rank} (validation ${r.validation ?? "none"}, ${r.diffSize} lines changed)` : ""}`,
    );
    const head = `Group ${group.id} (${group.status}): ${group.attempts} attempts${group.bestRunId ? `, best ${group.bestRunId}` : ""}`;
    return { structured: group, text: [head, ...lines].join("\n") };
  },
});
