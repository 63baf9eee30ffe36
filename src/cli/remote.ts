/**
 * `patchbay run` against a server (`--server URL --key KEY`, or PATCHBAY_SERVER and
 * PATCHBAY_API_KEY), through the typed client: start the run, show its progress, print the
 * summary and patch (or one JSON document with `--json`), and exit with a code a CI job can
 * branch on (errors.ts EXIT).
 */
import { parseArgs } from "node:util";
import { createPatchbayClient, PatchbayApiError, type PatchbayClient, type RunWithPatch } from "../../client/index.ts";
import type { Config } from "../config.ts";
import { EXIT, UsageError } from "./errors.ts";
import { createProgress, type Progress } from "./progress.ts";

/** Options every remote command takes. */
export const REMOTE_OPTIONS = {
  server: { type: "string" },
  key: { type: "string" },
  json: { type: "boolean" },
} as const;

/** Whether `run` should go to a server: `--server` given, or PATCHBAY_SERVER set. */
export function wantsRemote(config: Config, args: readonly string[]): boolean {
  return config.server !== undefined || args.some((a) => a === "--server" || a.startsWith("--server="));
}

/** The client for `--server`/`--key`, else PATCHBAY_SERVER/PATCHBAY_API_KEY. */
export function connect(config: Config, values: { server?: string | undefined; key?: string | undefined }) {
  const baseUrl = values.server ?? config.server;
  const apiKey = values.key ?? config.apiKey;
  if (!baseUrl) throw new UsageError("no server: pass --server URL or set PATCHBAY_SERVER");
  if (!/^https?:\/\//.test(baseUrl)) throw new UsageError(`--server must be an http(s):// URL, not "${baseUrl}"`);
  if (!apiKey) throw new UsageError("no API key: pass --key KEY or set PATCHBAY_API_KEY");
  return createPatchbayClient({ baseUrl, apiKey });
}

/** The exit code for a run whose turn is over: 1 failed or cancelled, 3 no patch, else 0. */
export function exitCodeFor(run: RunWithPatch): number {
  if (run.status === "failed" || run.status === "cancelled") return EXIT.failed;
  return run.patch ? EXIT.ok : EXIT.noChanges;
}

/** Print a finished turn: the summary and patch on stdout (the run as JSON with `--json`), errors on stderr. */
export function printTurn(run: RunWithPatch, json: boolean): number {
  if (json) {
    process.stdout.write(JSON.stringify(run, null, 2) + "\n");
    return exitCodeFor(run);
  }
  if (run.error) process.stderr.write(`run ${run.status}: ${run.error.code}: ${run.error.message}\n`);
  process.stdout.write(`# Summary\n\n${run.summary ?? "(none)"}\n\n`);
  if (run.diffStats)
    process.stdout.write(
      `# Changes: ${run.diffStats.files} files, +${run.diffStats.additions} -${run.diffStats.deletions}\n\n`,
    );
  if (run.draftPullRequest) process.stdout.write(`# Draft pull request: ${run.draftPullRequest.url}\n\n`);
  process.stdout.write(run.patch ? run.patch : "(no changes)\n");
  return exitCodeFor(run);
}

/** Follow the run's current turn with progress; resolves with the run (and patch) once it is over. */
export async function followTurn(client: PatchbayClient, runId: string, progress: Progress): Promise<RunWithPatch> {
  try {
    return await client.waitForTurn(runId, { onEvent: (ev) => progress.event(ev) });
  } finally {
    progress.stop();
  }
}

export function progressFor(json: boolean | undefined): Progress {
  return createProgress({ out: process.stderr, quiet: json === true });
}

/** `patchbay run --server URL --key KEY --repo owner/name --prompt TEXT ...` */
export async function runRemote(config: Config, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      ...REMOTE_OPTIONS,
      repo: { type: "string" },
      prompt: { type: "string" },
      model: { type: "string" },
      ref: { type: "string" },
      plan: { type: "boolean" },
      keep: { type: "boolean" },
      validation: { type: "string" },
      "draft-pr": { type: "boolean" },
      branch: { type: "string" },
    },
  });
  if (!values.repo || !values.prompt) throw new UsageError("run needs --repo owner/name and --prompt TEXT");
  const validation = values.validation;
  if (validation !== undefined && !["minimal", "basic", "tests"].includes(validation))
    throw new UsageError(`--validation must be minimal, basic or tests, not "${validation}"`);
  const client = connect(config, values);
  const progress = progressFor(values.json);
  const run = await client.startRun({
    repository: values.repo,
    prompt: values.prompt,
    ...(values.model ? { modelId: values.model } : {}),
    ...(values.ref ? { baseRef: values.ref } : {}),
    ...(values.plan ? { taskKind: "plan" as const } : {}),
    ...(validation ? { validationMode: validation as "minimal" | "basic" | "tests" } : {}),
    ...(values["draft-pr"]
      ? { publish: { mode: "draft_pr" as const, ...(values.branch ? { branch: values.branch } : {}) } }
      : {}),
  });
  progress.note(`run ${run.id} on ${run.repository.fullName} with ${run.modelId}`);
  let done = await followTurn(client, run.id, progress);
  // The session stays warm with --keep (follow up with `runs message`); otherwise it ends here.
  if (done.status === "idle" && !values.keep) done = { ...(await client.endSession(run.id)), patch: done.patch };
  return printTurn(done, values.json === true);
}

/** An API error as one line: what the server said, and its code. */
export function describeApiError(e: unknown): string | undefined {
  if (e instanceof PatchbayApiError) return `${e.message} (${e.code}, HTTP ${e.status})`;
  if (e instanceof TypeError && /fetch failed/.test(e.message)) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    return `cannot reach the server: ${cause?.code ?? cause?.message ?? e.message}`;
  }
  return undefined;
}
