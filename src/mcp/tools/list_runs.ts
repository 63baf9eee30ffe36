/** `list_runs`: the caller's runs, newest first. */
import * as z from "zod";
import { RunView } from "../../engine/run/view.ts";
import { defineTool } from "../tool.ts";

export const ListRunsArgs = z
  .object({
    limit: z.number().int().min(1).max(100).optional().describe("How many runs to return (1-100, default 20)"),
    cursor: z.string().min(1).max(200).optional().describe("nextCursor from a previous call, for the next page"),
  })
  .strict();

export const ListRunsResult = z.object({
  runs: z.array(RunView),
  nextCursor: z.string().nullable().describe("Pass as cursor for the next page; null on the last page"),
});

export const listRunsTool = defineTool({
  name: "list_runs",
  title: "List runs",
  description:
    "List your runs, newest first, with their status, repository, summary and changes. Use it to find a run id you lost or to see what is still running. Returns runs and nextCursor (null on the last page).",
  input: ListRunsArgs,
  output: ListRunsResult,
  annotations: { readOnlyHint: true, openWorldHint: false },
  scope: "read:builder",
  async run({ limit, cursor }, ctx) {
    const page = await ctx.engine.listRuns(ctx.caller.ownerId, {
      ...(limit ? { limit } : {}),
      ...(cursor ? { cursor } : {}),
    });
    const lines = page.runs.map((r) => `${r.id}  ${r.status.padEnd(9)}  ${r.repository.fullName}  ${r.createdAt}`);
    const text = page.runs.length
      ? `${page.runs.length} run(s):\n${lines.join("\n")}${page.nextCursor ? "\nMore: pass cursor " + page.nextCursor : ""}`
      : "No runs.";
    return { structured: page, text };
  },
});
