/**
 * A message to a run that is not working: the same session continues when it is warm (the
 * run's publish settings updated by the message), otherwise a chained run starts in a new
 * sandbox from the prior run's base with its patch applied.
 */
import { EngineError } from "../errors.ts";
import type { Publisher } from "../publish/publish.ts";
import type { Admission } from "./admission.ts";
import { mergeLimits } from "./budget.ts";
import type { RunFactory } from "./create.ts";
import type { Endings } from "./end.ts";
import type { RunParts } from "./parts.ts";
import type { MessageInput, PublishState, PublishUpdate, RunRecord } from "./schema.ts";
import type { TurnInput, Turns } from "./turn.ts";

export interface Messages {
  /** Start the message's turn on `run` (idle or ended), or on a chained run; the run the turn is on. */
  send(run: RunRecord, input: MessageInput, turnInput?: TurnInput): Promise<RunRecord>;
}

const busy = () =>
  new EngineError("session_busy", "the run is busy with a turn; retry when it is idle", { retryAfterSeconds: 5 });

export function createMessages(
  deps: Pick<RunParts, "store" | "sessions" | "now"> & {
    turns: Turns;
    runs: RunFactory;
    endings: Endings;
    publisher: Publisher;
    admission: Admission;
  },
): Messages {
  const { store, sessions, turns } = deps;
  const sessionLive = (run: RunRecord) =>
    run.status === "idle" &&
    (sessions.get(run.id) !== undefined || sessions.hibernated(run.id) !== undefined) &&
    !!run.sessionExpiresAt &&
    Date.parse(run.sessionExpiresAt) > deps.now().getTime();

  async function continueSession(run: RunRecord, input: MessageInput, turnInput: TurnInput): Promise<RunRecord> {
    const hold = sessions.acquire(run.id);
    try {
      const publish = input.publish ? mergePublish(run.publish, input.publish) : undefined;
      if (publish?.mode === "draft_pr") {
        await deps.publisher.check({
          repository: run.repository,
          ...(publish.branch ? { branch: publish.branch } : {}),
          ...(run.baseRef ? { baseRef: run.baseRef } : {}),
        });
      }
      const limits = mergeLimits(run.limits, input.limits);
      const changes: Partial<RunRecord> = {
        ...(publish ? { publish } : {}),
        ...(input.limits && limits ? { limits } : {}),
        ...kindChange(run, input),
      };
      const updated = Object.keys(changes).length ? await store.updateRun(run.id, changes) : run;
      return await turns.begin(updated, input.prompt!, hold, undefined, turnInput);
    } catch (e) {
      hold.release();
      throw e;
    }
  }

  return {
    async send(run, input, turnInput = {}) {
      if (run.status === "queued" || run.status === "running") throw busy();
      // A message that arrives while the session hibernates waits for it, then wakes it;
      // from here to the turn's hold nothing awaits, so no new hibernation slips between.
      await sessions.settle(run.id);
      if (sessionLive(run)) return continueSession(run, input, turnInput);
      if (sessions.isHeld(run.id)) throw busy();
      // Expired or terminal: a chained run in a new sandbox, with the prior patch applied.
      return deps.admission.serial(run.ownerId, async () => {
        await deps.admission.assertBelowCap(run.ownerId);
        // Checked before the prior session ends: a message that cannot chain changes nothing.
        const chained = deps.runs.chained(run, await store.listTurns(run.id), input);
        if (run.status === "idle") await deps.endings.finish(run, "completed");
        const prior = (await store.getRun(run.id))!;
        const next = await deps.runs.create(run.ownerId, chained.input, { chainedFrom: prior });
        return turns.begin(next, chained.prompt, sessions.acquire(next.id), prior, turnInput);
      });
    },
  };
}

/**
 * What a message's `taskKind` changes on a warm session: the kind of its turn and those after,
 * and a pending plan approved by switching to code.
 */
export function kindChange(run: RunRecord, input: MessageInput): Partial<RunRecord> {
  const kind = input.taskKind ?? run.taskKind;
  return {
    ...(kind !== run.taskKind ? { taskKind: kind } : {}),
    ...(run.planApproval === "pending" && kind === "code" ? { planApproval: "approved" as const } : {}),
  };
}

/**
 * A run's publish settings after a message's `publish`: what the message names changes, the
 * rest stays. The opt-in to an existing branch belongs to the branch it was given for, so
 * naming another branch drops it unless repeated.
 */
export function mergePublish(current: PublishState, update: PublishUpdate): PublishState {
  const { allowExistingBranch: previous, ...kept } = current;
  const branch = update.branch ?? current.branch;
  const allow = update.allowExistingBranch ?? (branch === current.branch ? previous : undefined);
  return {
    ...kept,
    mode: update.mode ?? current.mode,
    ...(branch ? { branch } : {}),
    ...(allow ? { allowExistingBranch: true } : {}),
  };
}
