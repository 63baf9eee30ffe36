/**
 * `patchbay runs list|show|patch|follow|message|end|cancel` against a server, with the same
 * `--server`/`--key`/`--json` as `run` and the same exit codes.
 */
import { parseArgs } from "node:util";
import type { RunView } from "../../client/index.ts";
import type { Config } from "../config.ts";
import { EXIT, UsageError } from "./errors.ts";
import { connect, exitCodeFor, followTurn, printTurn, progressFor, REMOTE_OPTIONS } from "./remote.ts";

const out = (text: string) => process.stdout.write(text);
const asJson = (value: unknown) => out(JSON.stringify(value, null, 2) + "\n");

function oneLine(run: RunView): string {
  const summary = (run.summary ?? "").replace(/\s+/g, " ").slice(0, 60);
  return `${run.id}\t${run.status}\t${run.repository.fullName}\t${run.createdAt}\t${summary}`;
}

function showRun(run: RunView): void {
  const lines = [
    `id:         ${run.id}`,
    `status:     ${run.status}${run.error ? ` (${run.error.code}: ${run.error.message})` : ""}`,
    `repository: ${run.repository.fullName}${run.baseRef ? ` @ ${run.baseRef}` : ""}`,
    `model:      ${run.modelId}`,
    `turns:      ${run.turnCount}`,
    `session:    ${run.sessionActive ? `warm until ${run.sessionExpiresAt}` : "ended"}`,
    `changes:    ${run.diffStats ? `${run.diffStats.files} files, +${run.diffStats.additions} -${run.diffStats.deletions}` : "none"}`,
    `usage:      ${run.usage.inputTokens} in, ${run.usage.outputTokens} out${run.usage.costUsd !== undefined ? `, $${run.usage.costUsd}` : ""}`,
    ...(run.draftPullRequest ? [`draft PR:   ${run.draftPullRequest.url}`] : []),
    ...(run.chainedFrom ? [`chained:    from ${run.chainedFrom}`] : []),
    "",
    run.summary ?? "(no summary yet)",
  ];
  out(lines.join("\n") + "\n");
}

/** Runs the subcommand; resolves with the exit code. */
export async function runsCommand(config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      ...REMOTE_OPTIONS,
      limit: { type: "string" },
      prompt: { type: "string" },
      wait: { type: "boolean" },
    },
  });
  const json = values.json === true;
  const id = () => {
    const [runId, ...extra] = positionals;
    if (!runId || extra.length) throw new UsageError(`runs ${sub} needs one run ID`);
    return runId;
  };
  switch (sub) {
    case "list": {
      const limit = values.limit === undefined ? 20 : Number(values.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 100)
        throw new UsageError(`--limit must be 1 to 100, not "${values.limit}"`);
      const page = await connect(config, values).listRuns({ limit });
      if (json) asJson(page);
      else for (const run of page.runs) out(oneLine(run) + "\n");
      return EXIT.ok;
    }
    case "show": {
      const run = await connect(config, values).getRun(id(), { fullSummary: true });
      if (json) asJson(run);
      else showRun(run);
      return EXIT.ok;
    }
    case "patch": {
      const run = await connect(config, values).getRun(id(), { patch: true });
      if (json) asJson({ id: run.id, status: run.status, patch: run.patch ?? null });
      else if (run.patch) out(run.patch);
      return run.patch ? EXIT.ok : EXIT.noChanges;
    }
    case "follow": {
      const client = connect(config, values);
      const done = await followTurn(client, id(), progressFor(json));
      if (json) asJson(done);
      else showRun(done);
      return exitCodeFor(done);
    }
    case "message": {
      const runId = id();
      if (!values.prompt) throw new UsageError("runs message needs --prompt TEXT");
      const client = connect(config, values);
      const { status, run } = await client.sendMessage(runId, { prompt: values.prompt });
      if (status === 201) process.stderr.write(`chained run ${run.id} (from ${runId})\n`);
      if (!values.wait) {
        if (json) asJson(run);
        else out(`${run.id}\t${run.status}\n`);
        return EXIT.ok;
      }
      return printTurn(await followTurn(client, run.id, progressFor(json)), json);
    }
    case "end":
    case "cancel": {
      const client = connect(config, values);
      const run = sub === "end" ? await client.endSession(id()) : await client.cancel(id());
      if (json) asJson(run);
      else out(`${run.id}\t${run.status}\n`);
      return EXIT.ok;
    }
    default:
      throw new UsageError(`unknown runs command "${sub ?? ""}"`);
  }
}
