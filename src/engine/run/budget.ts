/**
 * Budgets: what a run may spend (its `limits`) and what its owner may spend in a UTC day (the
 * daily cost cap an admin sets). The gateway's metering reports each model call's usage
 * (`record`) and asks before each call (`admit`), which is refused once a limit is reached; a
 * turn's agent time is measured and the turn stopped at `maxDurationMs` (`startTurn`). The
 * turn then reads what stopped it and ends the run `failed` or pauses it `idle`.
 *
 * Cost is the upstream's reported cost (OpenRouter's `usage.cost`), else the catalog's prices
 * (PATCHBAY_MODEL_PRICES), else unknown: `usage.costKnown` turns false and only the token and
 * time limits hold for that call.
 */
import * as z from "zod";
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { createSerialQueues } from "../serial.ts";
import type { OwnerBudgetRecord, RunStore } from "../store/store.ts";
import type { RunLimits, RunRecord, Usage } from "./schema.ts";

/** An owner id as keys carry it (`CreateKeyInput.ownerId`). */
export const OwnerId = z.string().min(1).max(100);

/** Body of `PUT /api/v1/owners/{owner}/limits`. */
export const OwnerLimitsInput = z
  .object({
    dailyCostUsd: z
      .number()
      .min(0)
      .max(1e6)
      .nullable()
      .describe(
        "Most the owner's runs may spend on models per UTC day, in US dollars (0 stops them all); null removes the cap",
      ),
  })
  .strict();
export type OwnerLimitsInput = z.infer<typeof OwnerLimitsInput>;

/** An owner's cap and what its runs spent today. */
export const OwnerLimits = z.object({
  ownerId: z.string(),
  dailyCostUsd: z.number().nullable().describe("The daily cost cap in US dollars; null: none"),
  day: z.string().describe("The UTC day `spentTodayUsd` is for (`YYYY-MM-DD`)"),
  spentTodayUsd: z.number().describe("Model cost of the owner's runs on `day` (calls whose cost was known)"),
});
export type OwnerLimits = z.infer<typeof OwnerLimits>;

/** Which limit stopped a run, and the message its `error` carries. */
export interface BudgetStop {
  limit: "maxTokens" | "maxCostUsd" | "maxDurationMs" | "dailyCostUsd";
  message: string;
}

/** A turn measured against the run's time limit. */
export interface BudgetTurn {
  /** Aborts when the run's agent time reaches `maxDurationMs`. */
  readonly signal: AbortSignal;
  /** Add the turn's time to the run's usage; the limit that stopped the turn (a refused call, the time), if any. */
  end(): Promise<BudgetStop | undefined>;
}

export interface Budgets {
  /** Asked by the gateway before each model call of the run: undefined lets it through, a message refuses it. */
  admit(runId: string): Promise<string | undefined>;
  /** Add one model call's usage to the run and its cost to the owner's day. */
  record(runId: string, delta: Usage): void;
  /** Start measuring a turn's agent time. */
  startTurn(run: RunRecord): BudgetTurn;
  /** Refuse a new run (budget_exceeded) while the owner's daily cap is spent. */
  assertOwnerBelowCap(ownerId: string): Promise<void>;
  ownerLimits(ownerId: string): Promise<OwnerLimits>;
  setOwnerLimits(ownerId: string, input: OwnerLimitsInput): Promise<OwnerLimits>;
}

/** A run's limits after a message's `limits`: the fields named replace the run's, the others stay. */
export function mergeLimits(current: RunLimits | undefined, update: RunLimits | undefined): RunLimits | undefined {
  if (!update) return current;
  return { ...current, ...update };
}

export function createBudgets(deps: {
  config: Pick<Config, "modelPrices">;
  store: RunStore;
  log: Logger;
  now: () => Date;
}): Budgets {
  const { store, log, now } = deps;
  // Usage and checks of one run (and the spend of one owner) apply in order: a call admitted
  // after another's usage was reported sees that usage.
  const serial = createSerialQueues();
  const onRun = <T>(runId: string, work: () => Promise<T>) => serial(`run:${runId}`, work);
  const onOwner = <T>(ownerId: string, work: () => Promise<T>) => serial(`owner:${ownerId}`, work);
  /** What stopped each run's current turn; taken when the turn ends. */
  const stops = new Map<string, BudgetStop>();
  const today = () => now().toISOString().slice(0, 10);

  const spentToday = (b: OwnerBudgetRecord | undefined) => (b && b.spentDay === today() ? b.spentUsd : 0);

  function priced(modelId: string, delta: Usage): number | undefined {
    if (delta.costUsd !== undefined) return delta.costUsd;
    const price = deps.config.modelPrices[modelId];
    if (!price) return undefined;
    return (delta.inputTokens * price.inputPerMTok + delta.outputTokens * price.outputPerMTok) / 1e6;
  }

  /** The limit the run (or its owner's day) has reached, if any. */
  async function reached(run: RunRecord): Promise<BudgetStop | undefined> {
    const l = run.limits ?? {};
    const u = run.usage;
    const tokens = u.inputTokens + u.outputTokens;
    const raise = (field: string) =>
      (l.onExceeded ?? "fail") === "pause" ? `; send a message with a higher limits.${field} to continue` : "";
    if (l.maxTokens !== undefined && tokens >= l.maxTokens)
      return {
        limit: "maxTokens",
        message: `budget exceeded: ${tokens} tokens used of limits.maxTokens ${l.maxTokens}${raise("maxTokens")}`,
      };
    if (l.maxCostUsd !== undefined && u.costUsd !== undefined && u.costUsd >= l.maxCostUsd)
      return {
        limit: "maxCostUsd",
        message: `budget exceeded: $${round(u.costUsd)} spent of limits.maxCostUsd $${l.maxCostUsd}${raise("maxCostUsd")}`,
      };
    if (l.maxDurationMs !== undefined && (u.durationMs ?? 0) >= l.maxDurationMs)
      return {
        limit: "maxDurationMs",
        message: `budget exceeded: the agent worked ${u.durationMs ?? 0} ms of limits.maxDurationMs ${l.maxDurationMs}${raise("maxDurationMs")}`,
      };
    const owner = await store.getOwnerBudget(run.ownerId);
    if (owner?.dailyCostUsd != null && spentToday(owner) >= owner.dailyCostUsd)
      return {
        limit: "dailyCostUsd",
        message: `budget exceeded: the owner's daily cost cap of $${owner.dailyCostUsd} is spent for ${today()} (UTC)`,
      };
    return undefined;
  }

  async function addOwnerSpend(ownerId: string, costUsd: number): Promise<void> {
    await onOwner(ownerId, async () => {
      const b = await store.getOwnerBudget(ownerId);
      await store.putOwnerBudget({
        ownerId,
        dailyCostUsd: b?.dailyCostUsd ?? null,
        spentDay: today(),
        spentUsd: spentToday(b) + costUsd,
        updatedAt: now().toISOString(),
      });
    });
  }

  async function view(ownerId: string): Promise<OwnerLimits> {
    const b = await store.getOwnerBudget(ownerId);
    return { ownerId, dailyCostUsd: b?.dailyCostUsd ?? null, day: today(), spentTodayUsd: spentToday(b) };
  }

  return {
    admit: (runId) =>
      onRun(runId, async () => {
        const run = await store.getRun(runId);
        if (!run) return undefined;
        const stop = await reached(run);
        if (!stop) return undefined;
        if (!stops.has(runId)) log.info("budget reached: refusing the run's model calls", { runId, limit: stop.limit });
        stops.set(runId, stop);
        return stop.message;
      }),

    record(runId, delta) {
      void onRun(runId, async () => {
        const run = await store.getRun(runId);
        if (!run) return;
        const cost = priced(run.modelId, delta);
        const u = run.usage;
        const costUsd = cost === undefined ? u.costUsd : (u.costUsd ?? 0) + cost;
        const usage: Usage = {
          ...u,
          inputTokens: u.inputTokens + delta.inputTokens,
          outputTokens: u.outputTokens + delta.outputTokens,
          ...(costUsd !== undefined ? { costUsd } : {}),
          costKnown: (u.costKnown ?? true) && cost !== undefined,
        };
        await store.updateRun(runId, { usage });
        if (cost) await addOwnerSpend(run.ownerId, cost);
      }).catch((e: unknown) => log.warn("could not record usage", { runId, error: e }));
    },

    startTurn(run) {
      stops.delete(run.id);
      const controller = new AbortController();
      const started = now().getTime();
      const max = run.limits?.maxDurationMs;
      let timer: NodeJS.Timeout | undefined;
      if (max !== undefined) {
        const stop = () => {
          stops.set(run.id, {
            limit: "maxDurationMs",
            message: `budget exceeded: the agent's time reached limits.maxDurationMs ${max}`,
          });
          controller.abort();
        };
        timer = setTimeout(stop, Math.max(0, max - (run.usage.durationMs ?? 0)));
        timer.unref();
      }
      return {
        signal: controller.signal,
        end: () =>
          onRun(run.id, async () => {
            clearTimeout(timer);
            const current = await store.getRun(run.id);
            if (current) {
              const durationMs = (current.usage.durationMs ?? 0) + Math.max(0, now().getTime() - started);
              await store.updateRun(run.id, { usage: { ...current.usage, durationMs } });
            }
            const stop = stops.get(run.id);
            stops.delete(run.id);
            return stop;
          }),
      };
    },

    async assertOwnerBelowCap(ownerId) {
      const v = await view(ownerId);
      if (v.dailyCostUsd !== null && v.spentTodayUsd >= v.dailyCostUsd)
        throw new EngineError(
          "budget_exceeded",
          `the daily cost cap of $${v.dailyCostUsd} is spent for ${v.day} (UTC); runs start again tomorrow or when an admin raises it`,
          { dailyCostUsd: v.dailyCostUsd, spentTodayUsd: v.spentTodayUsd, day: v.day },
        );
    },

    ownerLimits: view,

    setOwnerLimits: (ownerId, input) =>
      onOwner(ownerId, async () => {
        const b = await store.getOwnerBudget(ownerId);
        await store.putOwnerBudget({
          ownerId,
          dailyCostUsd: input.dailyCostUsd,
          spentDay: b?.spentDay ?? null,
          spentUsd: b?.spentUsd ?? 0,
          updatedAt: now().toISOString(),
        });
        return view(ownerId);
      }),
  };
}

function round(usd: number): string {
  return usd.toFixed(6).replace(/\.?0+$/, "");
}
