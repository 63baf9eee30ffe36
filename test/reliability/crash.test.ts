/**
 * Crash: a real `patchbay serve` killed with SIGKILL while it holds an idle run (session
 * warm), a running run (the model is mid-request) and a queued run. The next serve on the
 * same data dir loads the store, ends every one of them (idle -> completed, queued/running
 * -> failed with server_restart), kills the OpenCode servers the dead process left, loses
 * and duplicates no event (what a client streamed before the crash is a prefix of the log),
 * and runs the next run normally.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSqliteStore } from "../../src/engine/store/sqlite.ts";
import type { RunRecord } from "../../src/engine/run/schema.ts";
import { tempDir, waitFor } from "../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { pollUntilTurnOver } from "../support/poll.ts";
import { API, follow, opencodeUnder, startServe, type ServeChild } from "../support/serve.ts";

let fx: Fixtures;
const children: ServeChild[] = [];

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        "test/ok": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "notes\n" } }] },
            { text: "Wrote NOTES.md." },
          ],
        ],
        "test/hang": [[{ hang: true }]],
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

describe("kill -9 of patchbay serve", { timeout: LOADED.testMs }, () => {
  it("the next start ends every run it held (completed or failed server_restart), orphans no OpenCode, loses and duplicates no event, and serves the next run", async () => {
    const dataDir = tempDir("data");
    const env = { ...fx.env, PATCHBAY_DATA_DIR: dataDir };
    const a = await startServe(env);
    children.push(a);
    const key = a.adminKey!;
    expect(key).toMatch(/^pb_/);

    // idle: one finished turn, session warm.
    const idle = await a.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "write notes", modelId: "test/ok", validationMode: "minimal" },
    });
    expect(idle.status).toBe(201);
    const idled = await pollUntilTurnOver(() => a.api("GET", `${API}/runs/${idle.json.id}`), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the first run to be idle",
    });
    expect(idled.status).toBe("idle");
    // running: the model holds the request open.
    const seen = fx.model.nextRequest("test/hang");
    const running = await a.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "hang", modelId: "test/hang", validationMode: "minimal" },
    });
    expect(running.status).toBe(201);
    await seen;
    const streams = [follow(a.url, key, idle.json.id), follow(a.url, key, running.json.id)];
    await waitFor(() => streams.every((s) => s.frames().length > 0), { what: "streams to replay" });

    const sandboxes = path.join(dataDir, "sandboxes");
    expect(opencodeUnder(path.join(sandboxes, idle.json.id)).length).toBeGreaterThan(0);
    expect(opencodeUnder(path.join(sandboxes, running.json.id)).length).toBeGreaterThan(0);

    a.proc.kill("SIGKILL");
    await a.exited;
    await Promise.all(streams.map((s) => s.done));
    // OpenCode servers run in their own process group: they outlive a SIGKILL of serve.
    const orphans = opencodeUnder(sandboxes);
    expect(orphans.length).toBeGreaterThan(0);

    // queued: a run accepted just before the kill, before its turn started. The window is
    // microseconds in serve, so the record is written as such a crash leaves it.
    const store = await createSqliteStore({ dataDir });
    const queuedRun = (await store.getRun(running.json.id))!;
    const queued: RunRecord = {
      ...queuedRun,
      id: "run_queuedatcrash",
      status: "queued",
      turnCount: 0,
      baseSha: undefined,
      startedAt: null,
    };
    delete queued.baseSha;
    await store.createRun(queued);
    await store.appendEvent(queued.id, { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } });
    await store.close();

    const b = await startServe(env);
    children.push(b);
    expect(b.adminKey).toBeUndefined(); // the store loaded: its keys are still there
    const get = async (id: string) => (await b.api("GET", `${API}/runs/${id}?events=1`, { key })).json;
    const afterIdle = await get(idle.json.id);
    const afterRunning = await get(running.json.id);
    const afterQueued = await get(queued.id);
    expect(afterIdle.status).toBe("completed");
    expect(afterIdle.changedPaths).toEqual(["NOTES.md"]); // its finished turn's work is kept
    expect(afterRunning.status).toBe("failed");
    expect(afterRunning.error.code).toBe("server_restart");
    expect(afterQueued.status).toBe("failed");
    expect(afterQueued.error.code).toBe("server_restart");

    for (const [i, run] of [afterIdle, afterRunning].entries()) {
      const ids = (run.events as { id: number }[]).map((e) => e.id);
      expect(ids).toEqual(ids.map((_, j) => j + 1)); // 1..n: nothing lost, nothing twice
      // What a client saw live before the crash is exactly the start of the stored log.
      const streamed = streams[i]!.frames().map((f) => JSON.parse(f.data!) as { id: number });
      expect(streamed.length).toBeGreaterThan(0);
      expect(run.events.slice(0, streamed.length)).toEqual(streamed);
      expect(run.events.at(-1).type).toBe("run.status");
    }

    // Those very processes: the new serve's own warm-pool server may already run beside them
    // (b.stop() below checks that nothing at all is left).
    await waitFor(() => orphans.every((pid) => !fs.existsSync(`/proc/${pid}`)), {
      timeoutMs: 60_000,
      what: "the orphaned OpenCode servers to be killed",
    });
    expect(fs.existsSync(path.join(sandboxes, running.json.id))).toBe(false);

    // The server is healthy and runs the next run.
    expect((await b.api("GET", "/readyz")).status).toBe(200);
    const next = await b.api("POST", `${API}/runs`, {
      key,
      body: { repository: "acme/web", prompt: "again", modelId: "test/ok", validationMode: "minimal" },
    });
    expect(next.status).toBe(201);
    const done = await pollUntilTurnOver(() => b.api("GET", `${API}/runs/${next.json.id}`, { key }), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the next run to finish its turn",
    });
    expect(done.status).toBe("idle");
    expect(done.changedPaths).toEqual(["NOTES.md"]);
    await b.stop();
    expect(opencodeUnder(dataDir)).toEqual([]);
  });
});
