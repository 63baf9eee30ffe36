/**
 * Budgets against the real embedded store: how usage becomes cost (reported, priced by the
 * catalog, or unknown), when a run's model calls are refused, the owner's UTC day, and the
 * time limit's stop. The gateway's side is in test/http/budgets.e2e.test.ts.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../src/config.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import { createBudgets, mergeLimits, type Budgets } from "../../../src/engine/run/budget.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { tempDir } from "../../helpers.ts";
import { runRecord } from "../store/fixtures.ts";

let store: RunStore;
let budgets: Budgets;
let clock: Date;

beforeEach(async () => {
  store = await createSqliteStore({ dataDir: tempDir("budget") });
  clock = new Date("2026-03-01T23:59:00.000Z");
  budgets = createBudgets({
    config: { modelPrices: { "priced/model": { inputPerMTok: 2, outputPerMTok: 10 } } },
    store,
    log: silentLogger,
    now: () => clock,
  });
});
afterEach(async () => {
  await store.close();
});

const usageOf = async (id: string) => (await store.getRun(id))!.usage;

describe("budgets", () => {
  it("takes the upstream's reported cost, else the catalog's prices, else marks the cost unknown", async () => {
    await store.createRun(runRecord({ id: "run_priced", modelId: "priced/model" }));
    budgets.record("run_priced", { inputTokens: 1_000_000, outputTokens: 100_000 });
    budgets.record("run_priced", { inputTokens: 10, outputTokens: 10, costUsd: 0.5 });
    await budgets.admit("run_priced");
    expect(await usageOf("run_priced")).toEqual({
      inputTokens: 1_000_010,
      outputTokens: 100_010,
      costUsd: 3.5,
      costKnown: true,
    });

    await store.createRun(runRecord({ id: "run_unpriced", modelId: "other/model", limits: { maxCostUsd: 0.01 } }));
    budgets.record("run_unpriced", { inputTokens: 100, outputTokens: 50 });
    budgets.record("run_unpriced", { inputTokens: 100, outputTokens: 50, costUsd: 0.001 });
    await budgets.admit("run_unpriced");
    // What is known is kept, and the run says it is not the whole cost.
    expect(await usageOf("run_unpriced")).toEqual({
      inputTokens: 200,
      outputTokens: 100,
      costUsd: 0.001,
      costKnown: false,
    });
  });

  it("refuses a run's calls once maxTokens is reached, and lets them through again when the limit is raised", async () => {
    await store.createRun(runRecord({ id: "run_tokens", limits: { maxTokens: 300, onExceeded: "pause" } }));
    budgets.record("run_tokens", { inputTokens: 100, outputTokens: 100 });
    expect(await budgets.admit("run_tokens")).toBeUndefined();
    budgets.record("run_tokens", { inputTokens: 100, outputTokens: 0 });
    const refusal = await budgets.admit("run_tokens");
    expect(refusal).toMatch(/300 tokens used of limits\.maxTokens 300; send a message with a higher limits\.maxTokens/);

    const turn = budgets.startTurn((await store.getRun("run_tokens"))!);
    await budgets.admit("run_tokens");
    expect(await turn.end()).toMatchObject({ limit: "maxTokens" });

    const run = (await store.getRun("run_tokens"))!;
    await store.updateRun("run_tokens", { limits: mergeLimits(run.limits, { maxTokens: 1000 }) });
    expect((await store.getRun("run_tokens"))!.limits).toEqual({ maxTokens: 1000, onExceeded: "pause" });
    expect(await budgets.admit("run_tokens")).toBeUndefined();
    // A turn nothing stopped ends with no stop.
    expect(await budgets.startTurn((await store.getRun("run_tokens"))!).end()).toBeUndefined();
  });

  it("holds every run of an owner to its daily cap, for that UTC day only", async () => {
    await store.createRun(runRecord({ id: "run_1", ownerId: "own_cap", modelId: "priced/model" }));
    await store.createRun(runRecord({ id: "run_2", ownerId: "own_cap" }));
    await store.createRun(runRecord({ id: "run_other", ownerId: "own_free" }));
    expect(await budgets.setOwnerLimits("own_cap", { dailyCostUsd: 1 })).toEqual({
      ownerId: "own_cap",
      dailyCostUsd: 1,
      day: "2026-03-01",
      spentTodayUsd: 0,
    });
    budgets.record("run_1", { inputTokens: 0, outputTokens: 0, costUsd: 0.6 });
    await budgets.admit("run_1");
    expect(await budgets.admit("run_2")).toBeUndefined();
    budgets.record("run_2", { inputTokens: 0, outputTokens: 0, costUsd: 0.4 });
    await budgets.admit("run_2");
    expect(await budgets.admit("run_1")).toMatch(/daily cost cap of \$1 is spent for 2026-03-01/);
    expect(await budgets.admit("run_other")).toBeUndefined();
    await expect(budgets.assertOwnerBelowCap("own_cap")).rejects.toMatchObject({ code: "budget_exceeded" });
    await budgets.assertOwnerBelowCap("own_free");

    clock = new Date("2026-03-02T00:00:01.000Z");
    expect(await budgets.admit("run_1")).toBeUndefined();
    expect(await budgets.ownerLimits("own_cap")).toMatchObject({ day: "2026-03-02", spentTodayUsd: 0 });
    budgets.record("run_1", { inputTokens: 0, outputTokens: 0, costUsd: 0.25 });
    await budgets.admit("run_1");
    expect((await budgets.ownerLimits("own_cap")).spentTodayUsd).toBe(0.25);
    // Removing the cap keeps the day's spend.
    expect(await budgets.setOwnerLimits("own_cap", { dailyCostUsd: null })).toMatchObject({
      dailyCostUsd: null,
      spentTodayUsd: 0.25,
    });
    // A cap of 0 stops the owner's runs outright.
    await budgets.setOwnerLimits("own_free", { dailyCostUsd: 0 });
    await expect(budgets.assertOwnerBelowCap("own_free")).rejects.toMatchObject({ code: "budget_exceeded" });
    expect(await budgets.admit("run_other")).toMatch(/daily cost cap of \$0/);
  });

  it("stops a turn when the run's agent time reaches maxDurationMs, and counts the time over turns", async () => {
    await store.createRun(
      runRecord({ id: "run_time", limits: { maxDurationMs: 40 }, usage: { inputTokens: 0, outputTokens: 0 } }),
    );
    const turn = budgets.startTurn((await store.getRun("run_time"))!);
    await new Promise((r) => turn.signal.addEventListener("abort", r, { once: true }));
    clock = new Date(clock.getTime() + 50);
    expect(await turn.end()).toMatchObject({ limit: "maxDurationMs" });
    expect((await usageOf("run_time")).durationMs).toBe(50);
    // Over the limit now: its calls are refused too, until it is raised.
    expect(await budgets.admit("run_time")).toMatch(/limits\.maxDurationMs 40/);
  });

  it("reads the catalog's prices from PATCHBAY_MODEL_PRICES, and refuses a malformed value naming the variable", () => {
    expect(loadConfig({}).modelPrices).toEqual({});
    const prices = { "vendor/model": { inputPerMTok: 3, outputPerMTok: 15 } };
    expect(loadConfig({ PATCHBAY_MODEL_PRICES: JSON.stringify(prices) }).modelPrices).toEqual(prices);
    for (const bad of ["{not json", '{"m": {"inputPerMTok": -1, "outputPerMTok": 1}}', '{"m": {"input": 1}}', "[]"]) {
      expect(() => loadConfig({ PATCHBAY_MODEL_PRICES: bad }), bad).toThrow(ConfigError);
      expect(() => loadConfig({ PATCHBAY_MODEL_PRICES: bad }), bad).toThrow(/PATCHBAY_MODEL_PRICES/);
    }
  });
});
