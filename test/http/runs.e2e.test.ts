/**
 * The run routes end to end over real HTTP on 127.0.0.1: the real engine, the real OpenCode
 * in the local sandbox, the scripted model and a local git repository. One Patchbay for the
 * file; the tests run in order and reuse runs where that stays honest.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import { promisify } from "node:util";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunView } from "../../src/engine/index.ts";
import { waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { sandboxPids, serveHarness, type HttpHarness } from "../support/http.ts";
import { pollUntilTurnOver } from "../support/poll.ts";

const run$ = promisify(execFile);
let h: HttpHarness;
const API = "/api/v1/coding-agent";

/** Poll as the reference says (`GET /runs/{id}?patch=1`), backing off as a client would, until the turn is over. */
async function pollUntilSettled(id: string, key?: string): Promise<RunView> {
  return pollUntilTurnOver(
    async () => {
      const r = await h.api("GET", `${API}/runs/${id}?patch=1`, key ? { key } : {});
      expect(r.status).toBe(200);
      return r;
    },
    { timeoutMs: LOADED.turnWaitMs, what: `run ${id} to settle` },
  );
}

const opencodePids = (runId: string) =>
  sandboxPids(h.pb.dataDir, runId).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("opencode");
    } catch {
      return false; // exited while we looked
    }
  });

beforeAll(async () => {
  h = await serveHarness();
  h.model.script("anthropic/claude-sonnet-4.6", [
    [
      {
        toolCalls: [
          { name: "write", args: { filePath: "webhook.js", content: "export const verify = () => true;\n" } },
        ],
      },
      { text: "Added webhook verification." },
    ],
    [
      { toolCalls: [{ name: "write", args: { filePath: "webhook.test.js", content: "// expired signatures\n" } }] },
      { text: "Added a regression test.", chunkDelayMs: 20 },
    ],
  ]);
  h.model.script("openai/gpt-5.4", [[{ text: "Migrated." }]]);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("runs over HTTP", { timeout: LOADED.testMs }, () => {
  let runA: RunView;

  it("the reference's managed-billing curl example, replayed verbatim, starts a run that settles idle with every field", async () => {
    const { stdout } = await run$("curl", [
      `${h.base}/api/v1/coding-agent/runs`,
      "-H",
      `Authorization: Bearer ${h.keys.rw}`,
      "-H",
      "Content-Type: application/json",
      "-d",
      `{
    "repository": "acme/web",
    "prompt": "Add Stripe webhook signature verification and tests.",
    "modelId": "anthropic/claude-sonnet-4.6",
    "billing": { "mode": "managed" },
    "publish": { "mode": "draft_pr" },
    "validationMode": "tests"
  }`,
    ]);
    const started = JSON.parse(stdout) as RunView;
    expect(started.status).toBe("running");
    expect(started.turnCount).toBe(1);
    // GitHub's id, as the number GitHub gives (the server has a GitHub token here).
    expect(started.repository).toEqual({ fullName: "acme/web", owner: "acme", name: "web", id: 1 });
    expect(started.modelId).toBe("anthropic/claude-sonnet-4.6");
    expect(started.validationMode).toBe("tests");
    expect(started.publish.mode).toBe("draft_pr");
    expect(started.billing).toEqual({ mode: "managed" });
    expect(started.usage).toEqual({ inputTokens: 0, outputTokens: 0 });

    runA = await pollUntilSettled(started.id);
    expect(runA.error).toBeNull();
    expect(runA.status).toBe("idle");
    expect(runA.sessionActive).toBe(true);
    expect(Date.parse(runA.sessionExpiresAt!)).toBeGreaterThan(Date.now());
    expect(runA.summary).toBe("Added webhook verification.");
    expect(runA.changedPaths).toEqual(["webhook.js"]);
    expect(runA.diffStats).toEqual({ files: 1, additions: 1, deletions: 0 });
    expect(runA.patch).toContain("+export const verify = () => true;");
    expect(runA.usage.inputTokens).toBeGreaterThan(0);
    expect(runA.usage.outputTokens).toBeGreaterThan(0);
    expect(runA.baseSha).toMatch(/^[0-9a-f]{40}$/);
    expect(runA.validation).toMatchObject({ mode: "tests" });
    for (const f of ["createdAt", "updatedAt", "startedAt"] as const) expect(Date.parse(runA[f]!)).toBeGreaterThan(0);
    expect(runA.finishedAt).toBeNull();
    expect(runA.events).toBeUndefined();

    const withEvents = await h.api("GET", `${API}/runs/${runA.id}?events=1`);
    const events = withEvents.json.events as { id: number; type: string; data: { status?: string } }[];
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => i + 1));
    expect(events.filter((e) => e.type === "run.status").map((e) => e.data.status)).toEqual([
      "queued",
      "running",
      "idle",
    ]);
    expect(withEvents.json.patch).toBeUndefined();
  });

  it("the reference's follow-up curl continues the same session (202, same id, same OpenCode process) while a live stream sees every event once", async () => {
    const pidsBefore = opencodePids(runA.id);
    expect(pidsBefore.length).toBeGreaterThan(0);
    const lastBefore = ((await h.api("GET", `${API}/runs/${runA.id}?events=1`)).json.events as unknown[]).length;
    // Subscribe first, then send: the stream must carry the whole second turn, in order.
    const stream = h.sse(`${API}/runs/${runA.id}/stream?after=${lastBefore}`, {
      until: (frames) => frames.some((f) => f.event === "run.status" && JSON.parse(f.data!).data.status === "idle"),
    });
    await new Promise((r) => setTimeout(r, 200));
    const { stdout } = await run$("curl", [
      "-s",
      "-w",
      "\n%{http_code}",
      `${h.base}/api/v1/coding-agent/runs/${runA.id}/messages`,
      "-H",
      `Authorization: Bearer ${h.keys.rw}`,
      "-H",
      "Content-Type: application/json",
      "-d",
      `{
    "prompt": "Add a regression test for expired signatures.",
    "publish": { "mode": "draft_pr" }
  }`,
    ]);
    const [body, code] = [stdout.slice(0, stdout.lastIndexOf("\n")), stdout.slice(stdout.lastIndexOf("\n") + 1)];
    expect(code).toBe("202");
    const continued = JSON.parse(body) as RunView;
    expect(continued.id).toBe(runA.id);
    expect(continued.status).toBe("running");
    expect(continued.turnCount).toBe(2);
    expect(continued.chainedFrom).toBeNull();

    const s = await stream;
    expect(s.status).toBe(200);
    expect(s.headers.get("content-type")).toContain("text/event-stream");
    expect(s.headers.get("x-accel-buffering")).toBe("no");
    expect(s.frames[0]!.retry).toMatch(/^\d+$/);
    const ids = s.frames.filter((f) => f.id).map((f) => Number(f.id));
    expect(ids[0]).toBe(lastBefore + 1);
    expect(ids).toEqual(ids.map((_, i) => lastBefore + 1 + i));
    for (const f of s.frames.filter((x) => x.id)) {
      const ev = JSON.parse(f.data!);
      expect(ev.id).toBe(Number(f.id));
      expect(f.event).toBe(ev.type);
      expect(["builder.event", "run.status"]).toContain(f.event);
    }

    const after = await pollUntilSettled(runA.id);
    expect(after.status).toBe("idle");
    expect(after.turnCount).toBe(2);
    expect(after.summary).toBe("Added a regression test.");
    expect(after.changedPaths).toEqual(["webhook.js", "webhook.test.js"]);
    // The same OpenCode server answered (it may have started helpers of its own meanwhile).
    expect(opencodePids(runA.id)).toEqual(expect.arrayContaining(pidsBefore));
    const last = h.model.agentRequests("anthropic/claude-sonnet-4.6").at(-1)!;
    expect(last.body.messages.filter((m) => m.role === "user")).toHaveLength(2);
  });

  it("an idle run's stream sends heartbeats, and an event id past the end answers 400 event_not_found", async () => {
    const fast = await h.extraApp({}, { sse: { heartbeatMs: 50 } });
    const res = await fetch(`${fast}${API}/runs/${runA.id}/stream?after=1`, {
      headers: { authorization: `Bearer ${h.keys.rw}` },
    });
    const reader = res.body!.getReader();
    let raw = "";
    while (!raw.includes(": keepalive")) raw += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    const bad = await h.api("GET", `${API}/runs/${runA.id}/stream?after=999999`);
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe("event_not_found");
    const badHeader = await h.api("GET", `${API}/runs/${runA.id}/stream`, { headers: { "last-event-id": "999999" } });
    expect(badHeader.json.error.code).toBe("event_not_found");
  });

  it("endSession answers 200 with the completed run and stops its OpenCode process", async () => {
    const pids = opencodePids(runA.id);
    const r = await h.api("POST", `${API}/runs/${runA.id}/messages`, { body: { endSession: true } });
    expect(r.status).toBe(200);
    expect(r.json.status).toBe("completed");
    expect(r.json.sessionActive).toBe(false);
    expect(r.json.finishedAt).not.toBeNull();
    await waitFor(() => opencodePids(runA.id).length === 0, { what: "opencode to stop" });
    for (const pid of pids) expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
    expect((await h.api("GET", `${API}/runs/${runA.id}?patch=1`)).json.patch).toContain("webhook.test.js");
  });

  it("SSE resumes from 20 random cut points (?after= and Last-Event-ID) with exactly the remaining events, a finished run's stream closes, and at its end answers 204", async () => {
    const all = (await h.api("GET", `${API}/runs/${runA.id}?events=1`)).json.events as { id: number }[];
    const last = all.length;
    expect(last).toBeGreaterThan(8);
    const cuts = fc.sample(fc.integer({ min: 0, max: last }), { numRuns: 20, seed: 42 });
    expect(cuts).toHaveLength(20);
    for (const [i, cut] of cuts.entries()) {
      const s = await h.sse(
        `${API}/runs/${runA.id}/stream${i % 2 ? `?after=${cut}` : ""}`,
        i % 2 ? {} : { headers: { "last-event-id": String(cut) } },
      );
      expect(s.closedByServer).toBe(true);
      expect(s.status).toBe(cut === last ? 204 : 200);
      const ids = s.frames.filter((f) => f.id).map((f) => Number(f.id));
      expect(ids).toEqual(all.slice(cut).map((e) => e.id));
      expect(s.frames.filter((f) => f.data).map((f) => JSON.parse(f.data!))).toEqual(all.slice(cut));
    }
    // Last-Event-ID wins over the ?after= an EventSource keeps in its URL.
    const both = await h.sse(`${API}/runs/${runA.id}/stream?after=1`, {
      headers: { "last-event-id": String(last - 1) },
    });
    expect(both.frames.filter((f) => f.id).map((f) => Number(f.id))).toEqual([last]);
    // At its last event a finished run has nothing more to say: 204 stops an EventSource's reconnects.
    const reconnect = await fetch(`${h.base}${API}/runs/${runA.id}/stream?after=1`, {
      headers: { authorization: `Bearer ${h.keys.rw}`, "last-event-id": String(last), accept: "text/event-stream" },
    });
    expect(reconnect.status).toBe(204);
    expect(await reconnect.text()).toBe("");
  });

  it("a message to a finished run starts a chained run (201, new id, chainedFrom, Location) with the prior patch applied", async () => {
    // The chained run keeps the prior run's model, whose first-turn script answers again.
    const r = await h.api("POST", `${API}/runs/${runA.id}/messages`, { body: { prompt: "One more thing." } });
    expect(r.status).toBe(201);
    const chained = r.json as RunView;
    expect(chained.id).not.toBe(runA.id);
    expect(chained.chainedFrom).toBe(runA.id);
    expect(r.headers.get("location")).toBe(`${API}/runs/${chained.id}`);
    const done = await pollUntilSettled(chained.id);
    expect(done.status).toBe("idle");
    expect(done.changedPaths).toEqual(expect.arrayContaining(["webhook.js", "webhook.test.js"]));
    const lastReq = h.model.agentRequests("anthropic/claude-sonnet-4.6").at(-1)!;
    expect(lastReq.lastUser).toContain("Add Stripe webhook signature verification");
    expect(lastReq.lastUser).toContain("One more thing.");
    expect(
      (await h.api("POST", `${API}/runs/${chained.id}/messages`, { body: { endSession: true } })).json.status,
    ).toBe("completed");
  });

  it("the reference's OpenRouter-billing curl example starts a run whose key reaches the model and never comes back", async () => {
    const { stdout } = await run$("curl", [
      `${h.base}/api/v1/coding-agent/runs`,
      "-H",
      `Authorization: Bearer ${h.keys.rw}`,
      "-H",
      "Content-Type: application/json",
      "-d",
      `{
    "repository": "acme/web",
    "prompt": "Migrate the settings page to server actions.",
    "modelId": "openai/gpt-5.4",
    "billing": {
      "mode": "openrouter",
      "openRouterApiKey": "sk-or-v1-..."
    },
    "publish": {
      "mode": "draft_pr",
      "branch": "critique-agent/settings-server-actions"
    }
  }`,
    ]);
    expect(stdout).not.toContain("sk-or-v1-...");
    const started = JSON.parse(stdout) as RunView;
    expect(started.billing).toEqual({ mode: "openrouter" });
    expect(started.publish).toMatchObject({ mode: "draft_pr", branch: "critique-agent/settings-server-actions" });
    const done = await pollUntilSettled(started.id);
    expect(done.status).toBe("idle");
    expect(done.summary).toBe("Migrated.");
    for (const req of h.model.agentRequests("openai/gpt-5.4")) expect(req.authorization).toBe("Bearer sk-or-v1-...");
    const ended = await h.api("POST", `${API}/runs/${started.id}/messages`, { body: { endSession: true } });
    expect(ended.status).toBe(200);
    expect(h.transcript.join("\n")).not.toContain("sk-or-v1-...");
  });

  it("a busy run answers 409 with Retry-After; Idempotency-Key returns the same run; cancel stops the OpenCode process before it answers", async () => {
    h.model.script("test/slow", [[{ hang: true }]]);
    const body = { repository: "acme/web", prompt: "slow work", modelId: "test/slow" };
    // Listen before the run starts: on a loaded machine the request may come before we look.
    const slowAsked = h.model.nextRequest("test/slow");
    const first = await h.api("POST", `${API}/runs`, { body, headers: { "idempotency-key": "idem-1" } });
    expect(first.status).toBe(201);
    expect(first.headers.get("location")).toBe(`${API}/runs/${first.json.id}`);
    const again = await h.api("POST", `${API}/runs`, { body, headers: { "idempotency-key": "idem-1" } });
    expect(again.status).toBe(201);
    expect(again.json.id).toBe(first.json.id);
    expect(again.headers.get("idempotency-replayed")).toBe("true");
    const conflict = await h.api("POST", `${API}/runs`, {
      body: { ...body, prompt: "other" },
      headers: { "idempotency-key": "idem-1" },
    });
    expect(conflict.status).toBe(409);
    expect(conflict.json.error.code).toBe("idempotency_conflict");
    // Another owner's identical request is its own run (keys are per owner) — not made here: it would start one more OpenCode.

    const id = first.json.id as string;
    await waitFor(() => opencodePids(id).length > 0, { what: "opencode to start", timeoutMs: LOADED.turnWaitMs });
    await slowAsked;
    const busy = await h.api("POST", `${API}/runs/${id}/messages`, { body: { prompt: "are you done?" } });
    expect(busy.status).toBe(409);
    expect(busy.json.error.code).toBe("session_busy");
    expect(Number(busy.headers.get("retry-after"))).toBeGreaterThan(0);

    const pids = opencodePids(id);
    const cancelled = await h.api("POST", `${API}/runs/${id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.json.status).toBe("cancelled");
    expect(opencodePids(id)).toEqual([]);
    for (const pid of pids) expect(fs.existsSync(`/proc/${pid}`)).toBe(false);
    // Cancelling again answers the finished run unchanged.
    expect((await h.api("POST", `${API}/runs/${id}/cancel`, { body: {} })).json.status).toBe("cancelled");
  });

  it("lists the owner's runs newest first with a cursor, and another owner sees none of them", async () => {
    const page1 = await h.api("GET", `${API}/runs?limit=2`);
    expect(page1.status).toBe(200);
    expect(page1.json.runs).toHaveLength(2);
    expect(typeof page1.json.nextCursor).toBe("string");
    const page2 = await h.api("GET", `${API}/runs?limit=100&cursor=${encodeURIComponent(page1.json.nextCursor)}`);
    const all = [...page1.json.runs, ...page2.json.runs] as RunView[];
    expect(all).toHaveLength(4);
    expect(new Set(all.map((r) => r.id)).size).toBe(4);
    const created = all.map((r) => Date.parse(r.createdAt));
    expect(created).toEqual([...created].sort((a, b) => b - a));
    expect(page2.json.nextCursor).toBeNull();
    expect((await h.api("GET", `${API}/runs`, { key: h.keys.other })).json.runs).toEqual([]);
    const models = await h.api("GET", `${API}/models`);
    expect(models.json).toEqual({ defaultModel: "anthropic/claude-sonnet-4.6", models: [], textOnlyModels: [] });
  });

  it("a follow-up naming only publish.branch keeps the draft PR moving: a message's publish merges into the run's, live or chained", async () => {
    // Each turn writes a file named after its prompt, so every turn has changes to publish.
    const writeStep = {
      respond: (req: { lastUser: string }) => ({
        toolCalls: [{ name: "write", args: { filePath: `turn-${req.lastUser.length}.txt`, content: "x\n" } }],
      }),
    };
    h.model.script("test/publish-merge", [
      [writeStep, { text: "Wrote a file." }],
      [writeStep, { text: "Wrote another." }],
    ]);
    const created = await h.api("POST", `${API}/runs`, {
      body: {
        repository: "acme/web",
        prompt: "first",
        modelId: "test/publish-merge",
        publish: { mode: "draft_pr", branch: "patchbay/merge-first" },
      },
    });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    const first = await pollUntilSettled(id);
    expect(first.draftPullRequest).toMatchObject({ branch: "patchbay/merge-first" });

    const followUp = await h.api("POST", `${API}/runs/${id}/messages`, {
      body: { prompt: "second turn", publish: { branch: "patchbay/merge-second" } },
    });
    expect(followUp.status).toBe(202);
    expect(followUp.json.publish).toMatchObject({ mode: "draft_pr", branch: "patchbay/merge-second" });
    const second = await pollUntilSettled(id);
    expect(second.publish.mode).toBe("draft_pr");
    expect(second.draftPullRequest).toMatchObject({ branch: "patchbay/merge-second" });
    expect(second.draftPullRequest!.headSha).not.toBe(first.draftPullRequest!.headSha);

    expect((await h.api("POST", `${API}/runs/${id}/messages`, { body: { endSession: true } })).status).toBe(200);
    const chained = await h.api("POST", `${API}/runs/${id}/messages`, {
      body: { prompt: "third, chained", publish: { branch: "patchbay/merge-third" } },
    });
    expect(chained.status).toBe(201);
    expect(chained.json.publish).toMatchObject({ mode: "draft_pr", branch: "patchbay/merge-third" });
    const third = await pollUntilSettled(chained.json.id);
    expect(third.draftPullRequest).toMatchObject({ branch: "patchbay/merge-third" });
    const heads = (h.github!.pulls.get("acme/web") ?? []).map((p) => p.head);
    expect(heads).toEqual(expect.arrayContaining(["patchbay/merge-second", "patchbay/merge-third"]));
    await h.api("POST", `${API}/runs/${chained.json.id}/messages`, { body: { endSession: true } });
  });
});
