/**
 * Environments: what a run's setup costs before the agent starts, and what the cache saves.
 * A real small Node project (a few real npm dependencies; its lockfile resolved from the
 * registry in this set-up) is run three ways, on `local` and (where it runs) `bwrap`:
 *   - no setup at all (the same project without dependencies),
 *   - setup run (`npm ci` from the registry, uncached),
 *   - a cache hit (the detected `npm ci`, cached by package-lock.json, warmed by one run).
 * Measured: `startRun` (the POST's engine call) → the model's first request, served with a
 * warm pool of one (as `patchbay serve` runs local and bwrap) and cold. Targets: a hit costs
 * at most 1.2× a run with no setup, and what setup adds to a run at most 0.2× with a hit.
 * Cold, setup runs beside the agent server's start, so an install shorter than that start
 * adds little even uncached.
 * Also the restore itself against the alternative of copying a directory on the host.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { HOST_PROXY_VARIABLES, loadConfig } from "../src/config.ts";
import { createEnvironmentCache } from "../src/engine/environment/cache.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { createLocalProvider } from "../src/engine/sandbox/local.ts";
import { startScriptedModel, type ScriptedModel } from "../test/fixtures/scripted-model.ts";
import { makeRepo } from "../test/helpers.ts";
import { median, row, type BenchModule, type Row } from "./harness.ts";
import { benchEnv } from "./support.ts";

const REPS = 3;
const DEPENDENCIES = { lodash: "4.17.21", semver: "7.6.3", ms: "2.1.3", picocolors: "1.1.1", yargs: "17.7.2" };
const SOURCES = {
  "README.md": "# app\n",
  "src/index.js": "const _ = require('lodash');\nmodule.exports = () => _.chunk([1, 2, 3, 4], 2);\n",
};
const OWNER = "bench";

/** This host's proxy and TLS roots, which a served Patchbay reads from its environment too. */
const proxyEnv = Object.fromEntries(
  HOST_PROXY_VARIABLES.flatMap((v) => (process.env[v] ? [[v, process.env[v]!]] : [])),
);

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));

/** The project's package.json and a lockfile resolved from the registry. */
function project(root: string): Record<string, string> {
  const dir = path.join(root, "lock");
  fs.mkdirSync(dir, { recursive: true });
  const pkg = JSON.stringify({ name: "app", version: "1.0.0", private: true, dependencies: DEPENDENCIES }, null, 2);
  fs.writeFileSync(path.join(dir, "package.json"), pkg + "\n");
  execFileSync("npm", ["install", "--package-lock-only", "--no-audit", "--no-fund", "--silent"], { cwd: dir });
  return {
    ...SOURCES,
    "package.json": pkg + "\n",
    "package-lock.json": fs.readFileSync(path.join(dir, "package-lock.json"), "utf8"),
  };
}

/** Milliseconds from `t0` to the model's first request for `modelId`; throws with the run's error if it ends first. */
async function untilFirstRequest(
  model: ScriptedModel,
  modelId: string,
  t0: number,
  ended: () => Promise<string | undefined>,
): Promise<number> {
  for (let i = 0; ; i++) {
    const req = model.agentRequests(modelId)[0];
    if (req) return req.at - t0;
    if (i % 100 === 99) {
      const why = await ended();
      if (why) throw new Error(`the run ended before calling the model: ${why}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Sample {
  firstRequestMs: number;
  setupMs: number | null;
  status: string | undefined;
}

/**
 * One provider, served as `patchbay serve` serves it (a warm pool of one: the agent is up
 * before the run, so setup is all that stands between POST and the first request) or cold
 * (a server started per run, which setup runs beside).
 */
async function measureProvider(
  sandbox: "local" | "bwrap",
  host: "pooled" | "cold",
  root: string,
  model: ScriptedModel,
  gitBase: string,
) {
  const label = `${sandbox}, ${host}`;
  const dataDir = fs.mkdtempSync(path.join(root, `data-${sandbox}-${host}-`));
  const config = loadConfig({
    ...benchEnv({ dataDir, sandbox, gitBase, modelBaseUrl: model.baseUrl }),
    PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "100",
    ...proxyEnv,
  });
  const pb = await openPatchbay(config, {
    log: createLogger({ level: "silent" }),
    defaultWarmPoolSize: host === "pooled" ? 1 : 0,
  });
  let n = 0;
  const once = async (repository: string, extra: Record<string, unknown> = {}): Promise<Sample> => {
    const modelId = `bench/${sandbox}/${host}/${++n}`;
    // Every run alike: a warm entry ready (pooled), nothing else running.
    await pb.sessions.warmPool?.ready();
    const t0 = Date.now();
    const started = await pb.engine.startRun(OWNER, {
      repository,
      prompt: "go",
      modelId,
      validationMode: "minimal",
      ...extra,
    });
    const firstRequestMs = await untilFirstRequest(model, modelId, t0, async () => {
      const r = await pb.engine.getRun(OWNER, started.id);
      return r.status === "running" || r.status === "queued"
        ? undefined
        : `${r.status} ${JSON.stringify(r.error)} ${r.setup?.outputTail ?? ""}`;
    });
    const run = await pb.engine.waitForTurn(OWNER, started.id);
    if (run.status !== "idle") throw new Error(`bench run ended ${run.status}: ${JSON.stringify(run.error)}`);
    await pb.engine.endSession(OWNER, run.id);
    return { firstRequestMs, setupMs: run.setup?.durationMs ?? null, status: run.setup?.status };
  };
  const uncached = { environment: { setup: { commands: ["npm ci --no-audit --no-fund"] } } };
  try {
    // Warm the mirrors and the cache layer; not measured.
    await once("acme/plain");
    const warm = await once("acme/app");
    if (warm.status !== "succeeded") throw new Error(`warm-up setup was ${warm.status}`);
    const plain: Sample[] = [];
    const setup: Sample[] = [];
    const hit: Sample[] = [];
    // Interleaved, so a change in the machine's load touches all three alike.
    for (let i = 0; i < REPS; i++) {
      plain.push(await once("acme/plain"));
      setup.push(await once("acme/app", uncached));
      const h = await once("acme/app");
      if (h.status !== "cached") throw new Error(`expected a cache hit, setup was ${h.status}`);
      hit.push(h);
    }
    const m = (xs: Sample[], f: (s: Sample) => number | null) => median(xs.map((s) => f(s) ?? 0));
    const first = (s: Sample) => s.firstRequestMs;
    return [
      row(
        `${label}: POST → first model request, cache hit vs no setup`,
        m(plain, first),
        m(hit, first),
        "ms",
        "target ratio ≤ 1.2",
      ),
      row(
        `${label}: POST → first model request, cache hit vs setup run`,
        m(setup, first),
        m(hit, first),
        "ms",
        "target ratio ≤ 0.2",
      ),
      row(
        `${label}: what setup adds to POST → first request, cache hit vs setup run`,
        m(setup, first) - m(plain, first),
        m(hit, first) - m(plain, first),
        "ms",
        "each minus the no-setup run; target ratio ≤ 0.2",
      ),
      row(
        `${label}: setup step alone, restore vs npm ci`,
        m(setup, (s) => s.setupMs),
        m(hit, (s) => s.setupMs),
        "ms",
        "run.setup.durationMs",
      ),
    ];
  } finally {
    await pb.close();
  }
}

/** The restore as built (tar made and unpacked in the sandbox) against a host-side `cp -a` of the same tree. */
async function restoreOptions(root: string, gitBase: string): Promise<Row[]> {
  const dataDir = fs.mkdtempSync(path.join(root, "restore-"));
  const provider = createLocalProvider({ dataDir, ...(process.env.PATH ? { path: process.env.PATH } : {}) });
  const cache = createEnvironmentCache({ dataDir, maxBytes: 1e10, log: createLogger({ level: "silent" }) });
  const sandboxes = [];
  try {
    const make = async (i: number) => {
      const s = await provider.create({
        runId: `run_restore${i}`,
        ownerId: OWNER,
        repository: { fullName: "acme/app", cloneUrl: `${gitBase}/acme/app.git` },
      });
      sandboxes.push(s);
      return s;
    };
    const first = await make(0);
    const ci = await first.exec(["npm", "ci", "--no-audit", "--no-fund"], { timeoutMs: 600_000, env: proxyEnv });
    if (ci.exitCode !== 0) throw new Error(`npm ci failed: ${ci.stderr}`);
    const key = "b".repeat(40);
    await cache.save(key, "acme/app", first, ["node_modules"]);
    const tree = path.join(dataDir, "tree");
    execFileSync("cp", ["-a", path.join(dataDir, "sandboxes", "run_restore0", "repo", "node_modules"), tree]);
    const tar: number[] = [];
    const cp: number[] = [];
    for (let i = 1; i <= 5; i++) {
      const s = await make(i);
      let t0 = performance.now();
      await cache.restore(key, s);
      tar.push(performance.now() - t0);
      t0 = performance.now();
      execFileSync("cp", ["-a", "--reflink=auto", tree, path.join(dataDir, `copy${i}`)]);
      cp.push(performance.now() - t0);
      await s.kill();
    }
    const files = Number(
      execFileSync("sh", ["-c", `find ${tree} | wc -l`])
        .toString()
        .trim(),
    );
    const bytes = fs.statSync(path.join(dataDir, "cache", "env", `${key}.tar`)).size;
    return [
      row(
        "local: restore node_modules, tar in the sandbox vs cp -a on the host",
        median(cp),
        median(tar),
        "ms",
        `${files} entries, ${(bytes / 1e6).toFixed(1)} MB layer`,
      ),
    ];
  } finally {
    await provider.close?.();
  }
}

export const environment: BenchModule = {
  name: "environment",
  async run() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "patchbay-bench-env-"));
    // bwrap under root runs as an unprivileged user, which must pass through to the data dirs.
    fs.chmodSync(root, 0o711);
    const model = await startScriptedModel({ fallback: [[{ text: "ok" }]] });
    try {
      const repos = path.join(root, "repos");
      const files = project(root);
      const gitBase = makeRepo(repos, "acme/app", files).baseUrl;
      makeRepo(repos, "acme/plain", {
        ...SOURCES,
        "package.json": JSON.stringify({ name: "plain", version: "1.0.0", private: true }) + "\n",
      });
      const rows: Row[] = [];
      for (const sandbox of ["local", ...(hasBwrap ? (["bwrap"] as const) : [])] as const)
        for (const host of ["pooled", "cold"] as const)
          rows.push(...(await measureProvider(sandbox, host, root, model, gitBase)));
      rows.push(...(await restoreOptions(root, gitBase)));
      return { name: "environment", rows };
    } finally {
      await model.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};
