/**
 * The run engine: the one facade both fronts (REST, MCP) and the CLI call.
 *
 * A run is a sandbox with the repository checked out, an agent session in it, and an
 * ordered event log. Turns run in the background; callers follow them through the event
 * log (`events`, `follow`) or `waitForTurn`. Lifecycle (DESIGN.md):
 *   queued -> running -> idle --(message)--> running -> idle ...
 *   idle --(endSession | expiry)--> completed; any step --(error)--> failed;
 *   running --(cancel)--> cancelled
 */
import { randomBytes, createHash } from "node:crypto";
import { EventEmitter } from "node:events";
import * as z from "zod";
import type { Config } from "../../config.ts";
import type { AgentDriver, AgentSession } from "../agent/agent.ts";
import { EngineError, toEngineError, type ErrorCode } from "../errors.ts";
import type { BuilderEventData, NewRunEvent, RunEvent } from "../events/schema.ts";
import type { GatewayGrant, ModelGateway } from "../gateway/gateway.ts";
import { applyPatch, computeDiff, createHostGit, validateRef, type GitRunner } from "../git/git.ts";
import { createRepositoryAccess, type RepositoryAccess, type ResolvedRepository } from "../github/access.ts";
import type { Logger } from "../log.ts";
import { createPublisher, type Publisher } from "../publish/publish.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { Sandbox, SandboxProvider } from "../sandbox/sandbox.ts";
import type { RunStore } from "../store/store.ts";
import { CreateRunInput, isTerminal, MessageInput, type RunRecord, type RunStatus, type Usage } from "./schema.ts";
import { toRunView, type RunView } from "./view.ts";
import { validateTurn } from "../validation/validation.ts";
import { assertCursor, followRun, type FollowOptions, type RunFollow } from "./follow.ts";

export interface EngineDeps {
  config: Config;
  store: RunStore;
  sandboxes: SandboxProvider;
  agents: AgentDriver;
  gateway: ModelGateway;
  secrets: SecretBox;
  log: Logger;
  /** Injectable clock (tests). */
  now?: () => Date;
  /** Repository resolution and GitHub credentials. Default: from the config (App, token or public). */
  repositories?: RepositoryAccess;
  /** Commits, pushes and opens draft PRs after turns of `publish.mode: draft_pr` runs. Default: from the config. */
  publisher?: Publisher;
}

export interface GetRunOptions {
  patch?: boolean;
  events?: boolean;
}

export interface StartRunOptions {
  /** Same key + same body from the same owner returns the same run. */
  idempotencyKey?: string;
}

export interface ModelCatalog {
  defaultModel: string;
  /** Allowed ids; empty means any id is accepted. */
  models: string[];
}

export interface Engine {
  startRun(ownerId: string, input: unknown, opts?: StartRunOptions): Promise<RunView>;
  /** Continue an idle run, end its session (`endSession`), or start a chained run. */
  sendMessage(ownerId: string, runId: string, input: unknown): Promise<RunView>;
  getRun(ownerId: string, runId: string, opts?: GetRunOptions): Promise<RunView>;
  listRuns(
    ownerId: string,
    opts?: { limit?: number; cursor?: string },
  ): Promise<{ runs: RunView[]; nextCursor: string | null }>;
  /** The patch of the last finished turn (null when there is none yet). */
  getPatch(ownerId: string, runId: string): Promise<{ runId: string; status: RunStatus; patch: string | null }>;
  /** Events with id > after, in order. Throws event_not_found for a cursor past the end. */
  events(ownerId: string, runId: string, after?: number, limit?: number): Promise<RunEvent[]>;
  /**
   * The stored events after `after`, then the live ones, in order, none missed or repeated,
   * until the run's terminal status (or the end of a turn: `until: "turn"`) or `signal`.
   * Throws run_not_found / event_not_found before it resolves.
   */
  follow(ownerId: string, runId: string, opts?: FollowOptions): Promise<RunFollow>;
  endSession(ownerId: string, runId: string): Promise<RunView>;
  cancel(ownerId: string, runId: string): Promise<RunView>;
  /** Resolves once the run is no longer queued or running (idle or terminal). */
  waitForTurn(ownerId: string, runId: string, signal?: AbortSignal): Promise<RunView>;
  models(): ModelCatalog;
  /** How many of the owner's runs are queued, running or idle (per-key limits of the fronts). */
  activeRunCount(ownerId: string): Promise<number>;
  /**
   * Start shutting down: refuse new runs and turns (shutting_down), and wait up to `graceMs`
   * for the turns in flight to finish. `close` then stops (and checkpoints) whatever is left.
   */
  drain(graceMs: number): Promise<void>;
  /**
   * Stop every live session (sandboxes, agents). Runs that were mid-turn are marked failed.
   * Idle sessions whose sandbox outlives this process (e2b) are left running for the next
   * start to reattach.
   */
  close(): Promise<void>;
}

/** What the engine holds for a run whose sandbox is alive. */
interface LiveSession {
  sandbox: Sandbox;
  agent: AgentSession | null;
  token: string | null;
  /** Aborts the turn in progress (cancel, shutdown). */
  turnAbort: AbortController | null;
  turnDone: Promise<void> | null;
  expiryTimer: NodeJS.Timeout | null;
}

/** How a later process takes an idle session over (sandboxes that outlive this one). */
const SavedSession = z.object({
  sandbox: z.object({ provider: z.literal("e2b"), sandboxId: z.string(), baseSha: z.string(), baseRef: z.string() }),
  agent: z.object({ pid: z.number(), port: z.number(), password: z.string(), sessionId: z.string() }),
  token: z.string(),
});
type SavedSession = z.infer<typeof SavedSession>;
const RESUME_SECRET = "session";
/** Longest a restart waits to reach one idle run's sandbox and agent before ending the run. */
const REATTACH_TIMEOUT_MS = 30_000;

const ACTIVE: readonly RunStatus[] = ["queued", "running", "idle"];
const SHUTDOWN_MESSAGE = "the server shut down while this turn was running; send the message again";

export function newRunId(): string {
  // Time-prefixed so ids sort roughly by creation; random tail so they cannot be guessed.
  return `run_${Date.now().toString(36)}${randomBytes(9).toString("base64url").replace(/[-_]/g, "x")}`;
}

export async function createEngine(deps: EngineDeps): Promise<Engine> {
  const { config, store, log } = deps;
  const now = deps.now ?? (() => new Date());
  const iso = () => now().toISOString();
  const bus = new EventEmitter();
  bus.setMaxListeners(0);
  const live = new Map<string, LiveSession>();
  /** Runs with a transition in flight (start of a turn, end of session): refuse concurrent messages. */
  const busy = new Set<string>();
  let closing = false;
  /** Set by drain: new runs and turns are refused while the ones in flight finish. */
  let draining = false;
  /** Host git, used only for checks that need no repository (ref syntax). */
  const hostGit = createHostGit();
  const repositories = deps.repositories ?? createRepositoryAccess(config, store, { log });
  const publisher = deps.publisher ?? createPublisher({ access: repositories, config, log });

  // ---------- helpers ----------

  async function ownedRun(ownerId: string, runId: string): Promise<RunRecord> {
    const run = /^[A-Za-z0-9_-]{1,64}$/.test(runId) ? await store.getRun(runId) : undefined;
    // Another owner's run is "not found", never "forbidden": existence must not leak.
    if (!run || run.ownerId !== ownerId) throw new EngineError("run_not_found", `run ${runId} not found`);
    return run;
  }

  function emit(runId: string, ev: NewRunEvent): RunEvent {
    const stored = store.appendEvent(runId, ev);
    bus.emit(runId, stored);
    return stored;
  }

  async function setStatus(run: RunRecord, status: RunStatus, fields: Partial<RunRecord> = {}): Promise<RunRecord> {
    const t = iso();
    const updated = await store.updateRun(run.id, {
      ...fields,
      status,
      updatedAt: t,
      ...(isTerminal(status) ? { finishedAt: t, sessionExpiresAt: null } : {}),
    });
    emit(run.id, {
      type: "run.status",
      turn: updated.turnCount,
      data: {
        status,
        turn: updated.turnCount,
        ...(updated.error && status === "failed" ? { error: updated.error } : {}),
        ...(status === "idle" ? { sessionExpiresAt: updated.sessionExpiresAt } : {}),
      },
    });
    return updated;
  }

  function view(run: RunRecord, extra: { patch?: string | null; events?: RunEvent[] } = {}): RunView {
    return toRunView(run, now(), extra);
  }

  function resolveModel(modelId: string | undefined): string {
    const id = modelId ?? config.defaultModel;
    if (config.models.length && !config.models.includes(id)) {
      throw new EngineError("model_not_allowed", `model ${id} is not in this server's catalog`, {
        allowed: config.models,
      });
    }
    return id;
  }

  /**
   * Before any sandbox exists: which repository, reachable with this server's credentials
   * (a repository on no App installation is refused here, as repository_not_installed).
   */
  async function resolveRepository(input: CreateRunInput): Promise<ResolvedRepository> {
    const fullName = input.repository ?? input.repositoryFullName;
    return repositories.resolve(fullName ? { fullName } : { id: String(input.repositoryId) });
  }

  /**
   * Publish a turn's changes as a draft PR. A failure is recorded on the run (publish.status
   * failed, with the error), never fails the run: the patch stays available either way.
   */
  async function publishTurn(
    run: RunRecord,
    binaryPatch: string,
    results: Partial<RunRecord>,
    onEvent: (data: BuilderEventData) => void,
    signal: AbortSignal,
  ): Promise<Partial<RunRecord>> {
    onEvent({ kind: "log", message: "publishing…" });
    try {
      const turns = await store.listTurns(run.id);
      const r = await publisher.publish({
        runId: run.id,
        repository: run.repository,
        baseSha: run.baseSha!,
        baseRef: run.baseRef!,
        ...(run.publish.branch ? { branch: run.publish.branch } : {}),
        binaryPatch,
        prompts: turns.map((t) => t.prompt),
        summary: results.summary ?? null,
        diffStats: results.diffStats ?? null,
        changedPaths: results.changedPaths ?? [],
        signal,
      });
      if (r.status === "skipped") {
        onEvent({ kind: "log", message: `nothing published: ${r.reason}` });
        return { publish: { mode: run.publish.mode, branch: r.branch, status: "skipped" } };
      }
      const pr = r.draftPullRequest;
      onEvent({ kind: "log", message: `${r.created ? "opened" : "updated"} draft PR #${pr.number}: ${pr.url}` });
      // The branch is recorded so a follow-up (or a chained run) publishes to the same one.
      return { publish: { mode: run.publish.mode, branch: r.branch, status: "published" }, draftPullRequest: pr };
    } catch (e) {
      const err = toEngineError(e, "publish_failed");
      log.warn("publish failed", { runId: run.id, code: err.code, message: err.message });
      onEvent({ kind: "log", message: `publish failed (${err.code}): ${err.message}` });
      return { publish: { ...run.publish, status: "failed", error: { code: err.code, message: err.message } } };
    }
  }

  const SECRET_NAME = "openRouterApiKey";

  async function upstreamKey(run: RunRecord): Promise<string | undefined> {
    if (run.billingMode === "managed") return config.openrouterApiKey;
    const sealed = await store.getSecret(run.id, SECRET_NAME);
    return sealed ? deps.secrets.open(sealed) : undefined;
  }

  function addUsage(runId: string, delta: Usage): void {
    void (async () => {
      const run = await store.getRun(runId);
      if (!run) return;
      const usage: Usage = {
        inputTokens: run.usage.inputTokens + delta.inputTokens,
        outputTokens: run.usage.outputTokens + delta.outputTokens,
        ...(run.usage.costUsd !== undefined || delta.costUsd !== undefined
          ? { costUsd: (run.usage.costUsd ?? 0) + (delta.costUsd ?? 0) }
          : {}),
      };
      await store.updateRun(runId, { usage });
    })().catch((e: unknown) => log.warn("could not record usage", { runId, error: e }));
  }

  /** What a run's gateway token may do: its model, metered to it, with its upstream key. */
  function grantFor(run: RunRecord): GatewayGrant {
    return {
      runId: run.id,
      upstreamKey: () => upstreamKey(run),
      allowedModels: [run.modelId],
      onUsage: (u) => addUsage(run.id, u),
    };
  }

  /**
   * For sandboxes that outlive this process (e2b): how a later one takes the session over.
   * Sealed like the model key (it holds the agent's password and the gateway token), and
   * deleted with the run's other secrets when the session ends.
   */
  async function rememberSession(runId: string, s: LiveSession): Promise<void> {
    const sandbox = s.sandbox.resumeInfo?.();
    const agent = s.agent?.resume;
    if (!sandbox || !agent || !s.token || !deps.agents.attach) return;
    const saved: SavedSession = { sandbox, agent, token: s.token };
    await store.putSecret(deps.secrets.seal(runId, RESUME_SECRET, JSON.stringify(saved)));
  }

  function gitIn(sandbox: Sandbox): GitRunner {
    return (args, opts) => sandbox.exec(["git", ...args], opts);
  }

  const BIN_SUFFIX = "_bin";

  // ---------- sessions ----------

  async function teardown(runId: string): Promise<void> {
    const s = live.get(runId);
    if (!s) return;
    live.delete(runId);
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    if (s.token) deps.gateway.revokeToken(s.token);
    try {
      await s.agent?.close();
    } catch (e) {
      log.warn("agent did not close cleanly", { runId, error: e });
    }
    try {
      await s.sandbox.kill();
    } catch (e) {
      log.warn("sandbox did not die cleanly", { runId, error: e });
    }
  }

  /** Session endings in flight (endSession, cancel, expiry): close() waits for them. */
  const transitions = new Set<Promise<unknown>>();
  function track<T>(p: Promise<T>): Promise<T> {
    transitions.add(p);
    void p.then(
      () => transitions.delete(p),
      () => transitions.delete(p),
    );
    return p;
  }

  /**
   * At shutdown: an idle session whose sandbox outlives this process (e2b) is left running
   * for the next start to reattach (a deploy does not cost users their warm sessions; the
   * VM ends at its own timeout if no start comes). Every other session is torn down.
   */
  async function handOver(runId: string): Promise<void> {
    const s = live.get(runId);
    if (!s) return;
    const run = await store.getRun(runId);
    const resumable =
      run?.status === "idle" &&
      !busy.has(runId) &&
      s.sandbox.detach !== undefined &&
      s.agent?.detach !== undefined &&
      (await store.getSecret(runId, RESUME_SECRET)) !== undefined;
    if (!resumable) return teardown(runId);
    live.delete(runId);
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    try {
      await s.agent!.detach!();
      await s.sandbox.detach!();
      log.info("left an idle run's sandbox running for the next start", { runId });
    } catch (e) {
      log.warn("could not hand an idle run over; it ends at the next start", { runId, error: e });
    }
  }

  function scheduleExpiry(runId: string, expiresAt: string): void {
    const s = live.get(runId);
    if (!s) return;
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    const ms = Math.max(0, Date.parse(expiresAt) - now().getTime());
    s.expiryTimer = setTimeout(() => {
      void track(expire(runId)).catch((e: unknown) => log.error("session expiry failed", { runId, error: e }));
    }, ms);
    s.expiryTimer.unref();
  }

  async function expire(runId: string): Promise<void> {
    // Shutting down: close() hands the session over or tears it down.
    if (closing) return;
    const run = await store.getRun(runId);
    if (!run || run.status !== "idle" || busy.has(runId)) return;
    if (run.sessionExpiresAt && Date.parse(run.sessionExpiresAt) > now().getTime()) {
      scheduleExpiry(runId, run.sessionExpiresAt);
      return;
    }
    await finishSession(run, "completed");
  }

  /** End the session of an idle run: kill the sandbox, forget the run's secrets. */
  async function finishSession(
    run: RunRecord,
    status: "completed" | "failed" | "cancelled",
    error?: { code: ErrorCode; message: string },
  ): Promise<RunRecord> {
    await teardown(run.id);
    await store.deleteSecrets(run.id);
    return setStatus(run, status, error ? { error } : {});
  }

  /** Start a turn in the background. The caller has already put the run into `running`. */
  function launchTurn(runId: string, prompt: string, chainFrom?: RunRecord): void {
    const abort = new AbortController();
    const s = live.get(runId);
    if (s) s.turnAbort = abort;
    const turn = { released: false };
    const done = executeTurn(runId, prompt, abort, turn, chainFrom)
      .catch((e: unknown) => log.error("turn crashed", { runId, error: e }))
      // A turn that went idle released the run already, and the next turn may hold it by now.
      .finally(() => {
        if (!turn.released) busy.delete(runId);
      });
    if (s) s.turnDone = done;
    pendingTurns.set(runId, { abort, done });
    void done.finally(() => {
      if (pendingTurns.get(runId)?.done === done) pendingTurns.delete(runId);
    });
  }
  const pendingTurns = new Map<string, { abort: AbortController; done: Promise<void> }>();

  /**
   * First turn of a run (or of a chained run): check the model key, create the sandbox at the
   * ref (the prior patch applied for a chained run), issue the gateway token, start the agent.
   */
  async function openSession(
    run: RunRecord,
    abort: AbortController,
    onEvent: (data: BuilderEventData) => void,
    chainFrom?: RunRecord,
  ): Promise<{ session: LiveSession; run: RunRecord }> {
    const runId = run.id;
    const key = await upstreamKey(run);
    if (!key) {
      throw new EngineError(
        "no_model_key",
        run.billingMode === "managed"
          ? "no model key: the server has no OPENROUTER_API_KEY for managed billing; set it or use billing.mode openrouter"
          : "no model key: the run's openRouterApiKey is gone (sessions forget it when they end)",
      );
    }
    onEvent({ kind: "log", message: `preparing sandbox (${deps.sandboxes.name}) for ${run.repository.fullName}` });
    const ref = chainFrom?.baseSha ?? run.baseRef;
    // Engine-side only: the provider uses it per git command and never stores it.
    const credential = await repositories.cloneCredential(run.repository);
    const sandbox = await deps.sandboxes.create({
      runId,
      ownerId: run.ownerId,
      repository: {
        fullName: run.repository.fullName,
        cloneUrl: `${config.gitBaseUrl}/${run.repository.fullName}.git`,
      },
      ...(ref ? { ref } : {}),
      ...(credential ? { credential } : {}),
      signal: abort.signal,
    });
    const s: LiveSession = { sandbox, agent: null, token: null, turnAbort: abort, turnDone: null, expiryTimer: null };
    live.set(runId, s);
    run = await store.updateRun(runId, {
      baseSha: chainFrom?.baseSha ?? sandbox.baseSha,
      baseRef: run.baseRef ?? sandbox.baseRef,
    });
    if (chainFrom) {
      const prior = await store.getPatch(chainFrom.id + BIN_SUFFIX);
      if (prior) await applyPatch(gitIn(sandbox), sandbox.workdir, prior);
    }
    if (abort.signal.aborted) throw new EngineError("cancelled", "the run was cancelled");
    const token = deps.gateway.issueToken(grantFor(run));
    s.token = token;
    onEvent({ kind: "log", message: "starting agent" });
    s.agent = await deps.agents.start({
      sandbox,
      modelBaseUrl: `${sandbox.engineUrl(deps.gateway.port)}/v1`,
      modelToken: token,
      modelId: run.modelId,
      watchdogMs: config.watchdogMs,
      signal: abort.signal,
    });
    await rememberSession(runId, s);
    return { session: s, run };
  }

  async function executeTurn(
    runId: string,
    prompt: string,
    abort: AbortController,
    turn: { released: boolean },
    chainFrom?: RunRecord,
  ): Promise<void> {
    let run = (await store.getRun(runId))!;
    const rlog = log.child({ runId, turn: run.turnCount });
    const onEvent = (data: BuilderEventData) => emit(runId, { type: "builder.event", turn: run.turnCount, data });
    try {
      let s = live.get(runId);
      if (!s) ({ session: s, run } = await openSession(run, abort, onEvent, chainFrom));
      s.turnAbort = abort;
      const outcome = await s.agent!.runTurn({
        prompt,
        kind: run.taskKind,
        timeoutMs: config.turnTimeoutMs,
        onEvent,
        signal: abort.signal,
      });
      // The patch is computed even for a failed or cancelled turn: work done is kept.
      let diff = await computeDiff(gitIn(s.sandbox), s.sandbox.workdir, run.baseSha!);
      // validationMode: checks inside the sandbox after a good turn; `tests` may run one repair turn.
      let summary = outcome.summary;
      const sb = s.sandbox;
      const agent = s.agent!;
      const validation =
        outcome.error || run.taskKind === "plan"
          ? null
          : await validateTurn({
              sandbox: sb,
              mode: run.validationMode,
              baseSha: run.baseSha!,
              patch: diff.binaryPatch,
              signal: abort.signal,
              onLog: (message) => onEvent({ kind: "log", message }),
              repair: async (prompt) => {
                const again = await agent.runTurn({
                  prompt,
                  kind: run.taskKind,
                  timeoutMs: config.turnTimeoutMs,
                  onEvent,
                  signal: abort.signal,
                });
                if (again.summary) summary = again.summary;
                diff = await computeDiff(gitIn(sb), sb.workdir, run.baseSha!);
                return diff.binaryPatch;
              },
            });
      await store.putPatch(runId, diff.patch);
      await store.putPatch(runId + BIN_SUFFIX, diff.binaryPatch);
      run = (await store.getRun(runId))!;
      const results: Partial<RunRecord> = {
        summary: summary || run.summary,
        ...(validation ? { validation } : {}),
        changedPaths: diff.changedPaths,
        diffStats: diff.diffStats,
        hasPatch: diff.patch.length > 0,
      };
      await store.updateTurn(runId, run.turnCount, {
        status: outcome.error ? (outcome.error.code === "cancelled" ? "cancelled" : "failed") : "done",
        summary: outcome.summary,
        error: outcome.error ?? null,
        finishedAt: iso(),
      });
      if (run.status === "cancelled") return; // cancel() already finished the run
      if (outcome.error) {
        if (outcome.error.code === "cancelled" && !closing) {
          // cancel() finishes the run once this turn has unwound.
          await store.updateRun(runId, results);
          return;
        }
        const error: { code: ErrorCode; message: string } = closing
          ? { code: "shutting_down", message: SHUTDOWN_MESSAGE }
          : outcome.error;
        emit(runId, { type: "builder.event", turn: run.turnCount, data: { kind: "error", ...error } });
        await store.updateRun(runId, results);
        await finishSession(run, "failed", error);
        return;
      }
      if (run.publish.mode === "draft_pr") {
        Object.assign(results, await publishTurn(run, diff.binaryPatch, results, onEvent, abort.signal));
      }
      const expiresAt = new Date(now().getTime() + config.sessionTtlMs).toISOString();
      // Release the run in the same tick the store turns it idle: a client that sees `idle`
      // and sends a message at once must not get 409 session_busy (found by bench/follow-up).
      const idle = setStatus(run, "idle", { ...results, error: null, sessionExpiresAt: expiresAt });
      busy.delete(runId);
      turn.released = true;
      await idle;
      scheduleExpiry(runId, expiresAt);
      rlog.info("turn finished", { changedPaths: diff.changedPaths.length });
    } catch (e) {
      const err = closing
        ? new EngineError("shutting_down", SHUTDOWN_MESSAGE)
        : abort.signal.aborted
          ? new EngineError("cancelled", "the run was cancelled")
          : toEngineError(e, "agent_failed");
      const current = await store.getRun(runId);
      await store.updateTurn(runId, run.turnCount, {
        status: err.code === "cancelled" ? "cancelled" : "failed",
        error: { code: err.code, message: err.message },
        finishedAt: iso(),
      });
      if (!current || isTerminal(current.status)) {
        await teardown(runId);
        return;
      }
      rlog.warn("turn failed", { code: err.code, message: err.message });
      emit(runId, {
        type: "builder.event",
        turn: run.turnCount,
        data: { kind: "error", code: err.code, message: err.message },
      });
      await finishSession(current, err.code === "cancelled" ? "cancelled" : "failed", {
        code: err.code,
        message: err.message,
      });
    }
  }

  /** Put a run into `running` for a new turn and launch it. */
  async function beginTurn(run: RunRecord, prompt: string, chainFrom?: RunRecord): Promise<RunRecord> {
    const n = run.turnCount + 1;
    await store.addTurn({
      runId: run.id,
      n,
      prompt,
      status: "running",
      summary: null,
      error: null,
      startedAt: iso(),
      finishedAt: null,
    });
    const s = live.get(run.id);
    if (s?.expiryTimer) {
      clearTimeout(s.expiryTimer);
      s.expiryTimer = null;
    }
    const updated = await setStatus(run, "running", {
      turnCount: n,
      sessionExpiresAt: null,
      error: null,
      startedAt: run.startedAt ?? iso(),
    });
    launchTurn(run.id, prompt, chainFrom);
    return updated;
  }

  function idempotencyHash(input: CreateRunInput): string {
    return createHash("sha256").update(JSON.stringify(input)).digest("hex");
  }

  async function createRun(
    ownerId: string,
    input: CreateRunInput,
    extra: { chainedFrom?: RunRecord; idempotencyKey?: string } = {},
  ): Promise<RunRecord> {
    if (closing || draining) throw new EngineError("shutting_down", "the server is shutting down; try again shortly");
    const resolved = await resolveRepository(input);
    const repository = resolved.ref;
    const modelId = resolveModel(input.modelId);
    const ref = input.baseRef ?? input.gitCheckoutRef;
    if (ref) await validateRef(hostGit, ref);
    if (input.publish?.mode === "draft_pr") {
      await publisher.check({
        repository,
        ...(input.publish.branch ? { branch: input.publish.branch } : {}),
        ...(resolved.defaultBranch ? { defaultBranch: resolved.defaultBranch } : {}),
        ...(ref ? { baseRef: ref } : {}),
      });
    }
    const billingMode = input.billing?.mode ?? "managed";
    if (billingMode === "managed" && !config.openrouterApiKey) {
      throw new EngineError(
        "no_model_key",
        "managed billing needs OPENROUTER_API_KEY on the server; set it, or pass billing.mode openrouter with openRouterApiKey",
      );
    }
    const t = iso();
    const run: RunRecord = {
      id: newRunId(),
      ownerId,
      status: "queued",
      repository,
      modelId,
      taskKind: input.taskKind ?? "code",
      ...(ref ? { baseRef: ref } : {}),
      validationMode: input.validationMode ?? "basic",
      publish: {
        mode: input.publish?.mode ?? "none",
        ...(input.publish?.branch ? { branch: input.publish.branch } : {}),
      },
      billingMode,
      turnCount: 0,
      sessionExpiresAt: null,
      summary: null,
      changedPaths: [],
      diffStats: null,
      hasPatch: false,
      draftPullRequest: null,
      validation: null,
      error: null,
      usage: { inputTokens: 0, outputTokens: 0 },
      chainedFrom: extra.chainedFrom?.id ?? null,
      ...(extra.idempotencyKey
        ? { idempotencyKey: extra.idempotencyKey, idempotencyHash: idempotencyHash(input) }
        : {}),
      createdAt: t,
      updatedAt: t,
      startedAt: null,
      finishedAt: null,
    };
    await store.createRun(run);
    if (billingMode === "openrouter") {
      await store.putSecret(deps.secrets.seal(run.id, SECRET_NAME, input.billing!.openRouterApiKey!));
    }
    emit(run.id, { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } });
    return run;
  }

  function parse<T>(
    schema: {
      safeParse(
        v: unknown,
      ): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
    },
    input: unknown,
  ): T {
    const r = schema.safeParse(input);
    if (r.success) return r.data;
    const issue = r.error.issues[0]!;
    const where = issue.path.length ? issue.path.map(String).join(".") : "body";
    throw new EngineError("invalid_request", `${where}: ${issue.message}`, {
      issues: r.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
    });
  }

  function chainedPrompt(prior: RunRecord, turns: { prompt: string }[], prompt: string): string {
    const history = turns.map((t, i) => `${i + 1}. ${t.prompt}`).join("\n");
    return [
      `You are continuing earlier work on ${prior.repository.fullName} (run ${prior.id}).`,
      `Earlier requests:\n${history}`,
      prior.summary ? `Summary of that work:\n${prior.summary}` : "",
      prior.hasPatch ? "The changes from that work are already applied in the working tree." : "",
      `New request:\n${prompt}`,
    ]
      .filter(Boolean)
      .join("\n\n");
  }

  // ---------- recovery ----------

  /**
   * Take a run's session back from a previous process: its sandbox (still alive when the
   * provider's outlive us, e2b), its OpenCode server and session, its gateway token. False
   * when it cannot (nothing saved, expired, gone); the run is then ended as before.
   */
  async function reattach(run: RunRecord): Promise<boolean> {
    if (!deps.sandboxes.connect || !deps.agents.attach) return false;
    if (run.status === "idle" && (!run.sessionExpiresAt || Date.parse(run.sessionExpiresAt) <= now().getTime()))
      return false;
    const sealed = await store.getSecret(run.id, RESUME_SECRET);
    if (!sealed) return false;
    const signal = AbortSignal.timeout(REATTACH_TIMEOUT_MS);
    let taken: { sandbox: Sandbox; agent: AgentSession } | undefined;
    try {
      const saved = SavedSession.parse(JSON.parse(deps.secrets.open(sealed)));
      const attempt = takeBack(run, saved, signal);
      // Bounded as a whole (a VM or server that accepts and never answers must not hold the
      // start); an attempt that succeeds after the deadline lets go of what it took.
      const timedOut = new Promise<undefined>((resolve) =>
        signal.addEventListener("abort", () => resolve(undefined), { once: true }),
      );
      taken = await Promise.race([attempt, timedOut]);
      if (!taken) {
        void attempt.then(
          (late) => release(late),
          () => undefined,
        );
        throw new EngineError("sandbox_failed", `reattaching took over ${REATTACH_TIMEOUT_MS} ms`);
      }
      deps.gateway.restoreToken(saved.token, grantFor(run));
      live.set(run.id, {
        sandbox: taken.sandbox,
        agent: taken.agent,
        token: saved.token,
        turnAbort: null,
        turnDone: null,
        expiryTimer: null,
      });
      emit(run.id, {
        type: "builder.event",
        turn: run.turnCount,
        data: { kind: "log", message: "the server restarted; reattached to this run's sandbox and agent session" },
      });
      if (run.status === "running") await settleInterruptedTurn(run, taken.sandbox);
      else scheduleExpiry(run.id, run.sessionExpiresAt!);
      log.info("reattached a run", { runId: run.id, status: run.status });
      return true;
    } catch (e) {
      log.warn("could not reattach an idle run; ending it", { runId: run.id, error: e });
      if (taken) await release(taken);
      return false;
    }
  }

  /**
   * A turn the dead process was running (attach stopped it in OpenCode): it ends failed with
   * server_restart and the work it had done as the patch, and the run goes back to idle with
   * its session warm, so a message continues where the turn stopped instead of starting over.
   */
  async function settleInterruptedTurn(run: RunRecord, sandbox: Sandbox): Promise<void> {
    const error = {
      code: "server_restart" as const,
      message: "the server restarted during this turn; its work so far is in the patch, and the session continues",
    };
    const diff = await computeDiff(gitIn(sandbox), sandbox.workdir, run.baseSha!);
    await store.putPatch(run.id, diff.patch);
    await store.putPatch(run.id + BIN_SUFFIX, diff.binaryPatch);
    await store.updateTurn(run.id, run.turnCount, { status: "failed", error, finishedAt: iso() });
    emit(run.id, { type: "builder.event", turn: run.turnCount, data: { kind: "error", ...error } });
    const expiresAt = new Date(now().getTime() + config.sessionTtlMs).toISOString();
    await setStatus(run, "idle", {
      changedPaths: diff.changedPaths,
      diffStats: diff.diffStats,
      hasPatch: diff.patch.length > 0,
      error,
      sessionExpiresAt: expiresAt,
    });
    scheduleExpiry(run.id, expiresAt);
  }

  /** Connect to a run's sandbox and attach to its agent; the sandbox is killed if the agent cannot be had. */
  async function takeBack(
    run: RunRecord,
    saved: SavedSession,
    signal: AbortSignal,
  ): Promise<{ sandbox: Sandbox; agent: AgentSession }> {
    const sandbox = await deps.sandboxes.connect!(run.id, saved.sandbox);
    try {
      const agent = await deps.agents.attach!({
        sandbox,
        resume: saved.agent,
        modelId: run.modelId,
        watchdogMs: config.watchdogMs,
        signal,
      });
      return { sandbox, agent };
    } catch (e) {
      await sandbox.kill().catch(() => undefined);
      throw e;
    }
  }

  async function release(taken: { sandbox: Sandbox; agent: AgentSession }): Promise<void> {
    await taken.agent.close().catch(() => undefined);
    await taken.sandbox.kill().catch(() => undefined);
  }

  // Runs a previous process left: those whose sandbox outlived it are taken back (a running
  // one's turn ends server_restart, its session kept); the others have lost sandbox and agent.
  const reattached = new Set<string>();
  const leftOver = await store.runsByStatus(ACTIVE);
  // Queued runs never had a sandbox; running ones on a provider whose sandboxes outlive us did.
  const resumable = leftOver.filter((r) => r.status === "idle" || (r.status === "running" && r.baseSha));
  for (let i = 0; i < resumable.length; i += 8) {
    const batch = resumable.slice(i, i + 8);
    const ok = await Promise.all(batch.map((r) => reattach(r)));
    batch.forEach((r, j) => ok[j] && reattached.add(r.id));
  }
  for (const run of leftOver) {
    if (reattached.has(run.id)) continue;
    if (run.status === "idle") {
      await store.deleteSecrets(run.id);
      await setStatus(run, "completed", {});
    } else {
      await setStatus(run, "failed", {
        error: { code: "server_restart", message: "the server restarted while this run was in progress" },
      });
      await store.deleteSecrets(run.id);
    }
  }

  // Sandboxes (and their OpenCode processes) a killed predecessor left behind belong to no run
  // now. A failure here (E2B's API down for a moment) must not fail the start: that would
  // close the provider and kill the sandboxes just reattached. Orphans wait for the next start.
  try {
    await deps.sandboxes.reap?.(reattached);
  } catch (e) {
    log.warn("could not reap sandboxes a previous process left; the next start tries again", { error: e });
  }

  async function cancelRun(ownerId: string, runId: string): Promise<RunView> {
    const run = await ownedRun(ownerId, runId);
    if (isTerminal(run.status)) return view(run);
    if (run.status === "idle") {
      return view(await finishSession(run, "cancelled"));
    }
    // Mark first so the turn, when it unwinds, does not overwrite the outcome.
    const pending = pendingTurns.get(runId);
    const s = live.get(runId);
    pending?.abort.abort();
    s?.turnAbort?.abort();
    try {
      await s?.agent?.abort();
    } catch (e) {
      log.warn("agent abort failed", { runId, error: e });
    }
    // Let the turn unwind (it computes the patch it had), then kill everything.
    await Promise.race([pending?.done, new Promise((r) => setTimeout(r, 15_000))]);
    const current = (await store.getRun(runId))!;
    if (isTerminal(current.status)) {
      await teardown(runId);
      return view(current);
    }
    return view(await finishSession(current, "cancelled", { code: "cancelled", message: "the run was cancelled" }));
  }

  // ---------- the facade ----------

  const engine: Engine = {
    async startRun(ownerId, rawInput, opts = {}) {
      const input = parse(CreateRunInput, rawInput);
      if (opts.idempotencyKey) {
        const existing = await store.findRunByIdempotencyKey(ownerId, opts.idempotencyKey);
        if (existing) {
          if (existing.idempotencyHash !== idempotencyHash(input)) {
            throw new EngineError("idempotency_conflict", "this Idempotency-Key was used with a different body");
          }
          return view(existing);
        }
      }
      const run = await createRun(ownerId, input, opts.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {});
      busy.add(run.id);
      return view(await beginTurn(run, input.prompt));
    },

    async sendMessage(ownerId, runId, rawInput) {
      const input = parse(MessageInput, rawInput);
      const run = await ownedRun(ownerId, runId);
      if (input.endSession) return engine.endSession(ownerId, runId);
      if (closing || draining) throw new EngineError("shutting_down", "the server is shutting down; try again shortly");
      const prompt = input.prompt!;
      if (run.status === "queued" || run.status === "running" || busy.has(runId)) {
        throw new EngineError("session_busy", "the run is busy with a turn; retry when it is idle", {
          retryAfterSeconds: 5,
        });
      }
      const sessionLive =
        run.status === "idle" &&
        live.has(runId) &&
        !!run.sessionExpiresAt &&
        Date.parse(run.sessionExpiresAt) > now().getTime();
      if (sessionLive) {
        busy.add(runId);
        try {
          if (input.publish?.mode === "draft_pr") {
            await publisher.check({
              repository: run.repository,
              ...(input.publish.branch ? { branch: input.publish.branch } : {}),
              ...(run.baseRef ? { baseRef: run.baseRef } : {}),
            });
          }
          const updated = input.publish
            ? await store.updateRun(runId, {
                publish: {
                  ...run.publish,
                  mode: input.publish.mode,
                  ...(input.publish.branch ? { branch: input.publish.branch } : {}),
                },
              })
            : run;
          return view(await beginTurn(updated, prompt));
        } catch (e) {
          busy.delete(runId);
          throw e;
        }
      }
      // Expired or terminal: a chained run in a new sandbox, with the prior patch applied.
      if (run.status === "idle") await finishSession(run, "completed");
      const turns = await store.listTurns(runId);
      const prior = (await store.getRun(runId))!;
      const chained = await createRun(
        ownerId,
        {
          repository: prior.repository.fullName,
          prompt,
          modelId: prior.modelId,
          taskKind: prior.taskKind,
          ...(prior.baseRef ? { baseRef: prior.baseRef } : {}),
          validationMode: prior.validationMode,
          publish: input.publish ?? {
            mode: prior.publish.mode,
            ...(prior.publish.branch ? { branch: prior.publish.branch } : {}),
          },
          billing: { mode: "managed" },
        },
        { chainedFrom: prior },
      );
      busy.add(chained.id);
      return view(await beginTurn(chained, chainedPrompt(prior, turns, prompt), prior));
    },

    async getRun(ownerId, runId, opts = {}) {
      const run = await ownedRun(ownerId, runId);
      const extra: { patch?: string | null; events?: RunEvent[] } = {};
      if (opts.patch)
        extra.patch =
          run.hasPatch && run.status !== "running" && run.status !== "queued"
            ? ((await store.getPatch(runId)) ?? null)
            : null;
      if (opts.events) extra.events = await store.readEvents(runId, 0);
      return view(run, extra);
    },

    async listRuns(ownerId, opts = {}) {
      const limit = Math.min(100, Math.max(1, opts.limit ?? 20));
      const page = await store.listRuns(ownerId, { limit, ...(opts.cursor ? { cursor: opts.cursor } : {}) });
      return { runs: page.runs.map((r) => view(r)), nextCursor: page.nextCursor };
    },

    async getPatch(ownerId, runId) {
      const run = await ownedRun(ownerId, runId);
      const patch = run.hasPatch ? ((await store.getPatch(runId)) ?? null) : null;
      return { runId, status: run.status, patch };
    },

    async events(ownerId, runId, after = 0, limit) {
      await ownedRun(ownerId, runId);
      assertCursor(runId, after, store.lastEventId(runId));
      return store.readEvents(runId, after, limit);
    },

    follow(ownerId, runId, opts) {
      const subscribe = (id: string, listener: (ev: RunEvent) => void) => {
        bus.on(id, listener);
        return () => void bus.off(id, listener);
      };
      return followRun({ store, subscribe, ownedRun }, ownerId, runId, opts);
    },

    async endSession(ownerId, runId) {
      const run = await ownedRun(ownerId, runId);
      if (isTerminal(run.status)) return view(run);
      if (run.status !== "idle" || busy.has(runId)) {
        throw new EngineError("session_busy", "the run is busy with a turn; cancel it or wait until it is idle", {
          retryAfterSeconds: 5,
        });
      }
      busy.add(runId);
      try {
        return view(await track(finishSession(run, "completed")));
      } finally {
        busy.delete(runId);
      }
    },

    cancel(ownerId, runId) {
      return track(cancelRun(ownerId, runId));
    },
    async waitForTurn(ownerId, runId, signal) {
      let run = await ownedRun(ownerId, runId);
      if (run.status !== "queued" && run.status !== "running") return view(run);
      await new Promise<void>((resolve, reject) => {
        const onEvent = (ev: RunEvent) => {
          if (ev.type === "run.status" && ev.data.status !== "running" && ev.data.status !== "queued") finish();
        };
        const onAbort = () => finish(new EngineError("cancelled", "stopped waiting"));
        const finish = (err?: Error) => {
          bus.off(runId, onEvent);
          signal?.removeEventListener("abort", onAbort);
          if (err) reject(err);
          else resolve();
        };
        bus.on(runId, onEvent);
        signal?.addEventListener("abort", onAbort, { once: true });
        // The status may have changed between the read and the subscription.
        void store.getRun(runId).then((r) => {
          if (r && r.status !== "queued" && r.status !== "running") finish();
        });
      });
      run = await ownedRun(ownerId, runId);
      return view(run);
    },

    models() {
      return { defaultModel: config.defaultModel, models: [...config.models] };
    },

    activeRunCount: (ownerId) => store.countActiveRuns(ownerId),

    async drain(graceMs) {
      draining = true;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...pendingTurns.values()].map((p) => p.done)),
        new Promise((r) => (timer = setTimeout(r, graceMs))),
      ]);
      clearTimeout(timer);
    },

    async close() {
      closing = true;
      for (const { abort } of pendingTurns.values()) abort.abort();
      await Promise.allSettled([...pendingTurns.values()].map((p) => p.done));
      await Promise.allSettled([...transitions]);
      await Promise.allSettled([...live.keys()].map((id) => handOver(id)));
    },
  };
  return engine;
}
