/** `send_message`: a follow-up turn on a run (or end its session). */
import * as z from "zod";
import { MessageInput } from "../../engine/run/schema.ts";
import { describeRun } from "../describe.ts";
import { defineTool } from "../tool.ts";
import { TurnResult, WaitField, waitForTurnWithProgress } from "../wait.ts";
import { RunIdField } from "../fields.ts";

export const SendMessageArgs = MessageInput.extend({ runId: RunIdField, wait: WaitField });
export type SendMessageArgs = z.infer<typeof SendMessageArgs>;

export const sendMessageTool = defineTool({
  name: "send_message",
  title: "Send a follow-up to a run",
  description: [
    "Send a follow-up prompt to a run: the agent continues in the same workspace and conversation, and the patch accumulates.",
    "Use it after a turn ended (status idle) to ask for more changes or fixes. A run that is still working refuses it with error session_busy: wait (stream_events or get_run) and retry.",
    "If the run's session already ended or expired, Patchbay starts a chained run (a new run id, `chainedFrom` set) from the prior patch and conversation summary; use the returned id from then on.",
    "A run paused at a budget limit (idle, error budget_exceeded) continues when the message raises it: `limits: {maxTokens: ...}` replaces the fields it names.",
    '`taskKind: "code"` after a plan turn approves the plan: the same session continues with writing tools on (`taskKind: "plan"` makes turns read-only again).',
    "`endSession: true` (without a prompt) ends the session instead, like end_session. `wait: true` waits for the turn and returns summary, changedPaths and diffStats, with progress notifications when you pass a progressToken.",
    "`outputSchema` asks this turn for a JSON answer valid against it (returned as `output`); `images` shows the model pictures with the prompt (as in start_run).",
    "Returns the run and `waited`.",
  ].join("\n\n"),
  input: SendMessageArgs,
  output: TurnResult,
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
  scope: "write:builder",
  async run({ runId, wait, ...message }, ctx) {
    const sent = await ctx.engine.sendMessage(ctx.caller.ownerId, runId, message);
    const turnRunning = sent.status === "queued" || sent.status === "running";
    const { run, waited } =
      wait && turnRunning ? await waitForTurnWithProgress(ctx, sent.id) : { run: sent, waited: false };
    const structured: TurnResult = { ...run, waited: waited || (wait === true && !turnRunning) };
    const next =
      run.status === "running" ? "\nThe turn is still running: follow it with stream_events or get_run." : "";
    return { structured, text: describeRun(run) + next };
  },
});
