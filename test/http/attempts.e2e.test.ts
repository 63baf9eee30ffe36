/**
 * Attempts over HTTP with the real OpenCode and the scripted model: `attempts: 3` starts three
 * sibling runs of one group; the repository's own check (`.patchbay.json`, `test -f ok.txt`)
 * passes in only one, because the model answers each OpenCode session differently; the group
 * ranks that one best (then the smaller diff), and with `publish` only the best publishes.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RecordedRequest, Step } from "../fixtures/scripted-model.ts";
import { LOADED, WEB_FILES } from "../support/harness.ts";
import { API, serveHarness, type HttpHarness } from "../support/http.ts";
import { pollHttp } from "../support/poll.ts";

let h: HttpHarness;

const TRIES_FILES: Record<string, string> = {
  "README.md": "# Tries\n",
  // `basic` runs the check; `tests` runs it and the test (and one repair turn when they fail).
  ".patchbay.json": JSON.stringify({ validation: { check: ["test -f ok.txt"], test: ["test -f ok.txt"] } }) + "\n",
};

/**
 * The first OpenCode session to ask writes ok.txt (3 lines: the check passes, the diff is the
 * largest); the second writes a 1-line nope.txt, the third a 2-line one (both fail the check).
 */
function scriptSiblings(model: string): void {
  const roles = new Map<string, number>();
  const role = (r: RecordedRequest) => {
    const session = String(r.headers["x-session-id"]);
    if (!roles.has(session)) roles.set(session, roles.size);
    return roles.get(session)!;
  };
  const write = (r: RecordedRequest): Step => {
    const i = role(r);
    const [filePath, content] = i === 0 ? ["ok.txt", "one\ntwo\nthree\n"] : ["nope.txt", i === 1 ? "x\n" : "x\ny\n"];
    return { toolCalls: [{ name: "write", args: { filePath, content } }] };
  };
  h.model.script(model, [[{ respond: write }, { text: "Done." }]]);
}

async function settledGroup(id: string) {
  return pollHttp(
    () => h.api("GET", `${API}/groups/${id}`),
    (g) => (g.status === "settled" ? g : undefined),
    { timeoutMs: LOADED.turnWaitMs * 2, what: `group ${id} to settle` },
  );
}

const endAll = async (ids: string[]) => {
  for (const id of ids) await h.api("POST", `${API}/runs/${id}/messages`, { body: { endSession: true } });
};

beforeAll(async () => {
  h = await serveHarness({
    repos: { "acme/web": WEB_FILES, "acme/tries": TRIES_FILES },
    github: {
      repositories: [
        { id: 1, fullName: "acme/web" },
        { id: 2, fullName: "acme/tries" },
      ],
      tokens: ["ghp_http_test_token"],
    },
    env: { PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "4" },
  });
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("attempts", { timeout: LOADED.testMs }, () => {
  it("attempts out of range are refused with 400", async () => {
    for (const attempts of [0, 5, 1.5, "3"]) {
      const r = await h.api("POST", `${API}/runs`, { body: { repository: "acme/tries", prompt: "x", attempts } });
      expect(r.status, String(attempts)).toBe(400);
      expect(r.text).toContain("attempts");
    }
    // A group publishes only its ranked best: with nothing to rank by, publishing is refused.
    const minimal = await h.api("POST", `${API}/runs`, {
      body: {
        repository: "acme/tries",
        prompt: "x",
        attempts: 2,
        validationMode: "minimal",
        publish: { mode: "draft_pr" },
      },
    });
    expect(minimal.status).toBe(400);
    const planned = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/tries", prompt: "x", attempts: 2, requirePlanApproval: true },
    });
    expect(planned.status).toBe(400);
    expect((await h.api("GET", `${API}/runs`)).json.runs).toEqual([]);
  });

  let first: string[] = [];
  it("three siblings are ranked by the repository's check, then diff size, and the group names the one that passed", async () => {
    const model = "acme/attempts-rank";
    scriptSiblings(model);
    const started = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/tries", prompt: "Make the check pass", modelId: model, attempts: 3 },
    });
    expect(started.status).toBe(201);
    expect(started.json.group).toMatchObject({ attempt: 1, attempts: 3 });
    const groupId = started.json.group.id as string;
    expect(groupId).toMatch(/^grp_/);

    const group = await settledGroup(groupId);
    first = group.runs.map((r: { id: string }) => r.id);
    expect(group.attempts).toBe(3);
    expect(group.runs.map((r: { attempt: number }) => r.attempt)).toEqual([1, 2, 3]);
    expect(first[0]).toBe(started.json.id);
    const runs = await Promise.all(
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      first.map(async (id) => (await h.api("GET", `${API}/runs/${id}`)).json as Record<string, any>),
    );
    for (const [i, run] of runs.entries()) {
      expect(run.status).toBe("idle");
      expect(run.group).toEqual({ id: groupId, attempt: i + 1, attempts: 3 });
    }
    const passing = runs.filter((r) => r.changedPaths.includes("ok.txt"));
    expect(passing).toHaveLength(1);
    expect(passing[0]!.validation.status).toBe("passed");
    expect(group.bestRunId).toBe(passing[0]!.id);

    // Validation first (the passing run has the largest diff), then the smaller diff.
    const byRank = [...group.runs].sort((a: { rank: number }, b: { rank: number }) => a.rank - b.rank);
    expect(byRank.map((r: { validation: string }) => r.validation)).toEqual(["passed", "failed", "failed"]);
    expect(byRank.map((r: { diffSize: number }) => r.diffSize)).toEqual([3, 1, 2]);
    expect(byRank[0].id).toBe(group.bestRunId);
  });

  it("a group that does not fit under the active-run cap is refused whole", async () => {
    // Three siblings are idle (active) and the cap is 4: two more do not fit, one would.
    const r = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/tries", prompt: "x", attempts: 2 },
    });
    expect(r.status).toBe(429);
    expect(r.json.error.code).toBe("too_many_active_runs");
    expect((await h.api("GET", `${API}/runs`)).json.runs).toHaveLength(3);
    await endAll(first);
  });

  it("with publish asked (validationMode tests), only the best sibling publishes, once the group is ranked", async () => {
    const model = "acme/attempts-publish";
    scriptSiblings(model);
    const started = await h.api("POST", `${API}/runs`, {
      body: {
        repository: "acme/tries",
        prompt: "Make the check pass and publish",
        modelId: model,
        attempts: 3,
        validationMode: "tests",
        publish: { mode: "draft_pr" },
      },
    });
    expect(started.status).toBe(201);
    const group = await settledGroup(started.json.group.id);
    const best = group.bestRunId as string;
    expect(best).toBeTruthy();
    const published = await pollHttp(
      () => h.api("GET", `${API}/runs/${best}`),
      (run) => (run.publish.status !== undefined ? run : undefined),
      { timeoutMs: LOADED.turnWaitMs, what: `run ${best} to publish` },
    );
    expect(published.publish.status).toBe("published");
    expect(published.validation).toMatchObject({ mode: "tests", status: "passed" });
    expect(group.validationMode).toBe("tests");
    expect(published.draftPullRequest).toMatchObject({ branch: `patchbay/${best}` });
    expect(published.changedPaths).toEqual(["ok.txt"]);
    const pulls = h.github!.pulls.get("acme/tries") ?? [];
    expect(pulls.map((p) => p.head)).toEqual([`patchbay/${best}`]);
    for (const sibling of group.runs.filter((r: { id: string }) => r.id !== best)) {
      const run = (await h.api("GET", `${API}/runs/${sibling.id}`)).json;
      expect(run.draftPullRequest).toBeNull();
      expect(run.publish.status).toBeUndefined();
    }
    await endAll(group.runs.map((r: { id: string }) => r.id));
  });
});
