/**
 * A turn: put the run into `running`, open its session on the first turn (sandbox at the ref,
 * the chained patch applied, the agent started), prompt the agent, take the diff, validate,
 * publish, and leave the run `idle` with its session warm — or end it `failed`/`cancelled`
 * with the work done so far kept as the patch. A turn its budget stopped (budget.ts) ends the
 * run `failed`, or leaves it `idle` with error `budget_exceeded` when its limits say `pause`.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { AgentImage, AgentSession } from "../agent/agent.ts";
import type { Setups } from "../environment/setup.ts";
import { EngineError, isEngineError, toEngineError, type ErrorCode } from "../errors.ts";
import type { BuilderEventData } from "../events/schema.ts";
import { applyPatch, computeDiff, type DiffResult, type GitRunner } from "../git/git.ts";
import type { RepositoryAccess } from "../github/access.ts";
import type { Publisher } from "../publish/publish.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import type { RunSession } from "../session/host.ts";
import { validateTurn } from "../validation/validation.ts";
import type { BudgetStop, Budgets } from "./budget.ts";
import type { Endings } from "./end.ts";
import type { Hibernation } from "./hibernation.ts";
import { isTerminal, type OutputSchema, type RunRecord } from "./schema.ts";
import type { RunParts } from "./parts.ts";
import { createRunPublishing } from "./publishing.ts";
import type { ImageDescription } from "./images.ts";
import { outputInstruction, settleOutput, type OutputResult, type OutputSchemas } from "./output.ts";
import type { Hold } from "./sessions.ts";
import { boundSummary, storeSummary } from "./summary.ts";

/** The sealed secret a later process reattaches a session with (sessions that outlive us). */
export const RESUME_SECRET = "session";

/**
 * Seal what a later process needs to take the session over (the agent's password and the
 * gateway token are in it); again whenever its server may have changed (taken over, woken).
 */
export async function sealResume(
  parts: Pick<RunParts, "store" | "secrets">,
  runId: string,
  session: RunSession,
): Promise<void> {
  if (session.resume)
    await parts.store.putSecret(parts.secrets.seal(runId, RESUME_SECRET, JSON.stringify(session.resume)));
}
const SHUTDOWN_MESSAGE = "the server shut down while this turn was running; send the message again";

/** What a turn brings besides its prompt (checked by the engine before the turn begins). */
export interface TurnInput {
  /** The answer's schema for this turn; default: the run's `outputSchema`. */
  outputSchema?: OutputSchema;
  images?: { image: AgentImage; description: ImageDescription }[];
}

export interface Turns {
  /**
   * Put a held run into `running` for a new turn and start it in the background. The turn
   * releases `hold` when the run is idle again (or ended).
   */
  begin(run: RunRecord, prompt: string, hold: Hold, chainFrom?: RunRecord, input?: TurnInput): Promise<RunRecord>;
}

export interface TurnDeps extends RunParts {
  setups: Setups;
  repositories: RepositoryAccess;
  publisher: Publisher;
  endings: Endings;
  hibernation: Hibernation;
  budgets: Budgets;
  outputs: OutputSchemas;
}

/**
 * Another replica took the run over (replicas.ts aborted the turn with lease_lost, or a write
 * was refused with it): the new owner has settled the run, so this turn writes nothing more.
 */
const takenOver = (abort: AbortController, e?: unknown): boolean =>
  [abort.signal.reason, e].some((x) => isEngineError(x) && x.code === "lease_lost");

export function gitIn(sandbox: Sandbox): GitRunner {
  return (args, opts) => sandbox.exec(["git", ...args], opts);
}

/**
 * A diff as Patchbay records, shows and publishes it: the run's secret values masked in both
 * forms (a secret the agent wrote into a file never reaches a PR, the patch or a chained run).
 */
export function maskedDiff(diff: DiffResult, mask: (text: string) => string): DiffResult {
  return {
    patch: mask(diff.patch),
    binaryPatch: mask(diff.binaryPatch),
    changedPaths: diff.changedPaths.map(mask),
    diffStats: diff.diffStats,
  };
}

export function createTurns(deps: TurnDeps): Turns {
  const { config, store, writer, sessions, log } = deps;
  const iso = () => deps.now().toISOString();
  const publishing = createRunPublishing(deps);

  const startIn = async (run: RunRecord): Promise<{ fromSnapshot?: string }> => {
    const snapshot = await deps.setups.baseFor(run);
    return snapshot ? { fromSnapshot: snapshot } : {};
  };

  /** The run's first turn: a sandbox at the ref (the prior patch applied for a chained run) and an agent in it. */
  async function open(
    run: RunRecord,
    abort: AbortController,
    note: (data: BuilderEventData) => void,
    chainFrom?: RunRecord,
  ): Promise<{ session: RunSession; run: RunRecord }> {
    if (!(await deps.grants.upstreamKey(run))) {
      throw new EngineError(
        "no_model_key",
        run.billingMode === "managed"
          ? "no model key: the server has no OPENROUTER_API_KEY for managed billing; set it or use billing.mode openrouter"
          : "no model key: the run's openRouterApiKey is gone (sessions forget it when they end)",
      );
    }
    const ref = chainFrom?.baseSha ?? run.baseRef;
    // Engine-side only: the host uses it per git command and never stores it.
    const credential = await deps.repositories.cloneCredential(run.repository);
    const token = deps.gateway.issueToken(deps.grants.grantFor(run));
    sessions.bindToken(run.id, token);
    // The agent's server gets the secrets in its process environment, which its shell commands inherit.
    const env = await deps.environment.env(run);
    const session = await deps.host.open({
      runId: run.id,
      ownerId: run.ownerId,
      repository: {
        fullName: run.repository.fullName,
        cloneUrl: `${config.gitBaseUrl}/${run.repository.fullName}.git`,
      },
      ...(ref ? { ref } : {}),
      ...(credential ? { credential } : {}),
      modelId: run.modelId,
      token,
      ...(Object.keys(env).length ? { env } : {}),
      network: run.environment?.network ?? "open",
      // Providers with snapshots start the sandbox in the repository's last setup layer.
      ...(await startIn(run)),
      watchdogMs: config.watchdogMs,
      signal: abort.signal,
      onLog: (message) => note({ kind: "log", message }),
      // Beside the agent's start: a restored layer or an install costs only what it takes beyond it.
      // A cancel stops setup's command (its exec takes the signal); the sandbox is killed only
      // once the agent's start beside it has settled too (agentIn), never under it.
      prepare: async (sandbox, workspaceReady) => {
        run = await store.updateRun(run.id, {
          baseSha: chainFrom?.baseSha ?? sandbox.baseSha,
          baseRef: run.baseRef ?? sandbox.baseRef,
        });
        // Before the prior patch: the cache is keyed by the files at the checked-out commit.
        run = await deps.setups.prepare(run, sandbox, abort.signal, workspaceReady);
        if (abort.signal.aborted) throw new EngineError("cancelled", "the run was cancelled");
      },
    });
    sessions.bind(run.id, session, token);
    const { sandbox } = session;
    if (chainFrom) {
      const prior = await store.getBinaryPatch(chainFrom.id);
      if (prior) await applyPatch(gitIn(sandbox), sandbox.workdir, prior);
    }
    if (abort.signal.aborted) throw new EngineError("cancelled", "the run was cancelled");
    await sealResume(deps, run.id, session);
    return { session, run };
  }

  /** The agent's turn, then validation (which may run one repair turn); the patch is taken even for a failed turn. */
  async function work(
    run: RunRecord,
    agent: AgentSession,
    sandbox: Sandbox,
    prompt: string,
    signal: AbortSignal,
    budgetSignal: AbortSignal,
    input: TurnInput,
  ) {
    const note = (data: BuilderEventData) => writer.note(run, data);
    // The run's time limit stops the agent's turn (not validation, which has its own limits).
    const agentSignal = AbortSignal.any([signal, budgetSignal]);
    const turn = (p: string, images?: AgentImage[]) =>
      agent.runTurn({
        prompt: p,
        ...(images?.length ? { images } : {}),
        kind: run.taskKind,
        timeoutMs: config.turnTimeoutMs,
        onEvent: note,
        signal: agentSignal,
      });
    const images = input.images?.map((i) => i.image);
    if (input.images?.length) note({ kind: "prompt.images", images: input.images.map((i) => i.description) });
    const schema = input.outputSchema ?? run.outputSchema;
    let outcome = await turn(schema ? `${prompt}\n\n${outputInstruction(schema)}` : prompt, images);
    // Every turn sets `output`: null when it had no schema.
    let output: OutputResult = { output: null, outputError: null };
    if (schema) ({ outcome, result: output } = await settleOutput(deps.outputs.compile(schema), outcome, turn, note));
    let diff = await computeDiff(gitIn(sandbox), sandbox.workdir, run.baseSha!);
    let summary = outcome.summary;
    const validation =
      outcome.error || run.taskKind === "plan"
        ? null
        : await validateTurn({
            sandbox,
            mode: run.validationMode,
            baseSha: run.baseSha!,
            patch: diff.binaryPatch,
            signal,
            env: { ...config.hostProxyEnv, ...(await deps.environment.env(run)) },
            // Setup installed what the checks need; only runs from before setups install here.
            install: run.setup == null,
            onLog: (message) => note({ kind: "log", message }),
            repair: async (p) => {
              const again = await turn(p);
              if (again.summary) summary = again.summary;
              diff = await computeDiff(gitIn(sandbox), sandbox.workdir, run.baseSha!);
              return diff.binaryPatch;
            },
          });
    return { outcome, diff, summary, validation, output };
  }

  async function execute(
    runId: string,
    prompt: string,
    abort: AbortController,
    hold: Hold,
    chainFrom: RunRecord | undefined,
    input: TurnInput,
  ) {
    let run = (await store.getRun(runId))!;
    const note = (data: BuilderEventData) => writer.note(run, data);
    try {
      let session = sessions.get(runId);
      if (!session && sessions.hibernated(runId)) session = await deps.hibernation.wake(run, abort.signal);
      if (!session) {
        ({ session, run } = await open(run, abort, note, chainFrom));
        // Setup (which has network) runs before this; from here on the agent reaches the model only.
        if (run.environment?.network === "model-only") await restrictNetwork(session.sandbox);
      }
      const budget = deps.budgets.startTurn(run);
      let stop: BudgetStop | undefined;
      let work_: Awaited<ReturnType<typeof work>>;
      try {
        work_ = await work(run, session.agent, session.sandbox, prompt, abort.signal, budget.signal, input);
      } finally {
        stop = await budget.end();
      }
      if (takenOver(abort)) return;
      const mask = (text: string) => deps.environment.mask(text, run);
      // A cancel or a shutdown outranks the budget: their endings are the ones asked for.
      const overBudget = stop && !abort.signal.aborted && !deps.closing() ? stop : undefined;
      const outcome = overBudget
        ? { ...work_.outcome, error: { code: "budget_exceeded" as const, message: overBudget.message } }
        : work_.outcome;
      const diff = maskedDiff(work_.diff, mask);
      const summary = mask(work_.summary);
      const validation = deps.environment.maskDeep(runId, work_.validation);
      await store.putPatch(runId, { text: diff.patch, binary: diff.binaryPatch });
      run = (await store.getRun(runId))!;
      const results: Partial<RunRecord> = {
        // A turn that said nothing keeps the summary of the one before.
        ...(summary ? await storeSummary(store, runId, summary) : {}),
        ...(validation ? { validation } : {}),
        changedPaths: diff.changedPaths,
        diffStats: diff.diffStats,
        hasPatch: diff.patch.length > 0,
        output: deps.environment.maskDeep(runId, work_.output.output),
        outputError: work_.output.outputError?.map(mask) ?? null,
      };
      await store.updateTurn(runId, run.turnCount, {
        status: outcome.error ? (outcome.error.code === "cancelled" ? "cancelled" : "failed") : "done",
        summary: boundSummary(mask(outcome.summary)),
        error: outcome.error ? { ...outcome.error, message: mask(outcome.error.message) } : null,
        output: results.output,
        outputError: results.outputError ?? null,
        finishedAt: iso(),
      });
      if (run.status === "cancelled") return; // cancel() already finished the run
      if (outcome.error) {
        if (outcome.error.code === "cancelled" && !deps.closing()) {
          // cancel() finishes the run once this turn has unwound.
          await store.updateRun(runId, results);
          return;
        }
        const error: { code: ErrorCode; message: string } = deps.closing()
          ? { code: "shutting_down", message: SHUTDOWN_MESSAGE }
          : outcome.error;
        await writer.emit(runId, { type: "builder.event", turn: run.turnCount, data: { kind: "error", ...error } });
        if (error.code === "budget_exceeded" && run.limits?.onExceeded === "pause") {
          // Paused: the session stays warm, and a message with raised limits continues it.
          await idle(run, results, error, hold);
          return;
        }
        await store.updateRun(runId, results);
        await deps.endings.finish(run, "failed", error);
        return;
      }
      if (run.publish.mode === "draft_pr" && run.group?.holdPublish) {
        note({ kind: "log", message: "publishing waits for the group's ranking: only its best run publishes" });
      } else if (run.publish.mode === "draft_pr") {
        Object.assign(results, await publishing.publish(run, diff.binaryPatch, results, note, abort.signal));
      }
      await idle(run, results, null, hold);
      log.info("turn finished", { runId, turn: run.turnCount, changedPaths: diff.changedPaths.length });
    } catch (e) {
      if (takenOver(abort, e)) return;
      await failOnceStored(run, e, abort);
    }
  }

  /**
   * `fail`, retried while the database does not answer: a turn that lost it ends its run
   * (failed, `storage_failed`) once it is back, instead of leaving it `running` for good.
   */
  async function failOnceStored(run: RunRecord, e: unknown, abort: AbortController): Promise<void> {
    for (let waitMs = 500; ; waitMs = Math.min(waitMs * 2, 5_000)) {
      try {
        return await fail(run, e, abort);
      } catch (f) {
        if (!(isEngineError(f) && f.code === "storage_failed") || deps.closing() || abort.signal.aborted) throw f;
        if (waitMs === 500) log.info("this turn's end waits for the database to answer again", { runId: run.id });
        // A cancel or shutdown cuts the wait short: the next try is the last.
        await sleep(waitMs, undefined, { signal: abort.signal }).catch(() => undefined);
      }
    }
  }

  /** Leave the run idle with its session warm until it expires. */
  async function idle(
    run: RunRecord,
    results: Partial<RunRecord>,
    error: { code: ErrorCode; message: string } | null,
    hold: Hold,
  ): Promise<void> {
    const expiresAt = new Date(deps.now().getTime() + config.sessionTtlMs).toISOString();
    // Release the run in the same tick the store turns it idle: a client that sees `idle`
    // and sends a message at once must not get 409 session_busy.
    const idle = writer.setStatus(run, "idle", { ...results, error, sessionExpiresAt: expiresAt });
    hold.release();
    await idle;
    deps.endings.scheduleExpiry(run.id, expiresAt);
    deps.hibernation.schedule(run.id);
  }

  /** Close a model-only sandbox's network; a sandbox that cannot is never run with the policy. */
  async function restrictNetwork(sandbox: Sandbox): Promise<void> {
    if (!sandbox.restrictNetwork)
      throw new EngineError(
        "unsupported_network_policy",
        `a ${sandbox.provider} sandbox cannot hold a run to network model-only`,
      );
    await sandbox.restrictNetwork();
  }

  async function fail(run: RunRecord, e: unknown, abort: AbortController): Promise<void> {
    const err = deps.closing()
      ? new EngineError("shutting_down", SHUTDOWN_MESSAGE)
      : abort.signal.aborted
        ? new EngineError("cancelled", "the run was cancelled")
        : toEngineError(e, "agent_failed");
    const current = await store.getRun(run.id);
    await store.updateTurn(run.id, run.turnCount, {
      status: err.code === "cancelled" ? "cancelled" : "failed",
      error: { code: err.code, message: deps.environment.mask(err.message, run) },
      finishedAt: iso(),
    });
    if (!current || isTerminal(current.status)) {
      await sessions.end(run.id);
      return;
    }
    log.warn("turn failed", { runId: run.id, turn: run.turnCount, code: err.code, message: err.message });
    await writer.emit(run.id, {
      type: "builder.event",
      turn: run.turnCount,
      data: { kind: "error", code: err.code, message: err.message },
    });
    await deps.endings.finish(current, err.code === "cancelled" ? "cancelled" : "failed", {
      code: err.code,
      message: err.message,
    });
  }

  return {
    async begin(run, prompt, hold, chainFrom, input = {}) {
      const n = run.turnCount + 1;
      await store.addTurn({
        runId: run.id,
        n,
        prompt,
        taskKind: run.taskKind,
        status: "running",
        summary: null,
        error: null,
        startedAt: iso(),
        finishedAt: null,
      });
      sessions.disarmTimers(run.id);
      const updated = await writer.setStatus(run, "running", {
        turnCount: n,
        sessionExpiresAt: null,
        error: null,
        startedAt: run.startedAt ?? iso(),
      });
      const abort = new AbortController();
      const done = execute(run.id, prompt, abort, hold, chainFrom, input)
        .catch((e: unknown) => {
          if (!takenOver(abort, e)) log.error("turn crashed", { runId: run.id, error: e });
        })
        .finally(() => {
          // A turn that went idle released the run already; this is a no-op then.
          hold.release();
          deps.host.turnEnded?.(run.id);
        });
      sessions.startTurn(run.id, { abort, done });
      return updated;
    },
  };
}
