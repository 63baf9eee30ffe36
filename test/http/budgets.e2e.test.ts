/**
 * Budgets end to end over HTTP: the real engine, real OpenCode in the local sandbox, the real
 * model gateway and the scripted model, which reports usage (and cost) in every completion.
 * A run over `limits.maxTokens` or `limits.maxCostUsd`, or over its owner's daily cap, has its
 * next model call refused at the gateway and ends `budget_exceeded` with the patch it had;
 * `onExceeded: pause` leaves it idle, and a message raising the limit continues the session.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Step, Usage } from "../fixtures/scripted-model.ts";
import { LOADED } from "../support/harness.ts";
import { API, serveHarness, type HttpHarness } from "../support/http.ts";

let h: HttpHarness;

/** A first step that writes a file, then steps that keep asking for more work (a shell command each). */
function greedyTurn(file: string, usage?: Usage): Step[] {
  const write: Step = { toolCalls: [{ name: "write", args: { filePath: file, content: "partial work\n" } }] };
  const more: Step = { toolCalls: [{ name: "bash", args: { command: "echo more", description: "More work" } }] };
  const withUsage = (s: Step): Step => (usage ? { ...s, usage } : s);
  return [withUsage(write), ...Array.from({ length: 40 }, () => withUsage(more))];
}

const start = (body: Record<string, unknown>, key = h.keys.rw) =>
  h.api("POST", `${API}/runs`, { key, body: { repository: "acme/web", validationMode: "minimal", ...body } });

beforeAll(async () => {
  // Side requests (titles) report a small known cost too, so a run's cost stays known.
  h = await serveHarness({ model: { sideUsage: { prompt_tokens: 10, completion_tokens: 5, cost: 0.0001 } } });
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("budgets", { timeout: LOADED.testMs }, () => {
  it("refuses bad limits with 400 invalid_request, on runs, messages and owners", async () => {
    for (const limits of [
      { maxTokens: -5 },
      { maxTokens: 1.5 },
      { maxCostUsd: 0 },
      { maxDurationMs: -1 },
      { onExceeded: "explode" },
      { maxTokens: 10, extra: true },
    ]) {
      const r = await start({ prompt: "x", limits });
      expect(r.status, JSON.stringify(limits)).toBe(400);
      expect(r.json.error.code).toBe("invalid_request");
      expect(r.json.error.message).toMatch(/^limits/);
    }
    const msg = await h.api("POST", `${API}/runs/run_nonexistent/messages`, {
      body: { prompt: "go on", limits: { maxTokens: -1 } },
    });
    expect(msg.status).toBe(400);
    expect(msg.json.error.code).toBe("invalid_request");

    const path = "/api/v1/owners/owner-a/limits";
    const neg = await h.api("PUT", path, { key: h.keys.admin, body: { dailyCostUsd: -1 } });
    expect(neg.status).toBe(400);
    expect(neg.json.error.code).toBe("invalid_request");
    expect((await h.api("PUT", path, { key: h.keys.admin, body: { daily: 1 } })).status).toBe(400);
    // Admin only.
    expect((await h.api("PUT", path, { key: h.keys.rw, body: { dailyCostUsd: 1 } })).status).toBe(403);
    expect((await h.api("GET", path, { key: h.keys.rw })).status).toBe(403);
    const read = await h.api("GET", path, { key: h.keys.admin });
    expect(read.status).toBe(200);
    expect(read.json).toMatchObject({ ownerId: "owner-a", dailyCostUsd: null, spentTodayUsd: expect.any(Number) });
  });

  it("a run that reaches maxTokens ends failed with budget_exceeded and keeps its partial patch", async () => {
    const model = "budget/tokens-fail";
    h.model.script(model, [greedyTurn("partial.txt")]);
    const started = await start({ prompt: "Do a lot of work.", modelId: model, limits: { maxTokens: 500 } });
    expect(started.status).toBe(201);
    expect(started.json.limits).toEqual({ maxTokens: 500 });

    const run = await h.turnOver(started.json.id, { query: "?patch=1" });
    expect(run.status).toBe("failed");
    expect(run.error.code).toBe("budget_exceeded");
    expect(run.error.message).toMatch(/maxTokens 500/);
    expect(run.changedPaths).toEqual(["partial.txt"]);
    expect(run.patch).toContain("+partial work");
    expect(run.usage.inputTokens + run.usage.outputTokens).toBeGreaterThanOrEqual(500);
    // The gateway stopped the loop: the calls made are the ones the limit allowed, plus the
    // one it refused (each completion here is 120 tokens; the agent otherwise asks 41 times).
    const answered = h.model.agentRequests(model).length;
    expect(answered).toBeLessThanOrEqual(5);
    const events = (await h.api("GET", `${API}/runs/${run.id}?events=1`)).json.events as {
      data: { kind?: string; code?: string };
    }[];
    expect(events.some((e) => e.data.kind === "error" && e.data.code === "budget_exceeded")).toBe(true);
  });

  it("with onExceeded pause the run idles with budget_exceeded, and a message raising the limit continues the same session", async () => {
    const model = "budget/tokens-pause";
    h.model.script(model, [greedyTurn("paused.txt"), [{ text: "Finished the rest." }]]);
    const started = await start({
      prompt: "Start the big refactor.",
      modelId: model,
      limits: { maxTokens: 400, onExceeded: "pause" },
    });
    expect(started.status).toBe(201);
    const paused = await h.turnOver(started.json.id, { query: "?patch=1" });
    expect(paused.status).toBe("idle");
    expect(paused.sessionActive).toBe(true);
    expect(paused.error.code).toBe("budget_exceeded");
    expect(paused.error.message).toMatch(/limits\.maxTokens/);
    expect(paused.patch).toContain("+partial work");
    expect(paused.limits).toEqual({ maxTokens: 400, onExceeded: "pause" });
    const before = h.model.agentRequests(model).length;

    // A message that does not raise the limit is stopped at its first model call.
    const again = await h.api("POST", `${API}/runs/${paused.id}/messages`, { body: { prompt: "Try again." } });
    expect(again.status).toBe(202);
    const still = await h.turnOver(paused.id);
    expect(still.status).toBe("idle");
    expect(still.error.code).toBe("budget_exceeded");
    expect(h.model.agentRequests(model).length).toBe(before);

    const sent = await h.api("POST", `${API}/runs/${paused.id}/messages`, {
      body: { prompt: "Go on.", limits: { maxTokens: 100_000 } },
    });
    expect(sent.status).toBe(202);
    expect(sent.json.id).toBe(paused.id);
    const done = await h.turnOver(paused.id, { query: "?patch=1" });
    expect(done.status).toBe("idle");
    expect(done.error).toBeNull();
    expect(done.summary).toBe("Finished the rest.");
    expect(done.limits).toEqual({ maxTokens: 100_000, onExceeded: "pause" });
    expect(done.chainedFrom).toBeNull();
    expect(done.patch).toContain("+partial work");

    // Same OpenCode session: the follow-up's request carries the earlier turn's messages.
    const followUp = h.model.agentRequests(model).slice(before);
    expect(followUp.length).toBeGreaterThan(0);
    const messages = followUp[0]!.body.messages;
    const text = JSON.stringify(messages);
    expect(text).toContain("Start the big refactor.");
    expect(text).toContain("paused.txt");
    expect(messages.filter((m) => m.role === "user").length).toBeGreaterThanOrEqual(2);
    expect(followUp[0]!.lastUser).toContain("Go on.");
  });

  it("a run stops at maxCostUsd counted from the cost the upstream reports", async () => {
    const model = "budget/cost";
    h.model.script(model, [greedyTurn("cost.txt", { prompt_tokens: 10, completion_tokens: 5, cost: 0.02 })]);
    const started = await start({ prompt: "Spend.", modelId: model, limits: { maxCostUsd: 0.05 } });
    expect(started.status).toBe(201);
    const run = await h.turnOver(started.json.id, { query: "?patch=1" });
    expect(run.status).toBe("failed");
    expect(run.error.code).toBe("budget_exceeded");
    expect(run.error.message).toMatch(/maxCostUsd/);
    expect(run.usage.costKnown).toBe(true);
    expect(run.usage.costUsd).toBeGreaterThanOrEqual(0.05);
    expect(run.usage.costUsd).toBeLessThan(0.2);
    expect(run.patch).toContain("+partial work");
  });

  it("a turn still working when the run's time reaches maxDurationMs is stopped, with the same outcome", async () => {
    const model = "budget/slow";
    // The second call never answers: only the time limit ends the turn.
    h.model.script(model, [[greedyTurn("slow.txt")[0]!, { hang: true }]]);
    const started = await start({ prompt: "Take your time.", modelId: model, limits: { maxDurationMs: 15_000 } });
    expect(started.status).toBe(201);
    const run = await h.turnOver(started.json.id, { query: "?patch=1" });
    expect(run.status).toBe("failed");
    expect(run.error.code).toBe("budget_exceeded");
    expect(run.error.message).toMatch(/maxDurationMs 15000/);
    // Timers run on a monotonic clock, durations on the wall clock: allow their skew.
    expect(run.usage.durationMs).toBeGreaterThanOrEqual(14_900);
    expect(run.patch).toContain("+partial work");
  });

  it("an owner's daily cost cap stops its runs and refuses new ones with 402 until raised", async () => {
    const owner = "owner-capped";
    const key = (await h.pb.keys.create({ name: "capped", scopes: ["read:builder", "write:builder"], ownerId: owner }))
      .key;
    const path = `/api/v1/owners/${owner}/limits`;
    const set = await h.api("PUT", path, { key: h.keys.admin, body: { dailyCostUsd: 0.03 } });
    expect(set.status).toBe(200);
    expect(set.json).toMatchObject({ ownerId: owner, dailyCostUsd: 0.03, spentTodayUsd: 0 });

    const model = "budget/daily";
    h.model.script(model, [greedyTurn("daily.txt", { prompt_tokens: 10, completion_tokens: 5, cost: 0.02 })]);
    const started = await start({ prompt: "Spend the day's money.", modelId: model }, key);
    expect(started.status).toBe(201);
    const run = await h.turnOver(started.json.id, { key, query: "?patch=1" });
    expect(run.status).toBe("failed");
    expect(run.error.code).toBe("budget_exceeded");
    expect(run.error.message).toMatch(/daily cost cap/);
    expect(run.patch).toContain("+partial work");

    const spent = await h.api("GET", path, { key: h.keys.admin });
    expect(spent.json.spentTodayUsd).toBeGreaterThanOrEqual(0.03);
    const refused = await start({ prompt: "One more.", modelId: model }, key);
    expect(refused.status).toBe(402);
    expect(refused.json.error.code).toBe("budget_exceeded");
    // Other owners are not held to it.
    expect((await h.api("GET", "/api/v1/owners/owner-a/limits", { key: h.keys.admin })).json.dailyCostUsd).toBeNull();

    const raised = await h.api("PUT", path, { key: h.keys.admin, body: { dailyCostUsd: null } });
    expect(raised.json.dailyCostUsd).toBeNull();
    h.model.script("budget/daily-2", [[{ text: "Small job." }]]);
    const again = await start({ prompt: "Small job.", modelId: "budget/daily-2" }, key);
    expect(again.status).toBe(201);
    expect((await h.turnOver(again.json.id, { key })).status).toBe("idle");
  });
});
