/**
 * A run as text for tool results: structured content carries the data; this paragraph is
 * what a person (or a model skimming) reads first. Events as text live in the engine
 * (`engine/events/describe.ts`), shared with the CLI.
 */
import type { RunView } from "../engine/index.ts";

/** One paragraph about a run: status, turn, changes, summary, error. */
export function describeRun(run: RunView): string {
  const parts = [
    `Run ${run.id} on ${run.repository.fullName} is ${run.status} (turn ${run.turnCount}, model ${run.modelId}).`,
  ];
  if (run.chainedFrom) parts.push(`It continues run ${run.chainedFrom} in a new session.`);
  if (run.group)
    parts.push(`Attempt ${run.group.attempt} of ${run.group.attempts} in group ${run.group.id}: get_group ranks them.`);
  if (run.planApproval === "pending")
    parts.push("Its plan awaits approval: send_message with taskKind code approves it and the agent writes code.");
  if (run.status === "idle")
    parts.push(
      run.sessionActive
        ? run.hibernated
          ? `The session is hibernated (nothing runs) until ${run.sessionExpiresAt}: send_message wakes and continues it.`
          : `The session is warm until ${run.sessionExpiresAt}: send_message continues it.`
        : "The session has expired.",
    );
  if (run.diffStats)
    parts.push(
      `Changes: ${run.diffStats.files} file(s), +${run.diffStats.additions} -${run.diffStats.deletions}: ${run.changedPaths.join(", ") || "none"}.`,
    );
  if (run.setup && run.setup.status !== "skipped")
    parts.push(
      `Setup ${run.setup.status}${run.setup.durationMs !== null ? ` in ${run.setup.durationMs} ms` : ""}${run.setup.cached ? " (restored from cache)" : ""}.`,
    );
  if (run.error) parts.push(`Error ${run.error.code}: ${run.error.message}`);
  if (run.limits) parts.push(describeBudget(run));
  if (run.error?.code === "setup_failed" && run.setup?.outputTail)
    parts.push(`Setup output (tail):\n${run.setup.outputTail.slice(-1500)}`);
  if (run.output !== null && run.output !== undefined)
    parts.push(`Output (valid against outputSchema):\n${JSON.stringify(run.output).slice(0, 4000)}`);
  if (run.outputError) parts.push(`Output invalid after a repair turn: ${run.outputError.join("; ")}`);
  if (run.draftPullRequest) parts.push(`Draft PR: ${run.draftPullRequest.url}`);
  if (run.summary) parts.push(`Summary:\n${run.summary}`);
  return parts.join("\n");
}

/** What the run spent against its limits, one clause per limit it has. */
function describeBudget(run: RunView): string {
  const { usage: u, limits: l } = run;
  const of: string[] = [];
  if (l?.maxTokens !== undefined) of.push(`${u.inputTokens + u.outputTokens} of ${l.maxTokens} tokens`);
  if (l?.maxCostUsd !== undefined)
    of.push(`$${u.costUsd ?? 0} of $${l.maxCostUsd}${u.costKnown === false ? " (some calls' cost unknown)" : ""}`);
  if (l?.maxDurationMs !== undefined) of.push(`${u.durationMs ?? 0} of ${l.maxDurationMs} ms`);
  return `Budget: ${of.join(", ") || "no limit set"} (at a limit: ${l?.onExceeded ?? "fail"}).`;
}
