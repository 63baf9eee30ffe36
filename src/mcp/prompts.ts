/**
 * MCP prompts: ready-made requests an assistant shows as slash commands.
 *
 * - `delegate_task`: hand a task on a repository to a Patchbay agent (start_run with wait,
 *   then review the patch).
 * - `review_run`: review what a run did: its summary, validation and patch, inlined.
 *
 * A prompt only reads (the caller's runs, through the facade); the assistant does the rest
 * with the tools. Completions for their arguments live in `completions.ts`.
 */
import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { McpError, type GetPromptResult } from "@modelcontextprotocol/sdk/types.js";
import * as z from "zod";
import { isEngineError, type Engine, type RunView } from "../engine/index.ts";
import { ProtocolCode } from "./errors.ts";
import { RunIdField } from "./fields.ts";
import { cutPatch } from "./patch.ts";
import type { McpCaller, McpScope, ToolExtra } from "./tool.ts";

/** How much of a patch `review_run` inlines; the rest is for get_patch with paths. */
export const REVIEW_PATCH_MAX_BYTES = 100_000;

export const DelegateTaskArgs = {
  repository: z.string().min(1).max(200).describe("The GitHub repository, owner/name"),
  task: z.string().min(1).max(20_000).describe("What the agent should do, in plain words"),
  publish: z
    .enum(["none", "draft_pr"])
    .optional()
    .describe("draft_pr to open a draft pull request with the change; none (default) to only produce a patch"),
  modelId: z.string().min(1).max(200).optional().describe("The model to run (default: the server's default model)"),
};

export const ReviewRunArgs = {
  runId: RunIdField.describe("The run to review (run_...)"),
};

/** Every prompt and its argument names, as `completion/complete` checks references against. */
export const PROMPT_ARGUMENTS: Readonly<Record<string, readonly string[]>> = {
  delegate_task: Object.keys(DelegateTaskArgs),
  review_run: Object.keys(ReviewRunArgs),
};

export interface PromptDeps {
  engine: Engine;
  caller(extra: ToolExtra, scope: McpScope): McpCaller;
}

const userText = (text: string): GetPromptResult["messages"][number] => ({
  role: "user",
  content: { type: "text", text },
});

/** Register the prompts on `server` (before it connects). */
export function registerPrompts(server: McpServer, deps: PromptDeps): void {
  server.registerPrompt(
    "delegate_task",
    {
      title: "Delegate a coding task",
      description:
        "Hand a coding task on a GitHub repository to a Patchbay agent: it runs in a sandbox and comes back with a patch (and a draft PR with publish draft_pr), which you then review.",
      argsSchema: DelegateTaskArgs,
    },
    ({ repository, task, publish, modelId }, extra): GetPromptResult => {
      deps.caller(extra, "read:builder");
      const args = {
        repository,
        prompt: task,
        ...(modelId ? { modelId } : {}),
        ...(publish === "draft_pr" ? { publish: { mode: "draft_pr" } } : {}),
        wait: true,
      };
      return {
        description: `Delegate a task on ${repository}`,
        messages: [
          userText(
            [
              `Delegate this task to a Patchbay coding agent working on the repository ${repository}:`,
              "",
              task,
              "",
              `Call the start_run tool with these arguments: ${JSON.stringify(args)}.`,
              "When it returns, read the change with get_patch and tell me what the agent did: its summary, the files it changed, and anything in the patch that looks wrong or unfinished." +
                (publish === "draft_pr" ? " Include the draft pull request's link." : ""),
              "If more work is needed, continue the same run with send_message; call end_session when we are done.",
            ].join("\n"),
          ),
        ],
      };
    },
  );

  server.registerPrompt(
    "review_run",
    {
      title: "Review a run",
      description:
        "Review what a Patchbay run did: its summary, validation results and patch, inlined for a code review.",
      argsSchema: ReviewRunArgs,
    },
    async ({ runId }, extra): Promise<GetPromptResult> => {
      const { ownerId } = deps.caller(extra, "read:builder");
      let run: RunView;
      let patch: string | null;
      try {
        run = await deps.engine.getRun(ownerId, runId);
        ({ patch } = await deps.engine.getPatch(ownerId, runId));
      } catch (e) {
        // Another owner's run is as unknown as a run that never was (REST's 404).
        if (isEngineError(e) && e.code === "run_not_found")
          throw new McpError(ProtocolCode.InvalidParams, `Unknown run: ${runId}`, { runId, code: e.code });
        throw e;
      }
      return { description: `Review of run ${runId}`, messages: [userText(reviewText(run, patch))] };
    },
  );
}

/** The review request: what the run is, its summary, its validation, its patch. */
function reviewText(run: RunView, patch: string | null): string {
  const lines = [
    `Review the work of Patchbay run ${run.id} on ${run.repository.fullName} (status ${run.status}, ${run.turnCount} turn(s), model ${run.modelId}).`,
    "Check that the change does what the summary claims, look for bugs, missing tests and unrelated edits, and say whether it is ready to merge. Quote file and line for each finding.",
    "",
    "## Summary",
    run.summary ?? "(no summary yet)",
  ];
  if (run.error) lines.push("", "## Error", `${run.error.code}: ${run.error.message}`);
  lines.push("", "## Validation");
  if (!run.validation) lines.push("(not validated)");
  else {
    lines.push(`${run.validation.mode}: ${run.validation.status}`);
    for (const c of run.validation.commands)
      lines.push(`- \`${c.command}\` exited ${c.exitCode ?? "(killed)"}${c.outputTail ? `:\n\n${c.outputTail}` : ""}`);
  }
  lines.push("", "## Patch");
  if (patch === null) lines.push("(no changes yet)");
  else {
    const cut = cutPatch(patch, { maxBytes: REVIEW_PATCH_MAX_BYTES });
    const files = run.diffStats
      ? `${run.diffStats.files} file(s), +${run.diffStats.additions} -${run.diffStats.deletions}`
      : `${cut.files.length} file(s)`;
    lines.push(files + (cut.truncated ? `; cut at ${REVIEW_PATCH_MAX_BYTES} bytes: read the rest with get_patch` : ""));
    lines.push("", "```diff", cut.patch.replace(/\n$/, ""), "```");
  }
  if (run.draftPullRequest) lines.push("", `Draft pull request: ${run.draftPullRequest.url}`);
  return lines.join("\n");
}
