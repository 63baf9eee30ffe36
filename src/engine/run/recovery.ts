/**
 * Recovery at start: the runs a previous process left active. Those whose session outlived it
 * (hosts that can reattach: e2b) are taken back — an idle one as it was, a running one with
 * its turn ended `server_restart`, its work as the patch and its session warm. The others lost
 * their sandbox and agent: idle ones end `completed`, queued and running ones `failed`.
 */
import { EngineError } from "../errors.ts";
import { computeDiff } from "../git/git.ts";
import { SessionResume, type RunSession } from "../session/host.ts";
import type { Endings } from "./end.ts";
import type { Hibernation } from "./hibernation.ts";
import type { RunParts } from "./parts.ts";
import type { RunRecord, RunStatus } from "./schema.ts";
import { gitIn, maskedDiff, RESUME_SECRET, sealResume } from "./turn.ts";

/** Longest a restart waits to take one run's session back before ending the run. */
const REATTACH_TIMEOUT_MS = 30_000;
/** Sessions taken back at once. */
const REATTACH_BATCH = 8;
const ACTIVE: readonly RunStatus[] = ["queued", "running", "idle"];

export interface RecoveryDeps extends RunParts {
  endings: Endings;
  hibernation: Hibernation;
}

/**
 * Settle what a previous process left, then start the session host (reap orphans, fill pools).
 * With replicas (`orphans`: the runs this one took over), only those are settled, and no
 * active run's sandbox is reaped: it may be another live replica's.
 */
export async function recover(deps: RecoveryDeps, shared?: { orphans: string[] }): Promise<void> {
  const reattached = shared
    ? await takeOver(deps, shared.orphans)
    : await settle(deps, await deps.store.runsByStatus(ACTIVE));
  const keep = shared ? new Set((await deps.store.runsByStatus(ACTIVE)).map((r) => r.id)) : reattached;
  // Sandboxes a killed predecessor left belong to no run now. A failure here (E2B's API down
  // for a moment) must not fail the start: that would kill the sessions just taken back.
  try {
    await deps.host.start(keep);
  } catch (e) {
    deps.log.warn("could not reap sandboxes a previous process left; the next start tries again", { error: e });
  }
}

/**
 * Runs a dead replica held (their lease ran out, and this replica took it): settled as after a
 * restart. Returns the ids of those whose session was taken back.
 */
export async function takeOver(deps: RecoveryDeps, runIds: readonly string[]): Promise<Set<string>> {
  const runs = await Promise.all(runIds.map((id) => deps.store.getRun(id)));
  return settle(
    deps,
    runs.filter((r): r is RunRecord => !!r && ACTIVE.includes(r.status)),
  );
}

/** Reattach what can be, end the rest (idle: completed; queued or running: failed, server_restart). */
async function settle(deps: RecoveryDeps, leftOver: RunRecord[]): Promise<Set<string>> {
  const { store, writer } = deps;
  const reattached = new Set<string>();
  // Nothing of a hibernated session was running: it is kept as it is, for every provider.
  for (const run of leftOver.filter((r) => r.status === "idle" && r.hibernated))
    if (await deps.hibernation.restore(run)) reattached.add(run.id);
  // Queued runs never had a sandbox; running ones on a host whose sessions outlive us did.
  const resumable = leftOver.filter(
    (r) => !reattached.has(r.id) && (r.status === "idle" || (r.status === "running" && r.baseSha)),
  );
  for (let i = 0; i < resumable.length; i += REATTACH_BATCH) {
    const batch = resumable.slice(i, i + REATTACH_BATCH);
    const ok = await Promise.all(batch.map((r) => reattach(deps, r)));
    batch.forEach((r, j) => ok[j] && reattached.add(r.id));
  }
  for (const run of leftOver) {
    if (reattached.has(run.id)) continue;
    if (run.status === "idle") {
      await store.deleteSecrets(run.id);
      await writer.setStatus(run, "completed", {});
    } else {
      await writer.setStatus(run, "failed", {
        error: { code: "server_restart", message: "the server restarted while this run was in progress" },
      });
      await store.deleteSecrets(run.id);
    }
  }
  return reattached;
}

/** Take one run's session back; false when it cannot (nothing saved, expired, gone, too slow). */
async function reattach(deps: RecoveryDeps, run: RunRecord): Promise<boolean> {
  const { host, store, log } = deps;
  if (!host.reattach) return false;
  if (run.status === "idle" && (!run.sessionExpiresAt || Date.parse(run.sessionExpiresAt) <= deps.now().getTime()))
    return false;
  const sealed = await store.getSecret(run.id, RESUME_SECRET);
  if (!sealed) return false;
  const signal = AbortSignal.timeout(REATTACH_TIMEOUT_MS);
  let taken: RunSession | undefined;
  try {
    const resume = SessionResume.parse(JSON.parse(deps.secrets.open(sealed)) as unknown);
    // The agent still has the run's secrets (a server started anew gets them): what it reports
    // from now on is masked as before.
    const env = await deps.environment.env(run);
    const attempt = host.reattach(run.id, resume, {
      modelId: run.modelId,
      ...(Object.keys(env).length ? { env } : {}),
      network: run.environment?.network ?? "open",
      watchdogMs: deps.config.watchdogMs,
      signal,
    });
    // Bounded as a whole (a VM or server that accepts and never answers must not hold the
    // start); an attempt that succeeds after the deadline lets go of what it took.
    const timedOut = new Promise<undefined>((resolve) =>
      signal.addEventListener("abort", () => resolve(undefined), { once: true }),
    );
    taken = await Promise.race([attempt, timedOut]);
    if (!taken) {
      void attempt.then(
        (late) => late.close(),
        () => undefined,
      );
      throw new EngineError("sandbox_failed", `reattaching took over ${REATTACH_TIMEOUT_MS} ms`);
    }
    deps.gateway.restoreToken(resume.token, deps.grants.grantFor(run));
    deps.sessions.bind(run.id, taken, resume.token);
    // A server started anew (it called another replica's gateway) is reached differently.
    await sealResume(deps, run.id, taken);
    await deps.writer.emit(run.id, {
      type: "builder.event",
      turn: run.turnCount,
      data: { kind: "log", message: "the server restarted; reattached to this run's sandbox and agent session" },
    });
    if (run.status === "running") await settleInterruptedTurn(deps, run, taken);
    else deps.endings.scheduleExpiry(run.id, run.sessionExpiresAt!);
    log.info("reattached a run", { runId: run.id, status: run.status });
    return true;
  } catch (e) {
    log.warn("could not reattach an idle run; ending it", { runId: run.id, error: e });
    if (taken) await taken.close().catch(() => undefined);
    return false;
  }
}

/**
 * A turn the dead process was running (reattach stopped it in the agent): it ends failed with
 * server_restart and the work it had done as the patch, and the run goes back to idle with
 * its session warm, so a message continues where the turn stopped instead of starting over.
 */
async function settleInterruptedTurn(deps: RecoveryDeps, run: RunRecord, session: RunSession): Promise<void> {
  const { store } = deps;
  const error = {
    code: "server_restart" as const,
    message: "the server restarted during this turn; its work so far is in the patch, and the session continues",
  };
  const { sandbox } = session;
  const diff = maskedDiff(await computeDiff(gitIn(sandbox), sandbox.workdir, run.baseSha!), (text) =>
    deps.environment.mask(text, run),
  );
  await store.putPatch(run.id, { text: diff.patch, binary: diff.binaryPatch });
  await store.updateTurn(run.id, run.turnCount, { status: "failed", error, finishedAt: deps.now().toISOString() });
  await deps.writer.emit(run.id, { type: "builder.event", turn: run.turnCount, data: { kind: "error", ...error } });
  const expiresAt = new Date(deps.now().getTime() + deps.config.sessionTtlMs).toISOString();
  await deps.writer.setStatus(run, "idle", {
    changedPaths: diff.changedPaths,
    diffStats: diff.diffStats,
    hasPatch: diff.patch.length > 0,
    error,
    sessionExpiresAt: expiresAt,
  });
  deps.endings.scheduleExpiry(run.id, expiresAt);
}
