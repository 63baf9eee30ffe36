/**
 * Plan approval over HTTP with the real OpenCode and the scripted model: a plan turn is
 * offered no writing tools, and a message with `taskKind: code` continues the same OpenCode
 * session (the model sees the plan turn) with writing tools on. `requirePlanApproval` makes
 * a code run's first turn a plan turn that a `taskKind: code` message approves.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RecordedRequest } from "../fixtures/scripted-model.ts";
import { LOADED } from "../support/harness.ts";
import { API, serveHarness, type HttpHarness } from "../support/http.ts";

let h: HttpHarness;

const toolNames = (r: RecordedRequest) =>
  ((r.body.tools ?? []) as { function?: { name?: string } }[]).map((t) => t.function?.name ?? "");
const transcript = (r: RecordedRequest) => JSON.stringify(r.body.messages);

/** A plan turn that tries to write anyway, then answers with its plan; a code turn that writes. */
function planThenCode(model: string, file: string) {
  h.model.script(model, [
    [
      { toolCalls: [{ name: "write", args: { filePath: "sneaky.txt", content: "written during the plan\n" } }] },
      { text: `PLAN-${model}: create ${file} with a greeting.` },
    ],
    [
      { toolCalls: [{ name: "write", args: { filePath: file, content: "hello from the code turn\n" } }] },
      { text: `Created ${file}.` },
    ],
  ]);
}

beforeAll(async () => {
  h = await serveHarness();
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("plan approval", { timeout: LOADED.testMs }, () => {
  it("a plan run's follow-up with taskKind code continues the same session with writing tools on", async () => {
    const model = "acme/planner";
    planThenCode(model, "hello.txt");
    const started = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "Plan a greeting file", modelId: model, taskKind: "plan" },
    });
    expect(started.status).toBe(201);
    expect(started.json.taskKind).toBe("plan");
    expect(started.json.planApproval).toBeNull();
    const planned = await h.turnOver(started.json.id, { query: "?patch=1" });
    expect(planned.status).toBe("idle");
    expect(planned.summary).toContain(`PLAN-${model}`);
    // The plan turn could not write: the tool was not offered, and nothing changed.
    expect(planned.changedPaths).toEqual([]);
    const planRequests = h.model.agentRequests(model);
    expect(planRequests.length).toBeGreaterThan(0);
    for (const r of planRequests) {
      expect(toolNames(r)).not.toContain("write");
      expect(toolNames(r)).not.toContain("edit");
      expect(toolNames(r)).not.toContain("bash");
    }

    const go = await h.api("POST", `${API}/runs/${planned.id}/messages`, {
      body: { prompt: "Go ahead", taskKind: "code" },
    });
    expect(go.status).toBe(202);
    expect(go.json.id).toBe(planned.id); // the same run, not a chained one
    expect(go.json.taskKind).toBe("code");
    const done = await h.turnOver(planned.id, { query: "?patch=1" });
    expect(done.status).toBe("idle");
    expect(done.error).toBeNull();
    expect(done.changedPaths).toEqual(["hello.txt"]);
    expect(done.patch).toContain("+hello from the code turn");
    expect(done.patch).not.toContain("sneaky");

    const codeRequests = h.model.agentRequests(model).slice(planRequests.length);
    expect(codeRequests.length).toBeGreaterThan(0);
    expect(toolNames(codeRequests[0]!)).toContain("write");
    // One OpenCode session: the code turn's request carries the plan turn's prompt and answer.
    expect(transcript(codeRequests[0]!)).toContain("Plan a greeting file");
    expect(transcript(codeRequests[0]!)).toContain(`PLAN-${model}`);
    expect(codeRequests[0]!.headers["x-session-id"]).toBe(planRequests[0]!.headers["x-session-id"]);

    // Each turn's kind is recorded.
    const turns = await h.pb.store.listTurns(planned.id);
    expect(turns.map((t) => t.taskKind)).toEqual(["plan", "code"]);
  });

  it("requirePlanApproval makes a code run's first turn a plan turn, approved by a taskKind code message", async () => {
    const model = "acme/approver";
    planThenCode(model, "approved.txt");
    const started = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "Add approved.txt", modelId: model, requirePlanApproval: true },
    });
    expect(started.status).toBe(201);
    expect(started.json.taskKind).toBe("plan");
    expect(started.json.planApproval).toBe("pending");
    const planned = await h.turnOver(started.json.id);
    expect(planned.status).toBe("idle");
    expect(planned.planApproval).toBe("pending");
    expect(planned.changedPaths).toEqual([]);
    expect(planned.validation).toBeNull(); // a plan turn is not validated
    for (const r of h.model.agentRequests(model)) expect(toolNames(r)).not.toContain("write");

    const go = await h.api("POST", `${API}/runs/${planned.id}/messages`, {
      body: { prompt: "Approved, go ahead", taskKind: "code" },
    });
    expect(go.status).toBe(202);
    expect(go.json.planApproval).toBe("approved");
    const done = await h.turnOver(planned.id, { query: "?patch=1" });
    expect(done.status).toBe("idle");
    expect(done.taskKind).toBe("code");
    expect(done.planApproval).toBe("approved");
    expect(done.changedPaths).toEqual(["approved.txt"]);
    const turns = await h.pb.store.listTurns(planned.id);
    expect(turns.map((t) => t.taskKind)).toEqual(["plan", "code"]);
  });

  it("requirePlanApproval on a plan run is refused with 400", async () => {
    const r = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "x", taskKind: "plan", requirePlanApproval: true },
    });
    expect(r.status).toBe(400);
    expect(r.json.error?.code ?? r.json.code).toBeTruthy();
    expect(r.text).toContain("requirePlanApproval");
  });
});
