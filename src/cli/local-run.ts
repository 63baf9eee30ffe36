/** `patchbay run` without a server: one turn in-process on the local data dir. */
import { parseArgs } from "node:util";
import type { Config } from "../config.ts";
import { createLogger, describeEvent, openPatchbay } from "../engine/index.ts";
import { EXIT, UsageError } from "./errors.ts";

export async function runLocal(config: Config, args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      repo: { type: "string" },
      prompt: { type: "string" },
      model: { type: "string" },
      ref: { type: "string" },
      plan: { type: "boolean" },
    },
  });
  if (!values.repo || !values.prompt) throw new UsageError("run needs --repo owner/name and --prompt TEXT");
  // Progress lines go to stderr; JSON log lines would drown them unless asked for.
  const pb = await openPatchbay(config, { log: createLogger({ level: config.logLevel ?? "warn" }) });
  const owner = config.localOwner;
  try {
    const run = await pb.engine.startRun(owner, {
      repository: values.repo,
      prompt: values.prompt,
      ...(values.model ? { modelId: values.model } : {}),
      ...(values.ref ? { baseRef: values.ref } : {}),
      ...(values.plan ? { taskKind: "plan" } : {}),
    });
    process.stderr.write(`run ${run.id} on ${run.repository.fullName} with ${run.modelId}\n`);
    // The whole turn, from its first event: what was logged before this line is replayed.
    for await (const ev of await pb.engine.follow(owner, run.id, { until: "turn" }))
      process.stderr.write(`  · ${describeEvent(ev)}\n`);
    const done = await pb.engine.getRun(owner, run.id, { fullSummary: true });
    const { patch } = await pb.engine.getPatch(owner, run.id);
    if (done.status === "failed") process.stderr.write(`run failed: ${done.error?.code}: ${done.error?.message}\n`);
    process.stdout.write(`# Summary\n\n${done.summary ?? "(none)"}\n\n`);
    if (done.diffStats) {
      process.stdout.write(
        `# Changes: ${done.diffStats.files} files, +${done.diffStats.additions} -${done.diffStats.deletions}\n\n`,
      );
    }
    process.stdout.write(patch ? patch : "(no changes)\n");
    if (done.status === "idle") await pb.engine.endSession(owner, run.id);
    return done.status === "failed" || done.status === "cancelled" ? EXIT.failed : patch ? EXIT.ok : EXIT.noChanges;
  } finally {
    await pb.close();
  }
}
