/**
 * Setup and its cache through the whole engine, on `local` and `bwrap` (where it runs): real
 * repositories, the real `opencode serve`, the scripted model driving real `bash` calls.
 *
 * The repository's setup writes a marker holding a random value, then sleeps. A second run on
 * the same key gets the first run's marker back (restored, setup not run); a run that deletes
 * the restored paths leaves the next run's copy whole; a changed key file runs setup again;
 * a failing setup ends the run `setup_failed` with its output, and a follow-up chains as for
 * any failed run, keeping the environment.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import type { RunEvent } from "../../../src/engine/events/schema.ts";
import { createLogger, openPatchbay, type Patchbay } from "../../../src/engine/index.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import { freeLoopbackPort } from "../../../src/engine/sandbox/process.ts";
import { e2bCloud } from "../../fixtures/e2b-cloud.ts";
import { tempDir } from "../../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../../support/harness.ts";
import { openTestPatchbay, type TestPatchbay } from "../../support/patchbay.ts";

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));
const OWNER = "env-owner";

const REPO = {
  "README.md": "# env\n",
  "deps.lock": "lock v1\n",
  "setup.sh": [
    "mkdir -p deps",
    "od -An -N8 -tx8 /dev/urandom | tr -d ' ' > deps/marker.txt",
    'echo "installed $(cat deps/marker.txt)"',
    "sleep 1",
    "",
  ].join("\n"),
  ".patchbay.json": JSON.stringify({
    setup: { commands: ["sh setup.sh"], cache: { key: ["deps.lock"], paths: ["deps"] } },
    // The tests mode's checks see what setup installed.
    validation: { test: ["test -s deps/marker.txt"] },
  }),
};

let fx: Fixtures;
beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/env": REPO },
    branches: { "acme/env": { bumped: { "deps.lock": "lock v2\n" } } },
  });
}, LOADED.hookMs);
afterAll(async () => {
  await fx?.close();
}, LOADED.hookMs);

type Builder<K extends string> = Extract<RunEvent, { type: "builder.event" }>["data"] & { kind: K };
const builder = <K extends string>(events: RunEvent[], kind: K): Builder<K>[] =>
  events.flatMap((e) => (e.type === "builder.event" && e.data.kind === kind ? [e.data as Builder<K>] : []));
/** What the agent's `bash` calls printed. */
const bashOutputs = (events: RunEvent[]) =>
  builder(events, "tool").flatMap((t) => (t.tool === "bash" && t.status === "completed" ? [t.output ?? ""] : []));

for (const sandbox of ["local", "bwrap"] as const) {
  describe
    .skipIf(sandbox === "bwrap" && !hasBwrap)
    .sequential(`setup and its cache: ${sandbox}`, { timeout: LOADED.testMs }, () => {
      let pb: TestPatchbay;
      beforeAll(async () => {
        pb = await openTestPatchbay({ ...fx.env, PATCHBAY_SANDBOX: sandbox });
      }, LOADED.hookMs);
      afterAll(async () => {
        await pb?.close();
      }, LOADED.hookMs);

      /** A run whose agent makes one bash call, then answers. */
      async function runWithBash(name: string, command: string, extra: Record<string, unknown> = {}) {
        const modelId = `env/${sandbox}/${name}`;
        fx.model.script(modelId, [
          [{ toolCalls: [{ name: "bash", args: { command, description: name } }] }, { text: "done" }],
        ]);
        const started = await pb.engine.startRun(OWNER, { repository: "acme/env", prompt: name, modelId, ...extra });
        const run = await pb.engine.waitForTurn(OWNER, started.id);
        const events = await pb.engine.events(OWNER, run.id, 0);
        return { run, events, bash: bashOutputs(events) };
      }
      const markerOf = (bash: string[]) => /^[0-9a-f]{16}$/m.exec(bash[0] ?? "")?.[0];

      let first: { marker: string; key: string };

      it("the first run sets up before the agent's first step; the agent's shell and the tests see it; nothing of it is in the patch", async () => {
        const { run, events, bash } = await runWithBash("first", "cat deps/marker.txt && echo note > NOTE.md", {
          validationMode: "tests",
        });
        expect(run.error).toBeNull();
        expect(run.status).toBe("idle");
        expect(run.setup).toMatchObject({ status: "succeeded", cached: false });
        expect(run.setup!.key).toMatch(/^[0-9a-f]{40}$/);
        const marker = markerOf(bash)!;
        expect(marker).toBeDefined();
        expect(run.setup!.outputTail).toContain(`installed ${marker}`);
        expect(builder(events, "setup.started")).toEqual([{ kind: "setup.started", commands: ["sh setup.sh"] }]);
        expect(builder(events, "setup.cached")).toEqual([]);
        expect(builder(events, "setup.finished")).toEqual([
          { kind: "setup.finished", status: "succeeded", durationMs: expect.any(Number), exitCode: 0 },
        ]);
        // Setup finished before the agent's first step.
        const at = (pred: (e: RunEvent) => boolean) => events.findIndex(pred);
        expect(at((e) => e.type === "builder.event" && e.data.kind === "setup.finished")).toBeLessThan(
          at((e) => e.type === "builder.event" && e.data.kind === "step"),
        );
        expect(run.changedPaths).toEqual(["NOTE.md"]);
        expect(run.validation?.status).toBe("passed");
        expect(run.validation?.commands.map((c) => c.command)).toEqual([
          expect.stringMatching(/^git apply --check/),
          "test -s deps/marker.txt",
        ]);
        first = { marker, key: run.setup!.key! };
      });

      it("a second run on the same key restores the layer instead of running setup, and deleting it there leaves the next copy whole", async () => {
        const second = await runWithBash("second", "cat deps/marker.txt && rm -rf deps && ls");
        expect(second.run.error).toBeNull();
        expect(second.run.setup).toMatchObject({ status: "cached", cached: true, key: first.key, outputTail: "" });
        expect(markerOf(second.bash)).toBe(first.marker);
        expect(builder(second.events, "setup.cached")).toEqual([{ kind: "setup.cached", key: first.key }]);
        expect(builder(second.events, "setup.finished")).toMatchObject([{ status: "cached", exitCode: 0 }]);
        expect(second.run.changedPaths).toEqual([]);

        const third = await runWithBash("third", "cat deps/marker.txt");
        expect(third.run.setup).toMatchObject({ status: "cached", key: first.key });
        expect(markerOf(third.bash)).toBe(first.marker);
      });

      it("a changed key file runs setup again under a new key", async () => {
        const { run, bash } = await runWithBash("bumped", "cat deps/marker.txt", { baseRef: "bumped" });
        expect(run.setup).toMatchObject({ status: "succeeded", cached: false });
        expect(run.setup!.key).not.toBe(first.key);
        expect(markerOf(bash)).not.toBe(first.marker);
        const layers = fs.readdirSync(path.join(pb.dataDir, "cache", "env")).sort();
        expect(layers).toEqual([`${first.key}.tar`, `${run.setup!.key}.tar`].sort());
      });

      it("a cancel during a long setup stops it: the run ends cancelled without waiting for the install", async () => {
        // Setup runs beside the agent's start, before the session is the run's: the cancel must reach it there.
        const environment = { setup: { commands: ["echo long-install; sleep 3000"] } };
        const modelId = `env/${sandbox}/cancelled`;
        const started = await pb.engine.startRun(OWNER, { repository: "acme/env", prompt: "x", modelId, environment });
        for await (const e of await pb.engine.follow(OWNER, started.id, { after: 0 })) {
          if (e.type === "builder.event" && e.data.kind === "setup.started") break;
        }
        await pb.engine.cancel(OWNER, started.id);
        // Were the install left running, this would wait for its 3000 s (and the test time out).
        const run = await pb.engine.waitForTurn(OWNER, started.id);
        expect(run.status).toBe("cancelled");
        expect(fx.model.agentRequests(modelId)).toEqual([]);
      });

      it("a failing setup ends the run setup_failed with its output; a follow-up chains and keeps the environment", async () => {
        const environment = { setup: { commands: ["echo preparing", "echo boom-$((6*7)) >&2; exit 3", "echo never"] } };
        const modelId = `env/${sandbox}/failing`;
        const started = await pb.engine.startRun(OWNER, { repository: "acme/env", prompt: "x", modelId, environment });
        const run = await pb.engine.waitForTurn(OWNER, started.id);
        expect(run.status).toBe("failed");
        expect(run.error?.code).toBe("setup_failed");
        expect(run.setup).toMatchObject({ status: "failed", cached: false, key: null });
        expect(run.setup!.outputTail).toContain("preparing");
        expect(run.setup!.outputTail).toContain("boom-42");
        expect(run.setup!.outputTail).not.toContain("never");
        const events = await pb.engine.events(OWNER, run.id, 0);
        expect(builder(events, "setup.finished")).toMatchObject([{ status: "failed", exitCode: 3 }]);
        expect(fx.model.agentRequests(modelId)).toEqual([]);

        const chained = await pb.engine.sendMessage(OWNER, run.id, { prompt: "try again" });
        expect(chained.chainedFrom).toBe(run.id);
        const after = await pb.engine.waitForTurn(OWNER, chained.id);
        expect(after.error?.code).toBe("setup_failed");
        expect(after.setup!.outputTail).toContain("boom-42");
      });
    });
}

describe("setup and its cache: e2b (the E2B stand-in)", { timeout: LOADED.testMs }, () => {
  let pb: Patchbay;
  let cloud: ReturnType<typeof e2bCloud>;
  beforeAll(async () => {
    const gatewayPort = await freeLoopbackPort();
    const config = loadConfig({
      ...fx.env,
      PATH: process.env.PATH,
      PATCHBAY_DATA_DIR: tempDir("data"),
      PATCHBAY_GATEWAY_PORT: String(gatewayPort),
      PATCHBAY_PUBLIC_GATEWAY_URL: `http://127.0.0.1:${gatewayPort}`,
    });
    cloud = e2bCloud(tempDir("e2b-cloud"), { hosts: "loopback" });
    pb = await openPatchbay(config, {
      log: createLogger({ level: "silent" }),
      sandboxes: createE2bProvider({
        apiKey: "e2b_test_key",
        publicGatewayUrl: config.publicGatewayUrl!,
        sessionTtlMs: config.sessionTtlMs,
        turnTimeoutMs: config.turnTimeoutMs,
        sdk: cloud.sdk,
      }),
    });
  }, LOADED.hookMs);
  afterAll(async () => {
    await pb?.close();
    for (const id of cloud?.alive().keys() ?? []) await cloud.sdk.kill(id, { apiKey: "k" });
  }, LOADED.hookMs);

  it("the layer is an E2B snapshot taken after setup: the next VM starts in it, nothing is copied, and each run's copy is its own", async () => {
    const run = async (name: string, command: string, extra: Record<string, unknown> = {}) => {
      const modelId = `env/e2b/${name}`;
      fx.model.script(modelId, [
        [{ toolCalls: [{ name: "bash", args: { command, description: name } }] }, { text: "ok" }],
      ]);
      const from = cloud.calls.length;
      const started = await pb.engine.startRun(OWNER, { repository: "acme/env", prompt: name, modelId, ...extra });
      const done = await pb.engine.waitForTurn(OWNER, started.id);
      await pb.engine.endSession(OWNER, done.id);
      return {
        run: done,
        bash: bashOutputs(await pb.engine.events(OWNER, done.id, 0)),
        calls: cloud.calls.slice(from),
      };
    };
    const op = (calls: typeof cloud.calls, name: string) => calls.filter((c) => c.op === name);
    const first = await run("first", "cat deps/marker.txt");
    expect(first.run.error).toBeNull();
    expect(first.run.setup).toMatchObject({ status: "succeeded", cached: false });
    const snapshots = op(first.calls, "createSnapshot");
    expect(snapshots).toHaveLength(1);
    const snapshotId = (snapshots[0]!.args as { snapshotId: string }).snapshotId;
    // Taken before the agent started: no OpenCode server was running in the VM to be kept.
    const at = (calls: typeof cloud.calls, pred: (c: (typeof cloud.calls)[number]) => boolean) => calls.findIndex(pred);
    const serve = (c: (typeof cloud.calls)[number]) => c.op === "run" && /opencode.*serve/.test(JSON.stringify(c.args));
    expect(at(first.calls, (c) => c.op === "createSnapshot")).toBeLessThan(at(first.calls, serve));

    // The second run deletes its restored copy; the third still gets the whole layer.
    const second = await run("second", "cat deps/marker.txt && rm -rf deps");
    expect(second.run.setup).toMatchObject({ status: "cached", cached: true, key: first.run.setup!.key });
    expect(op(second.calls, "create")[0]!.args).toMatchObject({ template: snapshotId });
    for (const none of ["createSnapshot", "files.read", "files.write"]) expect(op(second.calls, none)).toEqual([]);
    const marker = /^[0-9a-f]{16}$/m.exec(first.bash[0] ?? "")?.[0];
    expect(marker).toBeDefined();
    expect(second.bash[0]).toContain(marker);
    expect(second.run.changedPaths).toEqual([]);
    const third = await run("third", "cat deps/marker.txt");
    expect(third.run.setup).toMatchObject({ status: "cached" });
    expect(third.bash[0]).toContain(marker);

    // Another key: the VM starts in the snapshot all the same, its stale layer goes, setup runs and a new snapshot is kept.
    const bumped = await run("bumped", "cat deps/marker.txt", { baseRef: "bumped" });
    expect(bumped.run.setup).toMatchObject({ status: "succeeded", cached: false });
    expect(bumped.run.setup!.key).not.toBe(first.run.setup!.key);
    expect(bumped.bash[0]).not.toContain(marker);
    expect(op(bumped.calls, "createSnapshot")).toHaveLength(1);
    const layers = await pb.engine.listEnvironments();
    expect(layers.map((l) => [l.key, l.storage]).sort()).toEqual(
      [
        [first.run.setup!.key, "snapshot"],
        [bumped.run.setup!.key, "snapshot"],
      ].sort(),
    );
    // Dropping a layer deletes its snapshot at the provider.
    await pb.engine.dropEnvironment(first.run.setup!.key!);
    expect(op(cloud.calls, "deleteSnapshot").map((c) => c.args)).toEqual([{ snapshotId }]);
  });
});
