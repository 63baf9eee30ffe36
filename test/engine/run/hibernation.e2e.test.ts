/**
 * Hibernation with the real OpenCode on the local sandbox: an idle session stops its OpenCode
 * server after PATCHBAY_HIBERNATE_AFTER_MS and keeps its files and OpenCode's session store;
 * a follow-up starts a new server that continues the same session (the scripted model is
 * sent the earlier turns); a restart keeps hibernated sessions; expiry, endSession and a
 * message racing the hibernation behave as on a warm session.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunView } from "../../../src/engine/index.ts";
import { bwrapWorks, opencodeUnder, waitFor } from "../../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../../support/harness.ts";
import { openTestPatchbay, type TestPatchbay } from "../../support/patchbay.ts";

const OWNER = "owner-1";
const write = (file: string, text: string) => [
  { toolCalls: [{ name: "write", args: { filePath: file, content: `${text}\n` } }] },
  { text: `Wrote ${file}.` },
];

let fx: Fixtures;
const opened: TestPatchbay[] = [];
beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        "test/nap": [write("ONE.md", "one"), write("TWO.md", "two"), write("THREE.md", "three")],
        "test/nap-end": [write("ONE.md", "one")],
        "test/nap-away": [write("ONE.md", "one")],
        "test/nap-race": [write("ONE.md", "one"), write("TWO.md", "two")],
        "test/nap-bwrap-open": [write("ONE.md", "one"), write("TWO.md", "two")],
        "test/nap-bwrap-model-only": [write("ONE.md", "one"), write("TWO.md", "two")],
      },
    },
  });
}, LOADED.hookMs);
afterAll(async () => {
  await Promise.allSettled(opened.map((pb) => pb.close()));
  await fx?.close();
}, LOADED.hookMs);

async function open(env: Record<string, string> = {}): Promise<TestPatchbay> {
  const pb = await openTestPatchbay({ ...fx.env, ...env });
  opened.push(pb);
  return pb;
}

const sandboxOf = (dataDir: string, runId: string) => path.join(dataDir, "sandboxes", runId);
const kinds = (run: RunView) =>
  (run.events ?? []).flatMap((e) => (e.type === "builder.event" ? [e.data.kind as string] : []));

async function untilHibernated(pb: TestPatchbay, runId: string): Promise<RunView> {
  return waitFor(
    async () => {
      const run = await pb.engine.getRun(OWNER, runId);
      return run.hibernated ? run : undefined;
    },
    { timeoutMs: LOADED.turnWaitMs, what: "the session to hibernate" },
  );
}

/** A run on `pb` whose first turn has ended idle. */
async function startIdle(pb: TestPatchbay, modelId: string, network?: "open" | "model-only"): Promise<RunView> {
  const run = await pb.engine.startRun(OWNER, {
    repository: "acme/web",
    prompt: "write one",
    modelId,
    validationMode: "minimal",
    ...(network ? { environment: { network } } : {}),
  });
  const idle = await pb.engine.waitForTurn(OWNER, run.id);
  expect(idle.status).toBe("idle");
  return idle;
}

/** The model's requests for one follow-up turn (not OpenCode's side requests, such as titles). */
function turnRequests(since: number) {
  return fx.model.requests.slice(since).filter((r) => !r.side);
}

describe("hibernation (local, real OpenCode)", { timeout: LOADED.testMs }, () => {
  it("an idle session hibernates with no OpenCode left, wakes on a follow-up with its history, and survives a restart", async () => {
    const a = await open({ PATCHBAY_HIBERNATE_AFTER_MS: "1000" });
    const dataDir = a.dataDir;
    const run = await startIdle(a, "test/nap");

    const napping = await untilHibernated(a, run.id);
    expect(napping).toMatchObject({ status: "idle", sessionActive: true, hibernated: true });
    expect(opencodeUnder(sandboxOf(dataDir, run.id))).toEqual([]);
    expect(fs.readFileSync(path.join(sandboxOf(dataDir, run.id), "repo", "ONE.md"), "utf8")).toBe("one\n");

    // A follow-up wakes it: a new server, the same OpenCode session.
    let seen = fx.model.requests.length;
    const sent = await a.engine.sendMessage(OWNER, run.id, { prompt: "write two" });
    expect(sent.status).toBe("running");
    const second = await a.engine.waitForTurn(OWNER, run.id);
    expect(second).toMatchObject({ status: "idle", hibernated: false, changedPaths: ["ONE.md", "TWO.md"] });
    const followUp = turnRequests(seen);
    expect(JSON.stringify(followUp[0]!.body.messages)).toContain("write one");
    expect(followUp[0]!.lastUser).toContain("write two");
    const events = (await a.engine.getRun(OWNER, run.id, { events: true })).events!;
    const resumed = events.find((e) => e.type === "builder.event" && e.data.kind === "session.resumed");
    expect(resumed?.data).toMatchObject({ kind: "session.resumed", wakeMs: expect.any(Number) });
    expect(kinds({ ...second, events }).filter((k) => k.startsWith("session."))).toEqual([
      "session.hibernated",
      "session.resumed",
    ]);

    // It hibernates again, and a restart keeps it: nothing was running to lose.
    await untilHibernated(a, run.id);
    await a.close();
    expect(fs.existsSync(path.join(sandboxOf(dataDir, run.id), "repo", "TWO.md"))).toBe(true);

    const b = await open({ PATCHBAY_DATA_DIR: dataDir, PATCHBAY_HIBERNATE_AFTER_MS: "0" });
    const back = await b.engine.getRun(OWNER, run.id);
    expect(back).toMatchObject({ status: "idle", sessionActive: true, hibernated: true });
    seen = fx.model.requests.length;
    await b.engine.sendMessage(OWNER, run.id, { prompt: "write three" });
    const third = await b.engine.waitForTurn(OWNER, run.id);
    expect(third).toMatchObject({ status: "idle", changedPaths: ["ONE.md", "THREE.md", "TWO.md"] });
    const history = JSON.stringify(turnRequests(seen)[0]!.body.messages);
    expect(history).toContain("write one");
    expect(history).toContain("write two");
    expect(opencodeUnder(sandboxOf(dataDir, run.id))).toHaveLength(1);

    const ended = await b.engine.endSession(OWNER, run.id);
    expect(ended.status).toBe("completed");
    expect(opencodeUnder(sandboxOf(dataDir, run.id))).toEqual([]);
    expect(fs.existsSync(sandboxOf(dataDir, run.id))).toBe(false);
  });

  it("a hibernated session whose sandbox is not on this machine (another replica's) ends completed at the start, its work kept", async () => {
    const a = await open({ PATCHBAY_HIBERNATE_AFTER_MS: "1000" });
    const dataDir = a.dataDir;
    const run = await startIdle(a, "test/nap-away");
    await untilHibernated(a, run.id);
    await a.close();
    // What a replica on another machine finds: the run in the store, its sandbox in no data dir of its own.
    fs.renameSync(sandboxOf(dataDir, run.id), path.join(dataDir, "elsewhere"));

    const b = await open({ PATCHBAY_DATA_DIR: dataDir, PATCHBAY_HIBERNATE_AFTER_MS: "0" });
    const back = await b.engine.getRun(OWNER, run.id);
    expect(back).toMatchObject({ status: "completed", sessionActive: false, changedPaths: ["ONE.md"] });
    expect(await b.store.getSecret(run.id, "hibernation")).toBeUndefined();
  });

  it("endSession and expiry end a hibernated session and delete what it kept", async () => {
    const pb = await open({ PATCHBAY_HIBERNATE_AFTER_MS: "0" });
    const one = await startIdle(pb, "test/nap-end");
    expect(await pb.engine.hibernate(OWNER, one.id)).toMatchObject({ status: "idle", hibernated: true });
    const ended = await pb.engine.endSession(OWNER, one.id);
    expect(ended).toMatchObject({ status: "completed", hibernated: false, changedPaths: ["ONE.md"] });
    expect(fs.existsSync(sandboxOf(pb.dataDir, one.id))).toBe(false);

    // Expiry: a second Patchbay whose sessions expire 12 s after a turn (time enough to hibernate on a loaded machine).
    const short = await open({ PATCHBAY_HIBERNATE_AFTER_MS: "0", PATCHBAY_SESSION_TTL_MS: "12000" });
    const two = await startIdle(short, "test/nap-end");
    expect(await short.engine.hibernate(OWNER, two.id)).toMatchObject({ status: "idle", hibernated: true });
    const expired = await waitFor(
      async () => {
        const r = await short.engine.getRun(OWNER, two.id);
        return r.status === "completed" ? r : undefined;
      },
      { timeoutMs: LOADED.turnWaitMs, what: "the hibernated session to expire" },
    );
    expect(expired.changedPaths).toEqual(["ONE.md"]);
    await waitFor(() => !fs.existsSync(sandboxOf(short.dataDir, two.id)), { what: "the kept sandbox to go" });
  });

  it("a message that arrives as hibernation starts waits for it and then wakes the session", async () => {
    const pb = await open({ PATCHBAY_HIBERNATE_AFTER_MS: "0" });
    const run = await startIdle(pb, "test/nap-race");
    const seen = fx.model.requests.length;
    const napping = pb.engine.hibernate(OWNER, run.id);
    await new Promise((r) => setImmediate(r)); // the hibernation holds the run now
    const sent = await pb.engine.sendMessage(OWNER, run.id, { prompt: "write two" });
    expect(sent.status).toBe("running");
    await napping;
    const done = await pb.engine.waitForTurn(OWNER, run.id);
    expect(done).toMatchObject({ status: "idle", error: null, changedPaths: ["ONE.md", "TWO.md"] });
    expect(JSON.stringify(turnRequests(seen)[0]!.body.messages)).toContain("write one");
    const all = await pb.engine.getRun(OWNER, run.id, { events: true });
    expect(kinds(all).filter((k) => k.startsWith("session."))).toEqual(["session.hibernated", "session.resumed"]);
    expect(opencodeUnder(sandboxOf(pb.dataDir, run.id))).toHaveLength(1);
    await pb.engine.endSession(OWNER, run.id);
  });

  it.skipIf(!bwrapWorks())(
    "bwrap: a session from the warm pool and a model-only one hibernate and wake with their history",
    async () => {
      const pb = await open({ PATCHBAY_SANDBOX: "bwrap", PATCHBAY_WARM_POOL_SIZE: "1" });
      await pb.sessions.warmPool!.ready();
      // open: taken from the pool (its directory renamed after the run); model-only: cold, its network bridged.
      for (const network of ["open", "model-only"] as const) {
        const run = await startIdle(pb, `test/nap-bwrap-${network}`, network);
        expect(await pb.engine.hibernate(OWNER, run.id)).toMatchObject({ status: "idle", hibernated: true });
        expect(fs.readdirSync(path.join(pb.dataDir, "sandboxes")).filter((d) => d === run.id)).toEqual([run.id]);
        const seen = fx.model.requests.length;
        await pb.engine.sendMessage(OWNER, run.id, { prompt: "write two" });
        const done = await pb.engine.waitForTurn(OWNER, run.id);
        expect(done).toMatchObject({ status: "idle", error: null, changedPaths: ["ONE.md", "TWO.md"] });
        expect(JSON.stringify(turnRequests(seen)[0]!.body.messages)).toContain("write one");
        expect((await pb.engine.endSession(OWNER, run.id)).status).toBe("completed");
        expect(fs.existsSync(sandboxOf(pb.dataDir, run.id))).toBe(false);
      }
    },
  );
});
