/**
 * Start-up benchmark: how long from `POST /api/v1/coding-agent/runs` to the model's first request, and to
 * the run being `idle` (turn done, patch ready), for the `local` and `bwrap` providers, cold
 * and with a warm pool. The baseline is measured in the same process: what a hand-written
 * script gets with `git clone` + `opencode serve` + one prompt driven directly through the
 * SDK, with no sandbox, no gateway and no store. Two such floors: naive (a fresh home) and
 * tuned (what a knowledgeable script would also do: Patchbay's plugin-install skip and a
 * warmed binary); every Patchbay row is measured against the tuned one.
 *
 * Also the memory an idle session holds: the summed RSS of the processes working inside the
 * run's sandbox directory and everything they started (OpenCode, bwrap).
 */
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createOpencodeClient } from "@opencode-ai/sdk/v2";
import { loadConfig } from "../src/config.ts";
import { buildOpencodeConfig, opencodeEnv, PROVIDER_ID } from "../src/engine/agent/opencode-config.ts";
import { bundledOpencodeBin } from "../src/engine/agent/opencode.ts";
import { skipPluginInstall } from "../src/engine/agent/opencode-home.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { descendants, freeLoopbackPort } from "../src/engine/sandbox/process.ts";
import type { Sandbox } from "../src/engine/sandbox/sandbox.ts";
import { createHttpApp } from "../src/http/app.ts";
import { API_BASE } from "../src/http/runs.ts";
import { startScriptedModel, type ScriptedModel } from "../test/fixtures/scripted-model.ts";
import { git } from "../test/helpers.ts";
import { median, row, type BenchModule, type Row } from "./harness.ts";
import { benchRepository, benchTempDir, processTree, rssMb } from "./support.ts";

const RUNS = 3;
/** cold: a server per run started for it; warm: the warm pool; shared: one server for all runs. */
/** repeat: a warm pool of one holding a repository entry for the bench's repository (PATCHBAY_WARM_REPOS). */
type Mode = "cold" | "warm" | "shared" | "repeat";
const FILES = 300;

export interface Timing {
  /** Until the run's checkout is ready (baseline: the `git clone`). */
  sandboxMs: number;
  firstRequestMs: number;
  idleMs: number;
  rssMb: number;
}

const script = (model: ScriptedModel, id: string) =>
  model.script(id, [
    [{ toolCalls: [{ name: "write", args: { filePath: "BENCH.md", content: "bench\n" } }] }, { text: "done" }],
  ]);

/**
 * How a hand-written script starts OpenCode. naive (the only floor before): Patchbay's
 * generated config and environment in a fresh home. tuned: also what launchServer does before
 * every start (mark OpenCode's plugin package installed, see opencode-home.ts). Snapshots are
 * off in both (the generated config), and both run after one unmeasured start warmed the binary.
 */
export type Floor = "naive" | "tuned";

/** The host as the one thing skipPluginInstall uses of a sandbox: `exec`, here with the floor's HOME. */
function hostExec(home: string): Sandbox {
  const exec: Sandbox["exec"] = (argv) =>
    new Promise((resolve) =>
      execFile(
        argv[0]!,
        argv.slice(1),
        { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home } },
        (e, stdout, stderr) => resolve({ exitCode: e ? Number(e.code ?? 1) : 0, stdout, stderr }),
      ),
    );
  return { exec } as Pick<Sandbox, "exec"> as Sandbox;
}

/** The floor: clone, start OpenCode by hand, prompt once. */
export async function baseline(
  model: ScriptedModel,
  gitBase: string,
  root: string,
  floor: Floor,
  n: number,
): Promise<Timing> {
  const modelId = `bench/baseline-${floor}-${n}`;
  script(model, modelId);
  const dir = path.join(root, `baseline-${floor}-${n}`);
  const home = path.join(dir, "home");
  fs.mkdirSync(home, { recursive: true });
  const t0 = performance.now();
  const firstRequest = model.nextRequest(modelId).then(() => performance.now() - t0);
  git(dir, "clone", "-q", `${gitBase}/acme/bench.git`, path.join(dir, "repo"));
  const sandboxMs = performance.now() - t0;
  // Timed, as it is in launchServer.
  if (floor === "tuned") await skipPluginInstall(hostExec(home), createLogger({ level: "warn" }));
  const config = buildOpencodeConfig({ modelBaseUrl: model.baseUrl, modelToken: "bench", modelId });
  // A port of our own: with --port=0 opencode 1.18.33 takes 4096, which another server may hold.
  const port = await freeLoopbackPort();
  const proc = spawn(bundledOpencodeBin(), ["serve", "--hostname=127.0.0.1", `--port=${port}`], {
    cwd: path.join(dir, "repo"),
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: home, ...opencodeEnv(config, "bench") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    const baseUrl = await new Promise<string>((resolve, reject) => {
      let out = "";
      proc.stdout.on("data", (d: Buffer) => {
        out += String(d);
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      proc.once("exit", (code) => reject(new Error(`opencode exited ${code}: ${out}`)));
    });
    const client = createOpencodeClient({
      baseUrl,
      directory: path.join(dir, "repo"),
      headers: { Authorization: `Basic ${Buffer.from("opencode:bench").toString("base64")}` },
    });
    const session = await client.session.create({ title: "bench" });
    await client.session.prompt({
      sessionID: session.data!.id,
      parts: [{ type: "text", text: "write the file" }],
      model: { providerID: PROVIDER_ID, modelID: modelId },
    });
    const idleMs = performance.now() - t0;
    return { sandboxMs, firstRequestMs: await firstRequest, idleMs, rssMb: rssMb(descendants([proc.pid!])) };
  } finally {
    proc.kill("SIGKILL");
  }
}

/** Runs through the real HTTP API of a real Patchbay, `RUNS` times. */
async function patchbayRuns(
  model: ScriptedModel,
  gitBase: string,
  root: string,
  sandbox: "local" | "bwrap",
  mode: Mode,
): Promise<Timing[]> {
  const poolSize = mode === "warm" || mode === "repeat" ? 1 : 0;
  const dataDir = fs.mkdtempSync(path.join(root, `${sandbox}-${mode}-`));
  const config = loadConfig({
    // The shared server serves the models it lists; the runs' scripted models must be among them.
    // So do a repository entry's: it binds runs by session, never by a config change.
    ...(mode === "shared" || mode === "repeat"
      ? { PATCHBAY_MODELS: Array.from({ length: RUNS + 1 }, (_, n) => `bench/${sandbox}-${mode}-${n}`).join(",") }
      : {}),
    ...(mode === "shared" ? { PATCHBAY_SHARED_AGENT: "1" } : {}),
    ...(mode === "repeat" ? { PATCHBAY_WARM_REPOS: "acme/bench" } : {}),
    PATCHBAY_DATA_DIR: dataDir,
    PATCHBAY_SANDBOX: sandbox,
    PATCHBAY_WARM_POOL_SIZE: String(poolSize),
    PATCHBAY_GIT_BASE_URL: gitBase,
    PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
    OPENROUTER_API_KEY: "sk-bench",
    PATCHBAY_LOG_LEVEL: "warn",
  });
  // Info, for the providers' "sandbox created" (the end of a run's checkout); warnings and
  // errors are still printed.
  const sandboxReady = new Map<string, number>();
  const log = createLogger({
    level: "info",
    write: (l) => {
      const entry = JSON.parse(l) as { level: string; msg: string; sandbox?: string };
      if (entry.msg === "sandbox created" && entry.sandbox) sandboxReady.set(entry.sandbox, performance.now());
      if (entry.level === "warn" || entry.level === "error") process.stderr.write(l);
    },
  });
  const pb = await openPatchbay(config, { log });
  const server = http.createServer(createHttpApp({ engine: pb.engine, keys: pb.keys, log, config }));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const { key } = await pb.keys.create({ name: "bench", scopes: ["read:builder", "write:builder"] });
  const timings: Timing[] = [];
  try {
    // One unmeasured run first: it fills the mirror cache, as on a server that has seen the repository.
    for (let n = 0; n <= RUNS; n++) {
      if (pb.sessions.warmPool) await pb.sessions.warmPool.ready();
      const modelId = `bench/${sandbox}-${mode}-${n}`;
      script(model, modelId);
      const t0 = performance.now();
      const firstRequest = model.nextRequest(modelId).then(() => performance.now() - t0);
      const res = await fetch(`${base}${API_BASE}/runs`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ repository: "acme/bench", prompt: "write the file", modelId }),
      });
      if (res.status >= 300) throw new Error(`POST /runs answered ${res.status}: ${await res.text()}`);
      const { id } = (await res.json()) as { id: string };
      const owner = (await ownerOf(pb, id))!;
      const run = await pb.engine.waitForTurn(owner, id);
      const idleMs = performance.now() - t0;
      if (run.status !== "idle") throw new Error(`run ${id} ended ${run.status}: ${JSON.stringify(run.error)}`);
      const rss = rssMb(processTree(path.join(dataDir, "sandboxes", id)));
      const sandboxMs = (sandboxReady.get(id) ?? Number.NaN) - t0;
      if (n > 0) timings.push({ sandboxMs, firstRequestMs: await firstRequest, idleMs, rssMb: rss });
      await pb.engine.endSession(owner, id);
    }
  } finally {
    await new Promise((r) => server.close(r));
    await pb.close();
  }
  return timings;
}

async function ownerOf(pb: Awaited<ReturnType<typeof openPatchbay>>, runId: string): Promise<string | undefined> {
  return (await pb.store.getRun(runId))?.ownerId;
}

export function hasBwrap(): boolean {
  return process.platform === "linux" && ["/usr/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));
}

export const startup: BenchModule = {
  name: "startup",
  async run() {
    const root = benchTempDir("startup");
    const model = await startScriptedModel();
    const rows: Row[] = [];
    try {
      const gitBase = benchRepository(path.join(root, "remote"), "acme/bench", FILES, 20);
      // One unmeasured start warms the binary (and the page cache) for both floors; they then
      // alternate, so a machine whose load changes meanwhile weighs on both alike.
      await baseline(model, gitBase, root, "tuned", -1);
      const naive: Timing[] = [];
      const tuned: Timing[] = [];
      const floors = async (from: number) => {
        for (let n = from; n < from + RUNS; n++) {
          naive.push(await baseline(model, gitBase, root, "naive", n));
          tuned.push(await baseline(model, gitBase, root, "tuned", n));
        }
      };
      await floors(0);
      const measured: { sandbox: "local" | "bwrap"; mode: Mode; t: Timing[] }[] = [];
      const providers: ("local" | "bwrap")[] = hasBwrap() ? ["local", "bwrap"] : ["local"];
      for (const sandbox of providers) {
        // shared: PATCHBAY_SHARED_AGENT=1 (local only), its server started by the unmeasured first run.
        const modes: Mode[] = sandbox === "local" ? ["cold", "warm", "shared", "repeat"] : ["cold", "warm", "repeat"];
        for (const mode of modes)
          measured.push({ sandbox, mode, t: await patchbayRuns(model, gitBase, root, sandbox, mode) });
      }
      // The floors again, after: on a machine whose load drifts, the Patchbay rows are then
      // measured against floors from both sides of them.
      await floors(RUNS);
      const floorOf = (ts: Timing[]) => ({
        sandbox: median(ts.map((t) => t.sandboxMs)),
        agent: median(ts.map((t) => t.firstRequestMs - t.sandboxMs)),
        first: median(ts.map((t) => t.firstRequestMs)),
        idle: median(ts.map((t) => t.idleMs)),
        rss: median(ts.map((t) => t.rssMb)),
      });
      const b = floorOf(tuned);
      const nb = floorOf(naive);
      const floorNote = `median of ${2 * RUNS}, before and after the Patchbay runs; baseline: tuned floor (with launchServer's plugin skip); value: naive floor (fresh home, no skip)`;
      rows.push(
        row("floor naive vs tuned: sandbox ready → first model request", b.agent, nb.agent, "ms", floorNote),
        row("floor naive vs tuned: clone → first model request", b.first, nb.first, "ms", floorNote),
        row("floor naive vs tuned: clone → idle", b.idle, nb.idle, "ms", floorNote),
        row("floor naive vs tuned: RSS after one prompt", b.rss, nb.rss, "MB", floorNote),
      );
      for (const { sandbox, mode, t } of measured) {
        const label = `${sandbox} ${mode}`;
        const note = `median of ${RUNS}; baseline: tuned floor (median of ${2 * RUNS}), clone + opencode serve + prompt`;
        // Where the time to the first request goes: the checkout, then the agent (start or
        // bind OpenCode, open the session, OpenCode's work on the first prompt).
        rows.push(
          row(
            `${label}: POST /runs → sandbox ready`,
            b.sandbox,
            median(t.map((x) => x.sandboxMs)),
            "ms",
            `median of ${RUNS}; baseline: git clone (median of ${2 * RUNS})`,
          ),
        );
        rows.push(
          row(
            `${label}: sandbox ready → first model request`,
            b.agent,
            median(t.map((x) => x.firstRequestMs - x.sandboxMs)),
            "ms",
            `median of ${RUNS}; baseline: tuned floor (median of ${2 * RUNS}), opencode serve + prompt`,
          ),
        );
        rows.push(
          row(
            `${label}: POST /runs → first model request`,
            b.first,
            median(t.map((x) => x.firstRequestMs)),
            "ms",
            mode === "repeat" ? `${note}; target ratio ≤ 0.1` : note,
          ),
        );
        rows.push(row(`${label}: POST /runs → idle`, b.idle, median(t.map((x) => x.idleMs)), "ms", note));
        // A shared server is no run's: bench/shared-agent.ts measures what each session adds.
        // A repository entry's sandbox keeps the pool's name on local (measured where its run's is).
        if (mode !== "shared" && !(mode === "repeat" && sandbox === "local"))
          rows.push(
            row(
              `${label}: RSS of an idle session`,
              b.rss,
              median(t.map((x) => x.rssMb)),
              "MB",
              "baseline: tuned floor, one opencode serve after one prompt",
            ),
          );
      }
    } finally {
      await model.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
    return { name: "startup", rows };
  },
};
