/**
 * Two real `patchbay serve` replicas with PATCHBAY_SANDBOX=e2b on one Postgres database,
 * behind the round-robin proxy, each with a model gateway of its own (its own public URL, as
 * each replica's gateway sits behind a route of its own). E2B is the stand-in of
 * test/fixtures/e2b-cloud.ts (test/fixtures/serve-e2b.ts serves with it): its VMs run real
 * processes here and outlive the replica that made them, as E2B's do.
 *
 * One run's life across replica deaths: kill -9 of the replica running its first turn, and
 * another takes the run over and reattaches to the VM (the turn ends server_restart, its work
 * kept, the session warm); a follow-up runs there in the same OpenCode session; the session
 * hibernates (the VM paused); that replica dies too, a replacement keeps the paused VM and the
 * next follow-up resumes it, the same session again. Every event id 1..n, once.
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { e2bCloud, type E2bCloud } from "../fixtures/e2b-cloud.ts";
import { freeLoopbackPort } from "../../src/engine/sandbox/process.ts";
import { tempDir, waitFor } from "../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { parseSse } from "../support/http.ts";
import { pollUntilTurnOver } from "../support/poll.ts";
import { API, follow, startServe } from "../support/serve.ts";
import { startCluster, type Cluster } from "./cluster.ts";

let fx: Fixtures;
let cluster: Cluster;
let cloud: E2bCloud;
const MODEL = "test/e2b-replicas";
/** Each replica's gateway URL, by replica index. */
const gateways: string[] = [];

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        [MODEL]: [
          // Turn 1 writes a file, then the model hangs: its replica is killed meanwhile.
          [{ toolCalls: [{ name: "write", args: { filePath: "WIP.md", content: "wip\n" } }] }, { hang: true }],
          [
            { toolCalls: [{ name: "write", args: { filePath: "MORE.md", content: "more\n" } }] },
            { text: "Wrote MORE." },
          ],
          [
            { toolCalls: [{ name: "write", args: { filePath: "THIRD.md", content: "third\n" } }] },
            { text: "Wrote THIRD." },
          ],
        ],
      },
    },
  });
  const cloudDir = tempDir("e2b-cloud");
  cloud = e2bCloud(cloudDir);
  cluster = await startCluster({
    count: 2,
    env: async (i) => {
      const port = await freeLoopbackPort();
      gateways[i] = `http://127.0.0.1:${port}`;
      return {
        ...fx.env,
        PATCHBAY_SANDBOX: "e2b",
        E2B_API_KEY: "e2b_test_key",
        PATCHBAY_TEST_E2B_CLOUD: cloudDir,
        PATCHBAY_GATEWAY_PORT: String(port),
        PATCHBAY_PUBLIC_GATEWAY_URL: gateways[i]!,
        // Short enough for a quick takeover; a loaded machine's stall of a few seconds must still not look dead.
        PATCHBAY_LEASE_MS: "6000",
        // Idle sessions hibernate soon (no turn is idle here before the test wants it to hibernate).
        PATCHBAY_HIBERNATE_AFTER_MS: "1000",
        PATCHBAY_DEFAULT_MODEL: MODEL,
      };
    },
    start: (env) => startServe(env, ["--import", "tsx", "test/fixtures/serve-e2b.ts"]),
  });
}, LOADED.hookMs);

afterAll(async () => {
  await cluster?.close();
  // VMs a failed test left: their processes must not outlive the suite.
  for (const id of cloud?.alive().keys() ?? []) await cloud.sdk.kill(id, { apiKey: "e2b_test_key" });
  await fx?.close();
}, LOADED.hookMs);

/** The gateway URL an OpenCode server in a VM calls (its config, in its environment). */
function gatewayOf(pid: number): string {
  const env = fs.readFileSync(`/proc/${pid}/environ`, "utf8");
  const found = gateways.find((g) => env.includes(`${g}/v1`));
  if (!found) throw new Error(`server ${pid} calls none of the replicas' gateways`);
  return found;
}

/** The model's agent-loop requests for MODEL from the `seen`-th on. */
const requestsSince = (seen: number) => fx.model.agentRequests(MODEL).slice(seen);

describe("e2b replicas: sessions survive their replica", { timeout: LOADED.testMs }, () => {
  it("kill -9 mid-turn: another replica reattaches the VM, a follow-up continues the session there; a paused session whose replica dies is resumed by a replacement", async () => {
    const { replicas, lb, key, viaLb } = cluster;
    const started = await viaLb("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "write wip", modelId: MODEL, validationMode: "minimal" },
    });
    expect(started.status).toBe(201);
    const id = started.json.id as string;
    await waitFor(() => fx.model.agentRequests(MODEL).length >= 2, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the first turn to reach its hanging model request",
    });
    const a = await cluster.replicaIndexOf(id);
    const b = 1 - a;
    const [vm] = [...cloud.alive().keys()];
    const [firstServer] = cloud.processes(vm!);
    expect(gatewayOf(firstServer!)).toBe(gateways[a]);
    const watcher = follow(replicas[b]!.url, key, id);
    await waitFor(() => watcher.frames().length >= 2, { what: "the stream to replay on the other replica" });

    // A dies mid-turn; its VM (and the OpenCode server in it) runs on, as E2B's would.
    replicas[a]!.proc.kill("SIGKILL");
    lb.drop(a);
    const settled = await waitFor(
      async () => {
        const run = (await replicas[b]!.api("GET", `${API}/runs/${id}?events=1`, { key })).json;
        return run.status === "idle" ? run : undefined;
      },
      { timeoutMs: LOADED.turnWaitMs, what: "the other replica to take the run over" },
    );
    expect(settled.error).toMatchObject({ code: "server_restart" });
    expect(settled.sessionActive).toBe(true);
    expect(settled.changedPaths).toEqual(["WIP.md"]);
    expect(JSON.stringify(settled.events)).toContain("reattached to this run's sandbox and agent session");
    expect(await cluster.replicaIndexOf(id)).toBe(b);
    // The same VM; its server called A's gateway, so B runs one of its own on the same OpenCode store.
    expect([...cloud.alive().keys()]).toEqual([vm]);
    const [secondServer] = cloud.processes(vm!);
    expect(secondServer).not.toBe(firstServer);
    expect(gatewayOf(secondServer!)).toBe(gateways[b]);

    // A follow-up through the proxy runs on B, in the same OpenCode session.
    let seen = fx.model.agentRequests(MODEL).length;
    const more = await viaLb("POST", `${API}/runs/${id}/messages`, { body: { prompt: "write more" } });
    expect(more.status).toBe(202);
    const second = await pollUntilTurnOver(() => viaLb("GET", `${API}/runs/${id}`), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the follow-up on the replica that took the run over",
    });
    expect(second).toMatchObject({ status: "idle", error: null, summary: "Wrote MORE." });
    expect(second.changedPaths).toEqual(["MORE.md", "WIP.md"]);
    const history = requestsSince(seen)[0]!;
    expect(JSON.stringify(history.body.messages)).toContain("write wip");
    expect(history.lastUser).toContain("write more");

    // Idle, it hibernates: the VM is paused with B's server in its memory.
    await waitFor(async () => (await viaLb("GET", `${API}/runs/${id}`)).json.hibernated === true, {
      timeoutMs: LOADED.turnWaitMs,
      what: "the session to hibernate",
    });
    expect(cloud.paused(vm!)).toBe(true);
    watcher.stop();
    await watcher.done;

    // A replacement joins; B dies. The replacement keeps the paused VM as it is until a message.
    const c = await cluster.add();
    replicas[b]!.proc.kill("SIGKILL");
    lb.drop(b);
    await waitFor(() => replicas[c]!.stderr().includes("kept a hibernated session across the restart"), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the replacement to take the hibernated run over",
    });
    expect(await cluster.replicaIndexOf(id)).toBe(c);
    expect((await viaLb("GET", `${API}/runs/${id}`)).json).toMatchObject({ status: "idle", hibernated: true });
    expect(cloud.paused(vm!)).toBe(true);

    // The next follow-up resumes the VM on the replacement, the same session again.
    seen = fx.model.agentRequests(MODEL).length;
    expect((await viaLb("POST", `${API}/runs/${id}/messages`, { body: { prompt: "write third" } })).status).toBe(202);
    const third = await pollUntilTurnOver(() => viaLb("GET", `${API}/runs/${id}`), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the follow-up that resumes the paused VM",
    });
    expect(third).toMatchObject({ status: "idle", hibernated: false, error: null, summary: "Wrote THIRD." });
    expect(third.changedPaths).toEqual(["MORE.md", "THIRD.md", "WIP.md"]);
    expect(cloud.paused(vm!)).toBe(false);
    expect(JSON.stringify(requestsSince(seen)[0]!.body.messages)).toContain("write more");
    expect(gatewayOf(cloud.processes(vm!)[0]!)).toBe(gateways[c]);

    const ended = await viaLb("POST", `${API}/runs/${id}/messages`, { body: { endSession: true } });
    expect(ended.json.status).toBe("completed");
    expect(cloud.alive().size).toBe(0);

    // Every event once, in order, read through the proxy from the start; what the watcher on B
    // saw live across A's death is the log's beginning.
    const res = await fetch(`${lb.url}${API}/runs/${id}/stream`, { headers: { authorization: `Bearer ${key}` } });
    const ids = parseSse(await res.text())
      .filter((f) => f.id !== undefined)
      .map((f) => Number(f.id));
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1));
    const log = ((await viaLb("GET", `${API}/runs/${id}?events=1`)).json.events as { id: number }[]).map((e) => e.id);
    expect(ids).toEqual(log);
    const live = watcher.frames().map((f) => Number(f.id));
    expect(live).toEqual(log.slice(0, live.length));
    const kinds = JSON.stringify((await viaLb("GET", `${API}/runs/${id}?events=1`)).json.events);
    for (const kind of ["session.hibernated", "session.resumed"]) expect(kinds).toContain(kind);
  });
});
