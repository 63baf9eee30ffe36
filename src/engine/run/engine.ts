/**
 * The run engine: the one facade both fronts (REST, MCP) and the CLI call. It checks who
 * asks and what state the run is in, and hands the work to the run's parts: `create.ts`
 * (new and chained runs), `turn.ts` (a turn, start to idle), `end.ts` (session endings),
 * `sessions.ts` (what this process holds per run), `follow.ts` (the event log, replayed and
 * live), `recovery.ts` (what a previous process left). Lifecycle (DESIGN.md):
 *   queued -> running -> idle --(message)--> running -> idle ...
 *   idle --(endSession | expiry)--> completed; any step --(error)--> failed;
 *   running --(cancel)--> cancelled
 */
import type { LayerInfo } from "../environment/cache.ts";
import { EngineError } from "../errors.ts";
import type { EventBus } from "../events/bus.ts";
import type { RunEvent } from "../events/schema.ts";
import { parseInput } from "../parse.ts";
import { createOwnerSecrets, type OwnerSecrets } from "../environment/secrets.ts";
import type { ReadEventsOptions } from "../store/store.ts";
import { assembleParts, type EngineDeps } from "./assemble.ts";
import { OwnerId, OwnerLimitsInput, type OwnerLimits } from "./budget.ts";
import { assertCursor, followRun, type FollowOptions, type RunFollow } from "./follow.ts";
import { recover, takeOver } from "./recovery.ts";
import { createReplicas, type HandoffRequest, type Replicas } from "./replicas.ts";
import { createRetention, isFinished } from "./retention.ts";
import {
  CreateRunInput,
  isTerminal,
  MessageInput,
  type ModelCatalog,
  type RunRecord,
  type RunStatus,
} from "./schema.ts";
import type { GroupView } from "./group-schema.ts";
import { createStreamSlots } from "./streams.ts";
import { prepareTurnInput } from "./turn-input.ts";
import { toRunView, type RunView } from "./view.ts";
import { newWebhookSecret, type Webhooks } from "../webhooks/webhooks.ts";

export type { FollowOptions, RunFollow } from "./follow.ts";
export type { EngineDeps } from "./assemble.ts";

export interface GetRunOptions {
  patch?: boolean;
  events?: boolean;
  /** The whole summary, however long (the view's is cut at 16 KB). */
  fullSummary?: boolean;
  /** Each turn's prompt, kind, status and summary, oldest first. */
  turns?: boolean;
}

export interface StartRunOptions {
  /** Same key + same body from the same owner returns the same run. */
  idempotencyKey?: string;
  /**
   * The caller key's repository allow-list (`owner/name`, `owner/*`): a run on any other
   * repository is refused with repository_not_allowed. Absent: any repository.
   */
  allowedRepositories?: readonly string[];
}

export interface Engine {
  /** With `attempts` > 1, starts that many sibling runs and answers the first (its `group` names the group). */
  startRun(ownerId: string, input: unknown, opts?: StartRunOptions): Promise<RunView>;
  /** A group of attempts: its siblings with status and rank, and its best run once ranked. */
  getGroup(ownerId: string, groupId: string): Promise<GroupView>;
  /** Continue an idle run, end its session (`endSession`), or start a chained run. */
  sendMessage(ownerId: string, runId: string, input: unknown): Promise<RunView>;
  getRun(ownerId: string, runId: string, opts?: GetRunOptions): Promise<RunView>;
  listRuns(
    ownerId: string,
    opts?: { limit?: number; cursor?: string },
  ): Promise<{ runs: RunView[]; nextCursor: string | null }>;
  /** The patch of the last finished turn (null when there is none yet). */
  getPatch(ownerId: string, runId: string): Promise<{ runId: string; status: RunStatus; patch: string | null }>;
  /**
   * Events with id > after, in order, at most `limit` and at most `opts.maxBytes` of JSON
   * (the first always). Throws event_not_found for a cursor past the end.
   */
  events(ownerId: string, runId: string, after?: number, limit?: number, opts?: ReadEventsOptions): Promise<RunEvent[]>;
  /**
   * The run's events after `after`, replayed from the log and then live, none missed or
   * repeated. Ownership and the cursor are checked before it resolves (run_not_found,
   * event_not_found); iteration ends per `until`, or quietly when `signal` aborts.
   */
  follow(ownerId: string, runId: string, opts?: FollowOptions): Promise<RunFollow>;
  endSession(ownerId: string, runId: string): Promise<RunView>;
  cancel(ownerId: string, runId: string): Promise<RunView>;
  /**
   * Hibernate an idle run's session now instead of after PATCHBAY_HIBERNATE_AFTER_MS (tests,
   * benchmarks, operators); nothing happens when it is not idle or its host cannot.
   */
  hibernate(ownerId: string, runId: string): Promise<RunView>;
  /**
   * Delete a finished run with its events, patch, summary, turns, secrets, webhooks and
   * deliveries. run_active while it is queued, running, or idle with its session open.
   */
  deleteRun(ownerId: string, runId: string): Promise<void>;
  /** Resolves once the run is no longer queued or running (idle or terminal). */
  waitForTurn(ownerId: string, runId: string, signal?: AbortSignal): Promise<RunView>;
  models(): ModelCatalog;
  /** How many of the owner's runs are queued, running or idle (per-key limits of the fronts). */
  activeRunCount(ownerId: string): Promise<number>;
  /** Every status change of every run, after it is stored (webhooks, metrics). */
  readonly bus: Pick<EventBus, "onStatus">;
  /** The owners' stored secrets (`/api/v1/secrets`), which runs name in `environment.secretNames`. */
  readonly secrets: OwnerSecrets;
  /** Webhooks: the owners' endpoints (`/api/v1/webhooks`) and each run's delivery log. */
  readonly webhooks: Webhooks;
  /** Setup's cached layers (admin): least recently used first. */
  listEnvironments(): Promise<LayerInfo[]>;
  /** Drop a cached layer (admin); environment_not_found when there is none. */
  dropEnvironment(key: string): Promise<void>;
  /** An owner's daily cost cap and what its runs spent today (admin). */
  ownerLimits(ownerId: string): Promise<OwnerLimits>;
  /** Set or remove (`dailyCostUsd: null`) an owner's daily cost cap (admin). */
  setOwnerLimits(ownerId: string, input: unknown): Promise<OwnerLimits>;
  /** Settle the runs a previous process left and start the session host. Call once, before serving. */
  recover(): Promise<void>;
  /** Replicas sharing the store: handoffs between them (absent for one process). */
  readonly replicas?: Pick<Replicas, "replicaId" | "advertise" | "verify">;
  /** A request another replica handed over: answered here, never handed on. */
  handoff(req: HandoffRequest): Promise<RunView>;
  /**
   * Start shutting down: refuse new runs and turns (shutting_down), and wait up to `graceMs`
   * for the turns in flight to finish. `close` then stops whatever is left.
   */
  drain(graceMs: number): Promise<void>;
  /**
   * Stop every live session. Runs that were mid-turn are marked failed. Idle sessions that
   * outlive this process (e2b) are left running for the next start to reattach.
   */
  close(): Promise<void>;
}

export function createEngine(deps: EngineDeps): Engine {
  const {
    config,
    store,
    now,
    bus,
    stopRelay,
    sessions,
    state,
    parts,
    endings,
    hibernation,
    turns,
    runs,
    admission,
    messages,
    groups,
    envCache,
    webhooks,
    budgets,
    outputs,
  } = assembleParts(deps);
  const imageLimits = { textOnlyModels: config.textOnlyModels, maxModelRequestBytes: config.gatewayMaxBodyBytes };
  const retention = createRetention({ store, days: config.retentionDays, now, log: deps.log });
  const view = (run: RunRecord, extra: Parameters<typeof toRunView>[2] = {}) => toRunView(run, now(), extra);

  async function ownedRun(ownerId: string, runId: string): Promise<RunRecord> {
    const run = /^[A-Za-z0-9_-]{1,64}$/.test(runId) ? await store.getRun(runId) : undefined;
    // Another owner's run is "not found", never "forbidden": existence must not leak.
    if (!run || run.ownerId !== ownerId) throw new EngineError("run_not_found", `run ${runId} not found`);
    return run;
  }
  function refuseWhileClosing(): void {
    if (state.closing || state.draining)
      throw new EngineError("shutting_down", "the server is shutting down; try again shortly");
  }
  const replicas = deps.registry
    ? createReplicas({
        registry: deps.registry,
        sessions,
        log: deps.log,
        maxActiveRuns: config.maxActiveRuns,
        secretKey: config.secretKey ?? "",
        accepting: () => !state.closing && !state.draining,
        takeOver: async (ids) => void (await takeOver({ ...parts, endings, hibernation }, ids)),
        async begin(runId, input) {
          const run = await store.getRun(runId);
          // Cancelled (or taken over) while it waited: nothing to start.
          if (!run || run.status !== "queued") return;
          const parsed = parseInput(CreateRunInput, input);
          const turnInput = prepareTurnInput(outputs, parsed, run.modelId, imageLimits);
          await turns.begin(run, parsed.prompt, sessions.acquire(runId), undefined, turnInput);
        },
      })
    : undefined;
  /** Here, or on the replica whose session the run is (same answers either way). */
  const routed = (req: HandoffRequest, local: () => Promise<RunView>) =>
    replicas ? replicas.route(req, local) : local();
  const following = {
    store,
    subscribe: bus.subscribe,
    ownedRun,
    slots: createStreamSlots({ max: config.maxStreamsPerKey }),
  };

  async function sendHere(ownerId: string, runId: string, input: MessageInput): Promise<RunView> {
    const run = await ownedRun(ownerId, runId);
    if (input.endSession) return endHere(ownerId, runId);
    refuseWhileClosing();
    await budgets.assertOwnerBelowCap(ownerId);
    return view(await messages.send(run, input, prepareTurnInput(outputs, input, run.modelId, imageLimits)));
  }
  async function endHere(ownerId: string, runId: string): Promise<RunView> {
    await ownedRun(ownerId, runId);
    // A hibernation in progress holds the run: the ending waits for it, then ends what it kept.
    await sessions.settle(runId);
    const run = await ownedRun(ownerId, runId);
    if (isTerminal(run.status)) return view(run);
    if (run.status !== "idle" || sessions.isHeld(runId)) {
      throw new EngineError("session_busy", "the run is busy with a turn; cancel it or wait until it is idle", {
        retryAfterSeconds: 5,
      });
    }
    const hold = sessions.acquire(runId);
    try {
      return view(await sessions.track(endings.finish(run, "completed")));
    } finally {
      hold.release();
    }
  }

  async function cancelHere(ownerId: string, runId: string): Promise<RunView> {
    const run = await ownedRun(ownerId, runId);
    if (isTerminal(run.status)) return view(run);
    return view(await sessions.track(endings.cancel(run)));
  }

  const engine: Engine = {
    bus,
    secrets: createOwnerSecrets({ store, box: deps.secrets, now }),
    webhooks,
    listEnvironments: () => envCache.list(),
    async dropEnvironment(key) {
      if (!(await envCache.drop(key))) throw new EngineError("environment_not_found", `no cached environment ${key}`);
    },
    async startRun(ownerId, rawInput, opts = {}) {
      const input = parseInput(CreateRunInput, rawInput);
      // Shown once, in this answer; a replay of the request does not show it again.
      let generatedSecret: string | undefined;
      const turnInput = prepareTurnInput(outputs, input, input.modelId ?? config.defaultModel, imageLimits);
      const run = await admission.serial(ownerId, async () => {
        // A replay of an idempotent request is not refused by the cap it already counts in.
        const replayed = opts.idempotencyKey && (await runs.replay(ownerId, opts.idempotencyKey, input));
        if (replayed) return replayed;
        refuseWhileClosing();
        const attempts = input.attempts ?? 1;
        // Every sibling takes a slot: a group that does not fit whole is refused whole.
        await admission.assertBelowCap(ownerId, attempts);
        await budgets.assertOwnerBelowCap(ownerId);
        if (input.webhook && !input.webhook.secret) generatedSecret = newWebhookSecret();
        if (attempts > 1)
          return groups.start(ownerId, input, {
            ...opts,
            ...(generatedSecret ? { webhookSecret: generatedSecret } : {}),
            turnInput,
          });
        const created = await runs.create(ownerId, input, {
          ...(generatedSecret ? { webhookSecret: generatedSecret } : {}),
          ...(opts.idempotencyKey ? { idempotencyKey: opts.idempotencyKey } : {}),
          ...(opts.allowedRepositories ? { allowedRepositories: opts.allowedRepositories } : {}),
        });
        // Replicas: a replica without room leaves the run queued for one that has.
        if (replicas && !replicas.hasRoom()) {
          await replicas.enqueue(created.id, input);
          return created;
        }
        return turns.begin(created, input.prompt, sessions.acquire(created.id), undefined, turnInput);
      });
      const shown = view(run);
      return generatedSecret && shown.webhook
        ? { ...shown, webhook: { ...shown.webhook, secret: generatedSecret } }
        : shown;
    },

    async sendMessage(ownerId, runId, rawInput) {
      const input = parseInput(MessageInput, rawInput);
      await ownedRun(ownerId, runId);
      return routed({ op: "message", ownerId, runId, input }, () => sendHere(ownerId, runId, input));
    },

    getGroup: (ownerId, groupId) => groups.get(ownerId, groupId),

    async getRun(ownerId, runId, opts = {}) {
      const run = await ownedRun(ownerId, runId);
      const extra: Parameters<typeof toRunView>[2] = {};
      if (opts.patch)
        extra.patch =
          run.hasPatch && run.status !== "running" && run.status !== "queued"
            ? ((await store.getPatch(runId)) ?? null)
            : null;
      if (opts.events) extra.events = await store.readEvents(runId, 0);
      if (opts.turns) extra.turns = await store.listTurns(runId);
      if (opts.fullSummary && run.summaryTruncated) {
        const whole = await store.getSummary(runId);
        if (whole !== undefined) extra.fullSummary = whole;
      }
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

    async events(ownerId, runId, after = 0, limit, opts) {
      await ownedRun(ownerId, runId);
      assertCursor(runId, after, await store.lastEventId(runId));
      return store.readEvents(runId, after, limit, opts);
    },

    follow: (ownerId, runId, opts = {}) => followRun(following, ownerId, runId, opts),

    endSession: (ownerId, runId) => routed({ op: "end", ownerId, runId }, () => endHere(ownerId, runId)),
    cancel: (ownerId, runId) => routed({ op: "cancel", ownerId, runId }, () => cancelHere(ownerId, runId)),

    async hibernate(ownerId, runId) {
      await ownedRun(ownerId, runId);
      await hibernation.hibernate(runId);
      return view(await ownedRun(ownerId, runId));
    },

    async deleteRun(ownerId, runId) {
      const run = await ownedRun(ownerId, runId);
      if (!isFinished(run, now()) || sessions.isHeld(runId) || sessions.get(runId)) {
        throw new EngineError(
          "run_active",
          `run ${runId} is ${run.status === "idle" ? "idle with its session open" : run.status}: cancel it or end its session first`,
          { runId, status: run.status },
        );
      }
      // Held while it goes, so a message cannot start a turn on it meanwhile; then forgotten.
      sessions.acquire(runId);
      try {
        await store.deleteRun(runId);
      } finally {
        await sessions.end(runId);
      }
    },

    async waitForTurn(ownerId, runId, signal) {
      const run = await ownedRun(ownerId, runId);
      if (run.status !== "queued" && run.status !== "running") return view(run);
      // From the log's end now: the turn ends with the next status that is not queued/running.
      const after = await store.lastEventId(runId);
      for await (const ev of await engine.follow(ownerId, runId, {
        after,
        until: "turn",
        ...(signal ? { signal } : {}),
      }))
        void ev;
      if (signal?.aborted) throw new EngineError("cancelled", "stopped waiting");
      return view(await ownedRun(ownerId, runId));
    },

    ownerLimits: (ownerId) => budgets.ownerLimits(parseInput(OwnerId, ownerId, "owner")),
    setOwnerLimits: (ownerId, input) =>
      budgets.setOwnerLimits(parseInput(OwnerId, ownerId, "owner"), parseInput(OwnerLimitsInput, input, "body")),

    models: () => ({
      defaultModel: config.defaultModel,
      models: [...config.models],
      textOnlyModels: [...config.textOnlyModels],
    }),
    activeRunCount: (ownerId) => store.countActiveRuns(ownerId),
    async recover() {
      // Deliveries a previous process left go out first; recovery's own changes queue behind them.
      await webhooks.start();
      // Replicas: only runs whose replica is gone (lease run out) are this one's to settle.
      await recover(
        { ...parts, endings, hibernation },
        deps.registry ? { orphans: await deps.registry.takeOrphans() } : undefined,
      );
      replicas?.start();
      retention.start();
    },
    ...(replicas ? { replicas } : {}),
    async handoff(req) {
      if (req.op === "message") return sendHere(req.ownerId, req.runId, parseInput(MessageInput, req.input));
      return req.op === "end" ? endHere(req.ownerId, req.runId) : cancelHere(req.ownerId, req.runId);
    },

    async drain(graceMs) {
      state.draining = true;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(sessions.turns().map((t) => t.done)),
        new Promise((r) => (timer = setTimeout(r, graceMs))),
      ]);
      clearTimeout(timer);
    },

    async close() {
      state.closing = true;
      await retention.stop();
      const inFlight = sessions.turns();
      for (const t of inFlight) t.abort.abort();
      await Promise.allSettled(inFlight.map((t) => t.done));
      await sessions.settled();
      await Promise.allSettled(sessions.runIds().map((id) => sessions.handOver(id)));
      await webhooks.close();
      await replicas?.close();
      stopRelay();
    },
  };
  return engine;
}
