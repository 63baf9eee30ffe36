/**
 * Short human-readable texts for tool results and progress messages. Structured content
 * carries the data; these lines are what a person (or a model skimming) reads first.
 */
import type { RunEvent } from "../engine/events/schema.ts";
import type { RunView } from "../engine/index.ts";

/** One paragraph about a run: status, turn, changes, summary, error. */
export function describeRun(run: RunView): string {
  const parts = [
    `Run ${run.id} on ${run.repository.fullName} is ${run.status} (turn ${run.turnCount}, model ${run.modelId}).`,
  ];
  if (run.chainedFrom) parts.push(`It continues run ${run.chainedFrom} in a new session.`);
  if (run.status === "idle")
    parts.push(
      run.sessionActive
        ? `The session is warm until ${run.sessionExpiresAt}: send_message continues it.`
        : "The session has expired.",
    );
  if (run.diffStats)
    parts.push(
      `Changes: ${run.diffStats.files} file(s), +${run.diffStats.additions} -${run.diffStats.deletions}: ${run.changedPaths.join(", ") || "none"}.`,
    );
  if (run.error) parts.push(`Error ${run.error.code}: ${run.error.message}`);
  if (run.draftPullRequest) parts.push(`Draft PR: ${run.draftPullRequest.url}`);
  if (run.summary) parts.push(`Summary:\n${run.summary}`);
  return parts.join("\n");
}

/**
 * A progress line for an event that marks a meaningful agent step (a tool call finishing,
 * a file edited, a status change, an error), or undefined for the rest (text deltas,
 * tool calls still running, step boundaries), so progress stays one notification per step.
 */
export function describeStep(ev: RunEvent): string | undefined {
  if (ev.type === "run.status") return `status: ${ev.data.status}${ev.data.error ? ` (${ev.data.error.code})` : ""}`;
  const d = ev.data;
  switch (d.kind) {
    case "tool":
      if (d.status !== "completed" && d.status !== "error") return undefined;
      return `${d.tool} ${d.status === "error" ? "failed" : "done"}${d.title ? `: ${d.title}` : ""}`;
    case "file.edited":
      return `edited ${d.path}`;
    case "error":
      return `error ${d.code}: ${d.message}`;
    default:
      return undefined;
  }
}

/** One compact line for any event, for the text of `stream_events`. */
export function describeEvent(ev: RunEvent): string {
  const head = `#${ev.id} turn ${ev.turn}`;
  if (ev.type === "run.status")
    return `${head} status ${ev.data.status}${ev.data.error ? ` (${ev.data.error.code}: ${ev.data.error.message})` : ""}`;
  const d = ev.data;
  const clip = (s: string) => (s.length > 200 ? s.slice(0, 197) + "..." : s).replace(/\s+/g, " ");
  switch (d.kind) {
    case "text":
    case "reasoning":
      return `${head} ${d.kind}: ${clip(d.text)}`;
    case "tool":
      return `${head} tool ${d.tool} ${d.status}${d.title ? `: ${clip(d.title)}` : ""}${d.error ? ` (${clip(d.error)})` : ""}`;
    case "file.edited":
      return `${head} edited ${d.path}`;
    case "step":
      return `${head} step ${d.phase}${d.reason ? ` (${d.reason})` : ""}`;
    case "error":
      return `${head} error ${d.code}: ${clip(d.message)}`;
    case "log":
      return `${head} log: ${clip(d.message)}`;
  }
}
