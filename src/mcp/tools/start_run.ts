/** `start_run`: start a run, optionally waiting for its first turn. */
import * as z from "zod";
import { CreateRunInput } from "../../engine/run/schema.ts";
import { sidecar } from "../sidecar.ts";
import { defineTool } from "../tool.ts";
import { TurnResult, turnOutput, WaitField, waitForTurnWithProgress } from "../wait.ts";

export const StartRunArgs = CreateRunInput.extend({ wait: WaitField });

export const startRunTool = defineTool({
  name: "start_run",
  title: "Start a coding-agent run",
  description: sidecar(import.meta.url, "start_run.md"),
  input: StartRunArgs,
  output: TurnResult,
  // Not read-only, not idempotent (every call starts a run); open world: it may publish a PR.
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
  scope: "write:builder",
  async run({ wait, ...input }, ctx) {
    const { allowedRepositories } = ctx.caller;
    const started = await ctx.engine.startRun(
      ctx.caller.ownerId,
      input,
      allowedRepositories ? { allowedRepositories } : {},
    );
    const { run, waited } = wait ? await waitForTurnWithProgress(ctx, started.id) : { run: started, waited: false };
    return turnOutput(run, waited);
  },
});

export type StartRunArgs = z.infer<typeof StartRunArgs>;
