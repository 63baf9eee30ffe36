/**
 * A run's setup: the commands that make its workspace ready before the agent's first prompt
 * (dependencies installed), run in the sandbox as its user, with network, under one time
 * limit for all of them. Which commands: the run's `environment.setup`, else the repository's
 * `.patchbay.json`, else the detected install step (validation/detect.ts `planSetup`).
 *
 * With a `cache`, a layer kept by an earlier run with the same key is restored instead
 * (environment/cache.ts), and a successful setup's paths are kept for the next. What setup
 * adds to the workspace is excluded from the run's patch (`.git/info/exclude`), so installed
 * dependencies never land in a diff. Events: `setup.started`, `setup.cached`,
 * `setup.finished`; the outcome is stored as `run.setup`. A failure throws `setup_failed`
 * (the output tail stays on `run.setup`).
 */
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import type { BuilderEventData } from "../events/schema.ts";
import type { Logger } from "../log.ts";
import type { RunRecord } from "../run/schema.ts";
import type { RunWriter } from "../run/writer.ts";
import type { Sandbox } from "../sandbox/sandbox.ts";
import type { RunStore } from "../store/store.ts";
import { InvalidSetupError, planSetup } from "../validation/detect.ts";
import { readFacts } from "../validation/validation.ts";
import type { EnvironmentCache } from "./cache.ts";
import type { RunEnvironmentRuntime } from "./index.ts";
import type { SetupSpec, SetupState } from "./schema.ts";

export interface Setups {
  /**
   * Make the run's fresh workspace ready (run or restore its setup) and store the outcome on
   * the run, which is returned. Throws EngineError `setup_failed`. `workspaceReady` is called
   * once a restored layer is in place, or before setup's commands run (session/host.ts).
   */
  prepare(run: RunRecord, sandbox: Sandbox, signal: AbortSignal, workspaceReady?: () => void): Promise<RunRecord>;
  /** The snapshot the run's sandbox should start from (providers with snapshots), if any. */
  baseFor(run: RunRecord): Promise<string | undefined>;
}

export interface SetupDeps {
  config: Pick<Config, "setupTimeoutMs" | "hostProxyEnv">;
  store: RunStore;
  writer: RunWriter;
  cache: EnvironmentCache;
  environment: RunEnvironmentRuntime;
  log: Logger;
}

/** Output kept on `run.setup.outputTail`: the end is what explains a failure. */
const OUTPUT_TAIL = 4000;
const GIT_SAFE = ["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"];

const state = (s: Partial<SetupState> & Pick<SetupState, "status">): SetupState => ({
  cached: false,
  key: null,
  durationMs: null,
  outputTail: "",
  ...s,
});

export function createSetups(deps: SetupDeps): Setups {
  const { store, writer, cache, environment, log } = deps;

  return {
    baseFor: (run) => cache.baseFor(run.repository.fullName),

    async prepare(run, sandbox, signal, workspaceReady = () => undefined) {
      const plan = await planFor(run, sandbox);
      if (!plan?.spec.cache) await cache.restore(null, sandbox); // a snapshot's layer this run has no use for
      if (!plan) return store.updateRun(run.id, { setup: state({ status: "skipped" }) });
      const { spec, requires } = plan;
      const emit = (data: BuilderEventData) =>
        writer.emit(run.id, { type: "builder.event", turn: run.turnCount, data });
      const t0 = performance.now();
      const elapsed = () => Math.round(performance.now() - t0);
      await emit({ kind: "setup.started", commands: spec.commands.map((c) => environment.mask(c, run)) });
      run = await store.updateRun(run.id, { setup: state({ status: "running" }) });

      const key = spec.cache
        ? await cache.key({
            repository: run.repository.fullName,
            setup: { ...spec, cache: spec.cache },
            commit: run.baseSha!,
            sandbox,
          })
        : null;
      if (key && (await restore(key, spec, sandbox, run))) {
        workspaceReady();
        // The restored paths are what setup added (a fresh checkout has none of them untracked).
        await excludeEntries(sandbox, spec.cache!.paths);
        await emit({ kind: "setup.cached", key });
        const durationMs = elapsed();
        await emit({ kind: "setup.finished", status: "cached", durationMs, exitCode: 0 });
        log.info("setup restored from cache", { runId: run.id, key, durationMs });
        return store.updateRun(run.id, { setup: state({ status: "cached", cached: true, key, durationMs }) });
      }

      workspaceReady();
      const before = await untracked(sandbox);
      // The host's proxy and TLS roots (an install must get through the same proxy as our git).
      const env = { ...deps.config.hostProxyEnv, ...(await environment.env(run)), CI: "1" };
      const timeoutMs = spec.timeoutMs ?? deps.config.setupTimeoutMs;
      let output = "";
      let exitCode: number | null = 0;
      for (const [i, command] of spec.commands.entries()) {
        if (signal.aborted) throw new EngineError("cancelled", "the run was cancelled");
        const tool = requires?.[i];
        if (tool && !(await available(sandbox, tool))) {
          output += `$ ${command}\n${tool} is not installed in the sandbox; skipped\n`;
          continue;
        }
        const left = timeoutMs - elapsed();
        const r = left > 0 ? await sandbox.exec(["sh", "-c", command], { env, timeoutMs: left, signal }) : undefined;
        output = keepTail(`${output}$ ${command}\n${r ? r.stdout + r.stderr : ""}`);
        if (signal.aborted) throw new EngineError("cancelled", "the run was cancelled");
        if (!r || r.timedOut) {
          output += `\n[setup killed after ${timeoutMs} ms]`;
          exitCode = null;
          break;
        }
        if (r.exitCode !== 0) {
          exitCode = r.exitCode;
          break;
        }
      }
      const outputTail = environment.mask(keepTail(output), run);
      const durationMs = elapsed();
      if (exitCode !== 0) {
        await emit({ kind: "setup.finished", status: "failed", durationMs, exitCode });
        await store.updateRun(run.id, { setup: state({ status: "failed", key, durationMs, outputTail }) });
        throw new EngineError(
          "setup_failed",
          exitCode === null
            ? `setup did not finish within ${timeoutMs} ms`
            : `setup failed: a command exited with ${exitCode} (see setup.outputTail)`,
          { exitCode },
        );
      }
      await exclude(sandbox, before);
      if (key && spec.cache) {
        // A cache that cannot keep the layer costs the next run its time, never this run.
        await cache.save(key, run.repository.fullName, sandbox, spec.cache.paths).catch((e: unknown) => {
          log.warn("could not keep the setup's cache layer", { runId: run.id, key, error: e });
        });
      }
      await emit({ kind: "setup.finished", status: "succeeded", durationMs, exitCode: 0 });
      log.info("setup finished", { runId: run.id, key, durationMs });
      return store.updateRun(run.id, { setup: state({ status: "succeeded", key, durationMs, outputTail }) });
    },
  };

  /** Restore layer `key`; a layer that fails to unpack is dropped and setup runs instead. */
  async function restore(key: string, spec: SetupSpec, sandbox: Sandbox, run: RunRecord): Promise<boolean> {
    try {
      return await cache.restore(key, sandbox);
    } catch (e) {
      log.warn("a setup cache layer failed to restore; dropped, running setup", { runId: run.id, key, error: e });
      await cache.drop(key);
      await sandbox.exec(["rm", "-rf", "--", ...(spec.cache?.paths ?? [])], { timeoutMs: 10 * 60_000 });
      return false;
    }
  }

  /** The run's own setup, else the repository's (or the detected one). */
  async function planFor(
    run: RunRecord,
    sandbox: Sandbox,
  ): Promise<{ spec: SetupSpec; requires?: string[] } | undefined> {
    if (run.environment?.setup) return { spec: run.environment.setup };
    try {
      return planSetup(await readFacts(sandbox));
    } catch (e) {
      if (!(e instanceof InvalidSetupError)) throw e;
      await store.updateRun(run.id, { setup: state({ status: "failed", outputTail: e.message }) });
      throw new EngineError("setup_failed", e.message);
    }
  }
}

const keepTail = (s: string) => (s.length > OUTPUT_TAIL ? s.slice(-OUTPUT_TAIL) : s);

async function available(sandbox: Sandbox, bin: string): Promise<boolean> {
  const r = await sandbox.exec(["sh", "-c", 'command -v "$1" >/dev/null 2>&1', "sh", bin], { timeoutMs: 10_000 });
  return r.exitCode === 0;
}

/** Untracked, not ignored entries of the workspace (a wholly new directory as one `dir/`). */
async function untracked(sandbox: Sandbox): Promise<Set<string>> {
  const r = await sandbox.exec(
    ["git", ...GIT_SAFE, "ls-files", "--others", "--exclude-standard", "--directory", "-z"],
    {
      timeoutMs: 60_000,
    },
  );
  return new Set(r.stdout.split("\0").filter(Boolean));
}

/**
 * Keep what setup added out of the run's patch: each new untracked entry becomes an anchored
 * pattern in `.git/info/exclude` (the diff is taken with `git add -A`, which honours it).
 */
async function exclude(sandbox: Sandbox, before: Set<string>): Promise<void> {
  await excludeEntries(
    sandbox,
    [...(await untracked(sandbox))].filter((e) => !before.has(e)),
  );
}

/** Append anchored patterns for workspace entries (paths; a directory may end in `/`) to `.git/info/exclude`. */
async function excludeEntries(sandbox: Sandbox, entries: string[]): Promise<void> {
  const added = entries.filter((e) => !e.includes("\n"));
  if (added.length === 0) return;
  const patterns = added.map((e) => "/" + e.replace(/[\\*?[\]!#]/g, "\\$&").replace(/ $/, "\\ ")).join("\n");
  const r = await sandbox.exec(
    ["sh", "-c", 'f=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$f")" && cat >> "$f"'],
    { stdin: `\n# added by Patchbay's setup\n${patterns}\n`, timeoutMs: 60_000 },
  );
  if (r.exitCode !== 0)
    throw new EngineError("setup_failed", `cannot exclude setup's files from the patch: ${r.stderr.trim()}`);
}
