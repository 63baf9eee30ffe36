/** `get_patch`: the run's unified diff, optionally for some files and capped in size. */
import * as z from "zod";
import { RunStatus } from "../../engine/run/schema.ts";
import { RunIdField } from "../fields.ts";
import { cutPatch } from "../patch.ts";
import { defineTool } from "../tool.ts";

/** Default size cap: large enough for most changes, small enough for a model's context. */
export const DEFAULT_PATCH_MAX_BYTES = 200_000;

export const GetPatchArgs = z
  .object({
    runId: RunIdField,
    paths: z
      .array(z.string().min(1).max(1000))
      .max(200)
      .optional()
      .describe(
        "Only the diff of these files (repository-relative paths; a directory path includes the files under it)",
      ),
    maxBytes: z
      .number()
      .int()
      .min(1)
      .max(10_000_000)
      .optional()
      .describe(
        `Cap on the returned patch in bytes (default ${DEFAULT_PATCH_MAX_BYTES}); the patch is cut at a line boundary and truncated is true`,
      ),
  })
  .strict();

export const GetPatchResult = z.object({
  runId: z.string(),
  status: RunStatus,
  patch: z
    .string()
    .nullable()
    .describe("Unified diff (git format) against the run's base commit; null when the run has no changes yet"),
  files: z.array(z.string()).describe("Files in the returned diff"),
  truncated: z.boolean().describe("true when the patch was cut at maxBytes"),
  totalBytes: z.number().int().describe("Size of the (filtered) patch before the cap"),
});

export const getPatchTool = defineTool({
  name: "get_patch",
  title: "Get a run's patch",
  description: [
    "Get the unified diff (git format) of everything the agent changed in a run, against the commit it started from. It is ready once a turn ended (status idle or later) and accumulates over follow-up turns.",
    "Use it to review or apply the agent's work (e.g. `git apply`). Pass `paths` to see only some files, and `maxBytes` to bound the size; `truncated` tells when the patch was cut, `files` lists the files in it.",
    "Returns runId, status, patch (null when there are no changes), files, truncated and totalBytes.",
  ].join("\n\n"),
  input: GetPatchArgs,
  output: GetPatchResult,
  annotations: { readOnlyHint: true, openWorldHint: false },
  scope: "read:builder",
  async run({ runId, paths, maxBytes = DEFAULT_PATCH_MAX_BYTES }, ctx) {
    const { status, patch } = await ctx.engine.getPatch(ctx.caller.ownerId, runId);
    if (patch === null) {
      const structured = { runId, status, patch: null, files: [], truncated: false, totalBytes: 0 };
      return { structured, text: `Run ${runId} (${status}) has no patch yet.` };
    }
    const cut = cutPatch(patch, { maxBytes, ...(paths ? { paths } : {}) });
    const structured = { runId, status, ...cut };
    const head = `Patch of run ${runId} (${status}): ${cut.files.length} file(s), ${cut.totalBytes} bytes${cut.truncated ? `, truncated to ${maxBytes}` : ""}.`;
    return { structured, text: `${head}\n\n${cut.patch}` };
  },
});
