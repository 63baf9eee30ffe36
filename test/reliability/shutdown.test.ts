/**
 * Graceful shutdown of `patchbay serve` on SIGTERM: readiness turns 503 and new runs and
 * turns are refused with 503 shutting_down while the turns in flight drain; a turn that
 * finishes within PATCHBAY_SHUTDOWN_GRACE_MS ends normally (idle, its patch ready), one that
 * does not is stopped at the deadline and checkpointed (failed shutting_down, with the work
 * it had as its patch); then every OpenCode process is gone and the process exits 0.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSqliteStore } from "../../src/engine/store/sqlite.ts";
import { tempDir, waitFor } from "../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { API, follow, opencodeUnder, startServe, type ServeChild } from "../support/serve.ts";

let fx: Fixtures;
const children: ServeChild[] = [];
// Long enough that the slow turn (its last answer 2.5 s after its first) ends inside it on a
// loaded machine; the checks below are relative to it.
const GRACE_MS = 15_000;

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        // Finishes about 2.5 s after its first request: inside the grace period.
        "test/slow": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "SLOW.md", content: "slow\n" } }] },
            { text: "Wrote SLOW.md.", delayMs: 2500 },
          ],
        ],
        // Writes a file, then never answers again: still running at the deadline.
        "test/stuck": [
          [{ toolCalls: [{ name: "write", args: { filePath: "PARTIAL.md", content: "partial\n" } }] }, { hang: true }],
        ],
      },
    },
  });
}, LOADED.hookMs);

afterAll(async () => {
  for (const c of children) {
    // SIGTERM first (SIGKILL after 30 s): a killed serve would leave its OpenCode servers behind.
    await c.stop();
  }
  await fx?.close();
}, LOADED.hookMs);

describe("SIGTERM drains patchbay serve", { timeout: LOADED.testMs }, () => {
  it("refuses new work with 503 while in-flight turns finish or are checkpointed at the deadline, then stops every process", async () => {
    const dataDir = tempDir("data");
    const s = await startServe({
      ...fx.env,
      PATCHBAY_DATA_DIR: dataDir,
      PATCHBAY_SHUTDOWN_GRACE_MS: String(GRACE_MS),
    });
    children.push(s);
    const key = s.adminKey!;
    const start = (modelId: string) =>
      s.api("POST", `${API}/runs`, {
        body: { repository: "acme/web", prompt: "go", modelId, validationMode: "minimal" },
      });
    const stuckAsked = fx.model.nextRequest("test/stuck");
    const stuck = (await start("test/stuck")).json;
    // The stuck run's second request is the one that hangs: its file is written by then.
    await stuckAsked;
    await waitFor(() => fx.model.agentRequests("test/stuck").length >= 2, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the stuck turn",
    });
    const slowAsked = fx.model.nextRequest("test/slow");
    const slow = (await start("test/slow")).json;
    await slowAsked;
    const slowStream = follow(s.url, key, slow.id);

    const t0 = Date.now();
    s.proc.kill("SIGTERM");
    await waitFor(async () => (await s.api("GET", "/readyz")).status === 503, { what: "readyz to turn 503" });
    expect((await s.api("GET", "/healthz")).status).toBe(200);
    const refused = await start("test/slow");
    expect(refused.status).toBe(503);
    expect(refused.json.error.code).toBe("shutting_down");

    const { code } = await s.exited;
    const took = Date.now() - t0;
    expect(code).toBe(0);
    expect(took).toBeGreaterThanOrEqual(GRACE_MS - 500); // it waited for the stuck turn...
    expect(took).toBeLessThan(GRACE_MS + 15_000); // ...but not much past the deadline
    await slowStream.done;
    // A client following the slow run saw its turn end before the server went away.
    const statuses = slowStream
      .frames()
      .filter((f) => f.event === "run.status")
      .map((f) => (JSON.parse(f.data!) as { data: { status: string } }).data.status);
    expect(statuses.at(-1)).toBe("idle");
    expect(opencodeUnder(dataDir)).toEqual([]);

    const store = await createSqliteStore({ dataDir });
    try {
      const slowRun = (await store.getRun(slow.id))!;
      expect(slowRun.status).toBe("idle");
      expect(slowRun.changedPaths).toEqual(["SLOW.md"]);
      const stuckRun = (await store.getRun(stuck.id))!;
      expect(stuckRun.status).toBe("failed");
      expect(stuckRun.error?.code).toBe("shutting_down");
      // Checkpointed: the work done before the deadline is kept as the run's patch.
      expect(stuckRun.changedPaths).toEqual(["PARTIAL.md"]);
      expect(await store.getPatch(stuck.id)).toContain("+partial");
    } finally {
      await store.close();
    }
  });
});
