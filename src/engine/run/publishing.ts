/**
 * Publishing a run's whole patch as a draft pull request, for a turn that just ended
 * (turn.ts) or for the best run of a group once it is ranked (groups.ts). A failure is
 * recorded on the run (`publish.status: failed`), never fails it: the patch stays either way.
 */
import { toEngineError } from "../errors.ts";
import type { BuilderEventData } from "../events/schema.ts";
import type { Logger } from "../log.ts";
import type { Publisher } from "../publish/publish.ts";
import type { RunStore } from "../store/store.ts";
import type { RunRecord } from "./schema.ts";

export interface RunPublishing {
  /** The run fields a publish changes (`publish`, `draftPullRequest`); the caller stores them. */
  publish(
    run: RunRecord,
    binaryPatch: string,
    results: Partial<RunRecord>,
    note: (data: BuilderEventData) => void,
    signal: AbortSignal,
  ): Promise<Partial<RunRecord>>;
}

export function createRunPublishing(deps: { store: RunStore; publisher: Publisher; log: Logger }): RunPublishing {
  const { store, log } = deps;
  return {
    async publish(
      run: RunRecord,
      binaryPatch: string,
      results: Partial<RunRecord>,
      note: (data: BuilderEventData) => void,
      signal: AbortSignal,
    ): Promise<Partial<RunRecord>> {
      note({ kind: "log", message: "publishing…" });
      try {
        const turns = await store.listTurns(run.id);
        const r = await deps.publisher.publish({
          runId: run.id,
          repository: run.repository,
          baseSha: run.baseSha!,
          baseRef: run.baseRef!,
          ...(run.publish.branch ? { branch: run.publish.branch } : {}),
          ...(run.publish.ownedBranch ? { ownedBranch: run.publish.ownedBranch } : {}),
          ...(run.publish.allowExistingBranch ? { allowExistingBranch: true } : {}),
          binaryPatch,
          prompts: turns.map((t) => t.prompt),
          summary: results.summary ?? run.summary,
          diffStats: results.diffStats ?? null,
          changedPaths: results.changedPaths ?? [],
          signal,
        });
        const { error: _previous, ...kept } = run.publish;
        if (r.status === "skipped") {
          note({ kind: "log", message: `nothing published: ${r.reason}` });
          return { publish: { ...kept, branch: r.branch, status: "skipped" } };
        }
        const pr = r.draftPullRequest;
        note({ kind: "log", message: `${r.created ? "opened" : "updated"} draft PR #${pr.number}: ${pr.url}` });
        // The branch is recorded so a follow-up (or a chained run) publishes to the same one.
        // A branch this publish created is Patchbay's: later turns and chained runs push to it without an opt-in.
        const publish = { ...kept, branch: r.branch, status: "published" as const };
        if (r.branchCreated) publish.ownedBranch = r.branch;
        return { publish, draftPullRequest: pr };
      } catch (e) {
        const err = toEngineError(e, "publish_failed");
        log.warn("publish failed", { runId: run.id, code: err.code, message: err.message });
        note({ kind: "log", message: `publish failed (${err.code}): ${err.message}` });
        return { publish: { ...run.publish, status: "failed", error: { code: err.code, message: err.message } } };
      }
    },
  };
}
