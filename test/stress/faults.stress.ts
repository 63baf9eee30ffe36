/**
 * Faults, each injected for real: the model answers 500 or 429, stalls mid-stream or sends
 * malformed SSE; the OpenCode server is killed mid-turn; the clone fails; the disk refuses a
 * write. Every one ends its turn `failed` with a clear error.code within the turn timeout,
 * the server stays healthy, and the next run works.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { opencodeUnder, waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { API, sandboxPids, serveHarness, type HttpHarness } from "../support/http.ts";

// Long enough for OpenCode's retry backoff on a 500 (2 s, 4 s), and for a normal turn, on a
// loaded 2-core machine; the stalled turn waits it out.
const TURN_TIMEOUT_MS = 60_000;
let h: HttpHarness;

const ok = [
  [{ toolCalls: [{ name: "write", args: { filePath: "OK.md", content: "ok\n" } }] }, { text: "Wrote OK.md." }],
];

beforeAll(async () => {
  h = await serveHarness({
    env: {
      PATCHBAY_TURN_TIMEOUT_MS: String(TURN_TIMEOUT_MS),
      PATCHBAY_WATCHDOG_MS: "2000",
      PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "20",
    },
  });
  h.model.script("test/ok", ok);
  h.model.script("test/500", [[{ error: { status: 500, message: "upstream exploded" } }]]);
  h.model.script("test/429", [[{ error: { status: 429, message: "slow down", headers: { "retry-after": "1" } } }]]);
  h.model.script("test/stall", [[{ stallAfter: "I will now" }]]);
  h.model.script("test/malformed", [[{ malformed: true }]]);
  h.model.script("test/hang", [[{ hang: true }]]);
}, LOADED.hookMs);
afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

async function start(modelId: string): Promise<string> {
  const res = await h.api("POST", `${API}/runs`, {
    body: { repository: "acme/web", prompt: "do it", modelId, validationMode: "minimal" },
  });
  expect(res.status, JSON.stringify(res.json)).toBe(201);
  return res.json.id as string;
}

/** The run once its turn has ended (polled as a client would; a timeout error shows the last answer). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const settled = (id: string): Promise<any> => h.turnOver(id, { timeoutMs: TURN_TIMEOUT_MS + 60_000 });

const opencodeOf = (runId: string) => opencodeUnder(path.join(h.pb.dataDir, "sandboxes", runId));

async function healthy(): Promise<void> {
  expect((await h.api("GET", "/healthz", { key: null })).status).toBe(200);
  expect((await h.api("GET", "/readyz", { key: null })).status).toBe(200);
}

describe("faults", { timeout: LOADED.testMs }, () => {
  it("model 500/429, a mid-stream stall, malformed SSE and an OpenCode crash each fail the turn with a clear code in time", async () => {
    const t0 = Date.now();
    const crashAsked = h.model.nextRequest("test/hang");
    const ids = {
      m500: await start("test/500"),
      m429: await start("test/429"),
      stall: await start("test/stall"),
      malformed: await start("test/malformed"),
      crash: await start("test/hang"),
    };
    await crashAsked;
    const pids = opencodeOf(ids.crash);
    expect(pids.length).toBeGreaterThan(0);
    for (const pid of pids) process.kill(pid, "SIGKILL");

    const runs = Object.fromEntries(
      await Promise.all(Object.entries(ids).map(async ([k, id]) => [k, await settled(id)] as const)),
    );
    const codes = Object.fromEntries(Object.entries(runs).map(([k, r]) => [k, `${r.status} ${r.error?.code}`]));
    expect(codes).toEqual({
      m500: "failed model_error",
      m429: "failed model_error",
      stall: "failed turn_timeout",
      malformed: "failed model_error",
      crash: "failed agent_crashed",
    });
    expect(runs.m500.error.message).toContain("upstream exploded");
    expect(runs.m429.error.message).toContain("slow down");
    for (const r of Object.values(runs)) expect(r.error.message.length).toBeGreaterThan(10);
    expect(Date.now() - t0).toBeLessThan(TURN_TIMEOUT_MS + 30_000);
    for (const id of Object.values(ids)) {
      await waitFor(() => sandboxPids(h.pb.dataDir, id).length === 0, { what: `run ${id}'s processes to stop` });
    }
    await healthy();
    const next = await settled(await start("test/ok"));
    expect(next.status).toBe("idle");
    expect(next.changedPaths).toEqual(["OK.md"]);
    await h.api("POST", `${API}/runs/${next.id}/messages`, { body: { endSession: true } });
  });

  it("a clone that fails ends the turn failed with clone_failed (and an unknown repository is refused up front), and the next run works", async () => {
    const unknown = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/does-not-exist", prompt: "x", modelId: "test/ok" },
    });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.code).toBe("repository_not_found");
    // The repository exists for GitHub, but its git server fails (here: the bare repo is gone).
    const bare = path.join(new URL(h.pb.config.gitBaseUrl).pathname, "acme/web.git");
    fs.renameSync(bare, `${bare}.aside`);
    let id: string;
    try {
      id = await start("test/ok");
      const run = await settled(id);
      expect(`${run.status} ${run.error?.code}`).toBe("failed clone_failed");
      expect(run.error.message.length).toBeGreaterThan(10);
      await healthy();
    } finally {
      fs.renameSync(`${bare}.aside`, bare);
    }
    expect(sandboxPids(h.pb.dataDir, id!)).toEqual([]);
    const next = await settled(await start("test/ok"));
    expect(next.status).toBe("idle");
    await h.api("POST", `${API}/runs/${next.id}/messages`, { body: { endSession: true } });
  });

  it("a disk that refuses writes fails the turn with a clear code, and the next run works once it is back", async () => {
    const patches = path.join(h.pb.dataDir, "patches");
    const restore = breakWrites(patches);
    let id: string;
    try {
      id = await start("test/ok");
      const run = await settled(id);
      expect(run.status).toBe("failed");
      expect(run.error.code).toBe("storage_failed");
      expect(run.error.message).toMatch(/ENOSPC|ENOTDIR|EROFS|no space|not a directory/i);
      await healthy();
    } finally {
      restore();
    }
    await waitFor(() => sandboxPids(h.pb.dataDir, id!).length === 0, { what: "the failed run's processes to stop" });
    const next = await settled(await start("test/ok"));
    expect(next.status).toBe("idle");
    expect(next.changedPaths).toEqual(["OK.md"]);
    await h.api("POST", `${API}/runs/${next.id}/messages`, { body: { endSession: true } });
  });
});

/**
 * Make writes under `dir` fail: a full 64 KB tmpfs mounted over it where mounting is allowed
 * (ENOSPC, a real full disk), else the directory replaced by a file (ENOTDIR). Permission bits
 * would not do: tests may run as root. Returns the undo.
 */
function breakWrites(dir: string): () => void {
  const aside = `${dir}.aside`;
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir], { stdio: "pipe" });
    // Fill it: writes (or their fsync) now fail with ENOSPC.
    try {
      fs.writeFileSync(path.join(dir, "filler"), Buffer.alloc(64 * 1024));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
    }
    return () => execFileSync("umount", ["-l", dir], { stdio: "pipe" });
  } catch (e) {
    if (!(e instanceof Error) || !("status" in e)) throw e;
    // No mount permission here (a normal user or a locked-down container).
    fs.renameSync(dir, aside);
    fs.writeFileSync(dir, "");
    return () => {
      fs.rmSync(dir);
      fs.renameSync(aside, dir);
    };
  }
}
