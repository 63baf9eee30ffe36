/**
 * The words of a published change: commit message, pull request title and body, generated
 * from the run's prompts, the agent's summary and the diff stats.
 */
import type { DiffStats } from "../run/schema.ts";

export interface PullRequestTextInput {
  runId: string;
  /** Every prompt of the run, oldest first. */
  prompts: string[];
  summary: string | null;
  diffStats: DiffStats | null;
  changedPaths: string[];
}

/** GitHub refuses bodies over 65 536 characters; stay well under. */
const MAX_BODY = 60_000;
const MAX_TITLE = 72;
const MAX_PATHS = 50;

function firstLine(text: string): string {
  return (
    text
      .split("\n")
      .map((l) => l.trim())
      .find(Boolean) ?? ""
  );
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1).trimEnd()}…`;
}

/** The pull request title: the first line of the first prompt, short enough for a list. */
export function pullRequestTitle(input: PullRequestTextInput): string {
  return clip(firstLine(input.prompts[0] ?? "") || `Changes from Patchbay run ${input.runId}`, MAX_TITLE);
}

/** One line of diff stats: `3 files changed, +10 −2`. */
export function statsLine(stats: DiffStats | null): string {
  if (!stats) return "no changes";
  return `${stats.files} file${stats.files === 1 ? "" : "s"} changed, +${stats.additions} −${stats.deletions}`;
}

/** The pull request body: summary, the requests that led to it, the diff stats and paths. */
export function pullRequestBody(input: PullRequestTextInput): string {
  const quote = (t: string) =>
    clip(t.trim(), 4000)
      .split("\n")
      .map((l) => `> ${l}`)
      .join("\n");
  const requests =
    input.prompts.length === 1
      ? quote(input.prompts[0]!)
      : input.prompts.map((p, i) => `**Turn ${i + 1}**\n\n${quote(p)}`).join("\n\n");
  const paths = input.changedPaths.slice(0, MAX_PATHS).map((p) => `- \`${p.replace(/`/g, "'")}\``);
  if (input.changedPaths.length > MAX_PATHS) paths.push(`- … and ${input.changedPaths.length - MAX_PATHS} more`);
  const body = [
    input.summary?.trim() ? input.summary.trim() : "_The agent left no summary._",
    "### Request",
    requests,
    "### Changes",
    statsLine(input.diffStats),
    paths.join("\n"),
    "---",
    `Draft opened by Patchbay run \`${input.runId}\`; each follow-up turn pushes a new commit to this branch and updates this description.`,
  ]
    .filter(Boolean)
    .join("\n\n");
  return clip(body, MAX_BODY);
}

/** The commit message of one turn's publish. */
export function commitMessage(input: PullRequestTextInput): string {
  const turn = input.prompts.length;
  const subject = clip(firstLine(input.prompts.at(-1) ?? "") || "Patchbay changes", MAX_TITLE);
  return `${subject}\n\n${statsLine(input.diffStats)} in total.\nPatchbay run ${input.runId}, turn ${turn}.\n`;
}
