/**
 * The sandbox contract: one suite, run for real against every provider that can run on this
 * machine (`local` always, `bwrap` where bubblewrap works; CI installs it). Each provider gets
 * a real repository, a real `opencode serve` started by the real driver inside the sandbox,
 * and the scripted model, reached from inside the sandbox through `engineUrl`.
 *
 * One OpenCode server per provider (each is ~600 MB and ~2 s to start): the tests of a
 * provider share one sandbox and one agent session and run in order. The warm path
 * (`prepare` then `adopt`) starts a second server once the first is gone.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { createOpencodeClient } from "@opencode-ai/sdk/v2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AgentSession } from "../../../src/engine/agent/agent.ts";
import { buildOpencodeConfig, PROVIDER_ID } from "../../../src/engine/agent/opencode-config.ts";
import {
  bundledOpencodeBin,
  createOpencodeDriver,
  launchServer,
  type LaunchedServer,
} from "../../../src/engine/agent/opencode.ts";
import type { BuilderEventData } from "../../../src/engine/events/schema.ts";
import { computeDiff } from "../../../src/engine/git/git.ts";
import { createBwrapProvider } from "../../../src/engine/sandbox/bwrap.ts";
import { descendants } from "../../../src/engine/sandbox/process.ts";
import { createLocalProvider } from "../../../src/engine/sandbox/local.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import type { Sandbox, SandboxProvider, WarmSandbox } from "../../../src/engine/sandbox/sandbox.ts";
import { startScriptedModel, type RecordedRequest, type ScriptedModel } from "../../fixtures/scripted-model.ts";
import { git, makeRepo, tempDir, waitFor } from "../../helpers.ts";

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));

interface ProviderCase {
  name: "local" | "bwrap";
  /** True when the provider promises isolation from the host's files. */
  isolates: boolean;
  make(dataDir: string): Promise<SandboxProvider>;
}

const CASES: ProviderCase[] = [
  { name: "local", isolates: false, make: async (dataDir) => createLocalProvider({ dataDir, killGraceMs: 500 }) },
  {
    name: "bwrap",
    isolates: true,
    make: (dataDir) => createBwrapProvider({ dataDir, opencodeBin: bundledOpencodeBin(), killGraceMs: 500 }),
  },
];

let model: ScriptedModel;
let repo: ReturnType<typeof makeRepo>;
beforeAll(async () => {
  model = await startScriptedModel();
  repo = makeRepo(
    tempDir("remote"),
    "acme/contract",
    { "README.md": "# contract\n", "src/app.js": "console.log(1);\n" },
    { branches: { feature: { "FEATURE.md": "feature branch\n" } } },
  );
});
afterAll(async () => {
  await model?.close();
});

const SECRET = "patchbay-canary-secret-7f3a";
/** Starting OpenCode and its first turn take over a minute on a loaded machine. */
const slow = { timeout: 180_000 };

/** Text of the last tool result the agent sent back to the model in `req`. */
function lastToolResult(req: RecordedRequest): string {
  const m = req.body.messages.filter((x) => x.role === "tool").at(-1);
  return m === undefined ? "" : typeof m.content === "string" ? m.content : JSON.stringify(m.content);
}

/** Parsed `/proc/<pid>/stat` state; a zombie counts as gone. */
const alive = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
};

for (const c of CASES) {
  describe.skipIf(c.name === "bwrap" && !hasBwrap).sequential(`sandbox contract: ${c.name}`, slow, () => {
    const modelId = `contract/${c.name}`;
    let dataDir: string;
    let provider: SandboxProvider;
    let sandbox: Sandbox;
    let other: Sandbox;
    let agent: AgentSession | undefined;
    let warm: WarmSandbox | undefined;
    let adopted: Sandbox | undefined;
    let server: LaunchedServer | undefined;
    let warmId = "";
    const events: BuilderEventData[] = [];
    let turnNo = 0;

    const turn = async (prompt: string) => {
      turnNo++;
      const out = await agent!.runTurn({ prompt, kind: "code", timeoutMs: 180_000, onEvent: (e) => events.push(e) });
      expect(out.error).toBeUndefined();
      return out;
    };

    beforeAll(async () => {
      dataDir = tempDir(`contract-${c.name}`);
      fs.writeFileSync(path.join(dataDir, "store-canary.json"), SECRET);
      provider = await c.make(dataDir);
      const cloneUrl = `${repo.baseUrl}/acme/contract.git`;
      [sandbox, other] = await Promise.all([
        provider.create({
          runId: `run_${c.name}_a`,
          ownerId: "o",
          repository: { fullName: "acme/contract", cloneUrl },
          ref: "feature",
        }),
        provider.create({
          runId: `run_${c.name}_b`,
          ownerId: "o2",
          repository: { fullName: "acme/contract", cloneUrl },
        }),
      ]);
      fs.writeFileSync(path.join(dataDir, "sandboxes", other.id, "repo", "OTHER_SECRET.md"), SECRET);
    });

    afterAll(async () => {
      await agent?.close();
      await Promise.all([sandbox?.kill(), other?.kill(), warm?.kill()]);
      await provider?.close?.();
    });

    it("sets the workspace up at the ref", async () => {
      expect(sandbox.provider).toBe(c.name);
      expect(sandbox.baseRef).toBe("feature");
      expect(sandbox.baseSha).toBe(git(repo.bare, "rev-parse", "refs/heads/feature"));
      expect(await sandbox.exec(["cat", "FEATURE.md"])).toMatchObject({ exitCode: 0, stdout: "feature branch\n" });
      expect((await sandbox.exec(["git", "rev-parse", "HEAD"])).stdout.trim()).toBe(sandbox.baseSha);
      expect((await sandbox.exec(["git", "symbolic-ref", "--short", "HEAD"])).stdout.trim()).toBe("feature");
      expect((await sandbox.exec(["pwd"])).stdout.trim()).toBe(sandbox.workdir);
      // The other run is at the default branch, in a workspace of its own.
      expect(other.baseRef).toBe("main");
      expect((await other.exec(["ls"])).stdout).not.toContain("FEATURE.md");
    });

    it("starts OpenCode inside the sandbox, reachable from the engine, and it reaches the model", async () => {
      model.script(modelId, [
        [
          { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "turn one\n" } }] },
          { text: "wrote notes" },
        ],
        [
          {
            toolCalls: [
              { name: "bash", args: { command: "cat NOTES.md && echo from-bash >> NOTES.md", description: "read" } },
            ],
          },
          { text: "read notes" },
        ],
        [
          {
            toolCalls: [
              {
                name: "bash",
                args: {
                  command: [
                    `cat ${path.join(dataDir, "store-canary.json")}`,
                    `cat ${path.join(dataDir, "sandboxes", other.id, "repo", "OTHER_SECRET.md")}`,
                    "ls /root",
                    `ls ${dataDir}`,
                    "echo probe-done",
                  ].join("; "),
                  description: "probe",
                },
              },
            ],
          },
          { text: "probed" },
        ],
      ]);
      agent = await createOpencodeDriver().start({
        sandbox,
        modelBaseUrl: `${sandbox.engineUrl(Number(new URL(model.baseUrl).port))}/v1`,
        modelToken: "contract-token",
        modelId,
        watchdogMs: 2000,
      });
      expect(agent.sessionId).toMatch(/^ses/);
      const out = await turn("write the notes");
      expect(out.summary).toBe("wrote notes");
      expect(model.agentRequests(modelId)[0]!.authorization).toBe("Bearer contract-token");
      expect(events.some((e) => e.kind === "tool" && e.tool === "write" && e.status === "completed")).toBe(true);
    });

    it("keeps files across turns of the session, and the engine's diff sees them", async () => {
      expect(turnNo).toBe(1);
      await turn("read the notes back");
      const reqs = model.agentRequests(modelId);
      expect(lastToolResult(reqs.at(-1)!)).toContain("turn one");
      expect((await sandbox.exec(["cat", "NOTES.md"])).stdout).toBe("turn one\nfrom-bash\n");
      const diff = await computeDiff((args, o) => sandbox.exec(["git", ...args], o), sandbox.workdir, sandbox.baseSha);
      expect(diff.changedPaths).toEqual(["NOTES.md"]);
    });

    it(
      c.isolates
        ? "an agent bash call cannot read the data dir, another run's workspace or /root"
        : "gives no isolation: an agent bash call reads the data dir and another run's workspace",
      async () => {
        await turn("probe the host");
        const output = lastToolResult(model.agentRequests(modelId).at(-1)!);
        expect(output).toContain("probe-done");
        if (c.isolates) {
          expect(output).not.toContain(SECRET);
          const denied = (p: string) =>
            new RegExp(`${p.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}'?: No such file or directory`);
          expect(output).toMatch(denied(path.join(dataDir, "store-canary.json")));
          expect(output).toMatch(denied(path.join(dataDir, "sandboxes", other.id, "repo", "OTHER_SECRET.md")));
          expect(output).toMatch(denied("/root"));
          expect(output).toMatch(denied(dataDir));
        } else {
          expect(output).toContain(SECRET);
        }
      },
    );

    it("kill leaves no process of the sandbox behind", async () => {
      // Taken while the server runs: the sandbox's processes and everything they started.
      const held = descendants([...(sandbox.pids?.() ?? []), ...(agent?.pids ?? [])]).filter(alive);
      expect(held.length).toBeGreaterThan(0);
      await agent!.close();
      agent = undefined;
      await sandbox.kill();
      await waitFor(() => held.every((p) => !alive(p)), { what: "every sandbox process to exit", timeoutMs: 60_000 });
      expect(fs.existsSync(path.join(dataDir, "sandboxes", sandbox.id))).toBe(false);
      await expect(sandbox.exec(["true"])).rejects.toMatchObject({ code: "sandbox_failed" });
    });

    it("prepare gives an empty sandbox OpenCode starts in; adopt checks the run's ref out and the server works on it", async () => {
      warm = await provider.prepare!();
      warmId = warm.id;
      expect(warm.provider).toBe(c.name);
      expect(await warm.exec(["ls", "-A"])).toMatchObject({ exitCode: 0, stdout: "" });
      expect((await warm.exec(["pwd"])).stdout.trim()).toBe(warm.workdir);
      const warmModel = `contract/${c.name}-warm`;
      model.script(warmModel, [
        [
          { toolCalls: [{ name: "write", args: { filePath: "WARM.md", content: "written after adopt\n" } }] },
          { text: "wrote it" },
        ],
      ]);
      const config = buildOpencodeConfig({
        modelBaseUrl: `${warm.engineUrl(Number(new URL(model.baseUrl).port))}/v1`,
        modelToken: "warm-token",
        modelId: warmModel,
      });
      // Another process takes the first port the start is given before OpenCode binds it (many
      // servers starting at once on a busy host): the start tries another.
      const squatter = net.createServer();
      await new Promise<void>((resolve) => squatter.listen(0, "127.0.0.1", resolve));
      const taken = (squatter.address() as net.AddressInfo).port;
      const free = warm.freePort.bind(warm);
      let asked = 0;
      warm.freePort = () => (asked++ === 0 ? Promise.resolve(taken) : free());
      try {
        server = await launchServer(warm, config, {
          opencodeBin: undefined,
          startTimeoutMs: 120_000,
          log: silentLogger,
        });
      } finally {
        await new Promise((resolve) => squatter.close(resolve));
      }
      expect(asked).toBe(2);
      expect(server.port).not.toBe(taken);

      const runId = `run_${c.name}_warm`;
      adopted = await warm.adopt({
        runId,
        ownerId: "o",
        repository: { fullName: "acme/contract", cloneUrl: `${repo.baseUrl}/acme/contract.git` },
        ref: "feature",
      });
      expect(adopted.id).toBe(runId);
      expect(adopted.baseRef).toBe("feature");
      expect(adopted.baseSha).toBe(git(repo.bare, "rev-parse", "refs/heads/feature"));
      expect(await adopted.exec(["cat", "FEATURE.md"])).toMatchObject({ exitCode: 0, stdout: "feature branch\n" });
      expect((await adopted.exec(["git", "rev-parse", "HEAD"])).stdout.trim()).toBe(adopted.baseSha);
      expect((await adopted.exec(["pwd"])).stdout.trim()).toBe(adopted.workdir);
      expect(fs.existsSync(path.join(dataDir, "sandboxes", runId, "repo", "FEATURE.md"))).toBe(true);

      // The server started before adopt still runs, belongs to the run, and works in its
      // checkout with the home it started with (a session, a turn, a file written).
      expect(adopted.pids?.()).toContain(server.proc.pid);
      const client = createOpencodeClient({ baseUrl: server.baseUrl, headers: server.headers });
      const directory = adopted.workdir;
      const session = await client.session.create({ directory, title: "contract" });
      expect(session.error).toBeUndefined();
      const prompted = await client.session.prompt({
        sessionID: session.data!.id,
        directory,
        parts: [{ type: "text", text: "write it" }],
        model: { providerID: PROVIDER_ID, modelID: warmModel },
        agent: "build",
      });
      expect(prompted.error).toBeUndefined();
      expect(model.agentRequests(warmModel)[0]!.authorization).toBe("Bearer warm-token");
      expect((await adopted.exec(["cat", "WARM.md"])).stdout).toBe("written after adopt\n");
    });

    it("kill of an adopted sandbox kills what started before adopt and leaves nothing behind", async () => {
      const held = descendants(adopted!.pids?.() ?? []).filter(alive);
      expect(held).toContain(server!.proc.pid);
      await adopted!.kill();
      await server!.proc.exited;
      await waitFor(() => held.every((p) => !alive(p)), { what: "every sandbox process to exit", timeoutMs: 60_000 });
      // Neither the run's directory nor anything at the warm sandbox's name (a link) is left.
      const left = fs.readdirSync(path.join(dataDir, "sandboxes"));
      expect(left).not.toContain(adopted!.id);
      expect(left).not.toContain(warmId);
      await expect(adopted!.exec(["true"])).rejects.toMatchObject({ code: "sandbox_failed" });
    });

    it("hibernate stops every process and keeps the files; wake reaches them again; discard deletes them", async () => {
      const sleeper = other.spawn(["sleep", "600"]);
      const held = descendants(other.pids?.() ?? []).filter(alive);
      expect(held.length).toBeGreaterThan(0);
      expect(other.hibernation).toBe("files");
      const kept = await other.hibernate!();
      await sleeper.exited;
      await waitFor(() => held.every((p) => !alive(p)), { what: "every sandbox process to exit", timeoutMs: 60_000 });
      await expect(other.exec(["true"])).rejects.toMatchObject({ code: "sandbox_failed" });
      expect(kept).toMatchObject({ provider: c.name, baseSha: other.baseSha });

      const woken = await provider.wake!(other.id, kept);
      expect(woken.baseSha).toBe(other.baseSha);
      expect((await woken.exec(["cat", "OTHER_SECRET.md"])).stdout).toBe(SECRET);
      await provider.discard!(other.id, kept);
      expect(fs.existsSync(path.join(dataDir, "sandboxes", other.id))).toBe(false);
      await expect(provider.wake!(other.id, kept)).rejects.toMatchObject({ code: "sandbox_failed" });
    });
  });
}
