/**
 * Groups of attempts: `attempts: N` on a new run starts N sibling runs from one request, each
 * carrying the group. When every sibling is idle or ended, a group whose validation mode is
 * `basic` or `tests` is ranked (validation passed first, then the smaller diff) and names its
 * best run; siblings hold back publishing, and the best publishes once, when ranked.
 */
import { randomBytes } from "node:crypto";
import { EngineError } from "../errors.ts";
import type { EventBus } from "../events/bus.ts";
import type { Logger } from "../log.ts";
import { createSerialQueues } from "../serial.ts";
import type { RunStore } from "../store/store.ts";
import type { RunFactory } from "./create.ts";
import type { Endings } from "./end.ts";
import type { GroupRank, GroupRecord, GroupView } from "./group-schema.ts";
import type { RunPublishing } from "./publishing.ts";
import { isTerminal, type CreateRunInput, type RunRecord } from "./schema.ts";
import type { Hold, LiveSessions } from "./sessions.ts";
import type { Turns } from "./turn.ts";
import type { TurnInput } from "./turn.ts";
import type { RunWriter } from "./writer.ts";

export interface Groups {
  /**
   * Create the `input.attempts` siblings and start their first turns; the first run is
   * returned. Call inside the owner's admission, after the cap check for all of them.
   */
  start(
    ownerId: string,
    input: CreateRunInput,
    opts: {
      idempotencyKey?: string;
      allowedRepositories?: readonly string[];
      webhookSecret?: string;
      /** The first turn's images and schema, checked once for all siblings. */
      turnInput?: TurnInput;
    },
  ): Promise<RunRecord>;
  /** The group with its siblings' current statuses; group_not_found for another owner's. */
  get(ownerId: string, groupId: string): Promise<GroupView>;
}

export interface GroupDeps {
  store: RunStore;
  bus: Pick<EventBus, "onStatus">;
  runs: RunFactory;
  turns: Turns;
  sessions: LiveSessions;
  endings: Endings;
  publishing: RunPublishing;
  writer: RunWriter;
  log: Logger;
  now: () => Date;
}

const newGroupId = () => `grp_${Date.now().toString(36)}${randomBytes(9).toString("base64url").replace(/[-_]/g, "x")}`;

const settled = (run: RunRecord) => run.status === "idle" || isTerminal(run.status);
/** A sibling that can be best: its turn did not fail and it was not cancelled. */
const eligible = (run: RunRecord) => run.status === "idle" || run.status === "completed";
const VALIDATION_ORDER = { passed: 0, skipped: 1, failed: 2 } as const;

/**
 * The siblings in rank order: those that can be best first, then validation passed, skipped,
 * failed; then a run with changes before one without; then the smaller diff; then attempt order.
 */
export function rankSiblings(runs: RunRecord[]): GroupRank[] {
  const key = (r: RunRecord) => [
    eligible(r) ? 0 : 1,
    r.validation ? VALIDATION_ORDER[r.validation.status] : 3,
    r.hasPatch ? 0 : 1,
    diffSize(r),
    r.group?.attempt ?? 0,
  ];
  const order = [...runs].sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
    return 0;
  });
  return order.map((r, i) => ({
    runId: r.id,
    rank: i + 1,
    validation: r.validation?.status ?? null,
    diffSize: diffSize(r),
  }));
}

const diffSize = (r: RunRecord) => (r.diffStats ? r.diffStats.additions + r.diffStats.deletions : 0);

export function createGroups(deps: GroupDeps): Groups {
  const { store, log } = deps;
  // One settling at a time per group: two siblings going idle together rank it once.
  const serial = createSerialQueues();

  deps.bus.onStatus(({ run }) => {
    if (!run.group || !settled(run)) return;
    const groupId = run.group.id;
    void serial(groupId, () => settle(groupId)).catch((error: unknown) =>
      log.error("ranking a group failed", { groupId, error }),
    );
  });

  /** Rank the group once every sibling is idle or ended; the best then publishes if asked. */
  async function settle(groupId: string): Promise<void> {
    const group = await store.getGroup(groupId);
    if (!group || group.status !== "running") return;
    const runs = await siblings(group);
    if (!runs.every(settled)) return;
    const ranked = group.validationMode !== "minimal";
    const ranking = ranked ? rankSiblings(runs) : null;
    const top = ranking ? runs.find((r) => r.id === ranking[0]!.runId) : undefined;
    const best = top && eligible(top) ? top : undefined;
    await store.updateGroup(groupId, {
      status: "settled",
      ranking,
      bestRunId: best?.id ?? null,
      settledAt: deps.now().toISOString(),
    });
    log.info("group settled", { groupId, bestRunId: best?.id ?? null });
    if (best) await publishBest(best);
  }

  /** The best run stops holding back: it publishes now if asked, and on its later turns as any run. */
  async function publishBest(best: RunRecord): Promise<void> {
    let hold: Hold | undefined;
    // A hibernation holds the run only for a moment (and no turn follows it): wait, then hold.
    await deps.sessions.settle(best.id);
    try {
      if (!isTerminal(best.status)) hold = deps.sessions.acquire(best.id);
    } catch {
      // A follow-up turn is in flight: it reads holdPublish as off when it ends and publishes then.
    }
    try {
      const run = await store.updateRun(best.id, { group: { ...best.group!, holdPublish: false } });
      if (!hold && !isTerminal(run.status)) return;
      if (run.publish.mode !== "draft_pr" || !run.hasPatch) return;
      const patch = (await store.getBinaryPatch(run.id)) ?? "";
      const note = (data: Parameters<RunWriter["note"]>[1]) => deps.writer.note(run, data);
      note({ kind: "log", message: "best run of its group: publishing" });
      const fields = await deps.publishing.publish(
        run,
        patch,
        { summary: run.summary, diffStats: run.diffStats, changedPaths: run.changedPaths },
        note,
        new AbortController().signal,
      );
      await store.updateRun(run.id, fields);
    } finally {
      hold?.release();
    }
  }

  async function siblings(group: GroupRecord): Promise<RunRecord[]> {
    const runs = await Promise.all(group.runIds.map((id) => store.getRun(id)));
    return runs.filter((r): r is RunRecord => r !== undefined);
  }

  return {
    async start(ownerId, input, opts) {
      const attempts = input.attempts ?? 1;
      if (input.publish?.mode === "draft_pr" && (input.validationMode ?? "basic") === "minimal") {
        throw new EngineError(
          "invalid_request",
          "a group of attempts publishes only its best run, which needs validationMode basic or tests to be ranked",
          { field: "validationMode" },
        );
      }
      const id = newGroupId();
      const created: RunRecord[] = [];
      try {
        for (let attempt = 1; attempt <= attempts; attempt++) {
          created.push(
            await deps.runs.create(ownerId, input, {
              group: { id, attempt, attempts },
              // The first run answers a replay of the request, as a single run would.
              ...(opts.idempotencyKey && attempt === 1 ? { idempotencyKey: opts.idempotencyKey } : {}),
              ...(opts.allowedRepositories ? { allowedRepositories: opts.allowedRepositories } : {}),
              // One secret for the group's webhook, shown once in the answer.
              ...(opts.webhookSecret ? { webhookSecret: opts.webhookSecret } : {}),
            }),
          );
        }
      } catch (e) {
        // All or nothing: siblings made before the failure end at once and free their slots.
        for (const run of created)
          await deps.endings.finish(run, "failed", { code: "invalid_request", message: "a sibling could not start" });
        throw e;
      }
      const t = deps.now().toISOString();
      await store.createGroup({
        id,
        ownerId,
        runIds: created.map((r) => r.id),
        validationMode: created[0]!.validationMode,
        status: "running",
        ranking: null,
        bestRunId: null,
        createdAt: t,
        settledAt: null,
      });
      const started: RunRecord[] = [];
      for (const run of created)
        started.push(
          await deps.turns.begin(run, input.prompt, deps.sessions.acquire(run.id), undefined, opts.turnInput),
        );
      return started[0]!;
    },

    async get(ownerId, groupId) {
      let group = /^[A-Za-z0-9_-]{1,64}$/.test(groupId) ? await store.getGroup(groupId) : undefined;
      if (!group || group.ownerId !== ownerId) throw new EngineError("group_not_found", `group ${groupId} not found`);
      // A process that stopped between the last sibling settling and the ranking left it undone.
      if (group.status === "running" && (await siblings(group)).every(settled)) {
        await serial(groupId, () => settle(groupId));
        group = (await store.getGroup(groupId))!;
      }
      const runs = await siblings(group);
      return {
        id: group.id,
        status: group.status,
        attempts: group.runIds.length,
        validationMode: group.validationMode,
        bestRunId: group.bestRunId,
        runs: runs.map((r, i) => {
          const rank = group.ranking?.find((x) => x.runId === r.id);
          return {
            id: r.id,
            attempt: r.group?.attempt ?? i + 1,
            status: r.status,
            rank: rank?.rank ?? null,
            validation: rank?.validation ?? null,
            diffSize: rank?.diffSize ?? null,
          };
        }),
        createdAt: group.createdAt,
        settledAt: group.settledAt,
      };
    },
  };
}
