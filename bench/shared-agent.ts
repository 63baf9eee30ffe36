/**
 * Memory of idle sessions with one OpenCode server per run (the default) against one shared
 * server (PATCHBAY_SHARED_AGENT=1), `local` sandbox, no warm pool: N runs are started one
 * after the other, each does one turn (a file write) and stays idle; after each, the summed
 * RSS of every process working under the data dir (OpenCode servers and what they started)
 * is read. Baseline: one server per run; value: the shared server.
 */
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../src/config.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { startScriptedModel, type ScriptedModel } from "../test/fixtures/scripted-model.ts";
import { median, row, type BenchModule, type Row } from "./harness.ts";
import { benchRepository, benchTempDir, processTree, rssMb } from "./support.ts";

const SESSIONS = 3;
const OWNER = "bench";
const MODEL = "bench/shared";
/** Let OpenCode settle (GC, lazy work after the turn) before reading RSS. */
const SETTLE_MS = 1500;

interface Measured {
  /** Summed RSS after 1..SESSIONS sessions are idle. */
  rssMb: number[];
  /** RSS once every session has ended (the shared server stays up; per-run servers are gone). */
  afterEndMb: number;
  /** RSS after SESSIONS more runs came and went, one at a time. */
  afterChurnMb: number;
  /** POST → idle of each run. */
  idleMs: number[];
  /** opencode processes while all sessions were idle. */
  processes: number;
}

const isOpencode = (pid: number) => {
  try {
    return /opencode/.test(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8"));
  } catch {
    return false; // gone meanwhile
  }
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function measure(model: ScriptedModel, gitBase: string, root: string, shared: boolean): Promise<Measured> {
  const dataDir = fs.mkdtempSync(path.join(root, shared ? "shared-" : "separate-"));
  const config = loadConfig({
    PATCHBAY_DATA_DIR: dataDir,
    PATCHBAY_SANDBOX: "local",
    PATCHBAY_WARM_POOL_SIZE: "0",
    PATCHBAY_SHARED_AGENT: shared ? "1" : "0",
    PATCHBAY_DEFAULT_MODEL: MODEL,
    PATCHBAY_GIT_BASE_URL: gitBase,
    PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
    OPENROUTER_API_KEY: "sk-bench",
  });
  const log = createLogger({ level: "warn", write: (l) => process.stderr.write(l) });
  const pb = await openPatchbay(config, { log });
  const out: Measured = { rssMb: [], afterEndMb: 0, afterChurnMb: 0, idleMs: [], processes: 0 };
  const ids: string[] = [];
  try {
    for (let n = 0; n < SESSIONS; n++) {
      const t0 = performance.now();
      const started = await pb.engine.startRun(OWNER, { repository: "acme/bench", prompt: `write file ${n}` });
      const run = await pb.engine.waitForTurn(OWNER, started.id);
      if (run.status !== "idle") throw new Error(`run ${run.id} ended ${run.status}: ${JSON.stringify(run.error)}`);
      out.idleMs.push(performance.now() - t0);
      ids.push(run.id);
      await sleep(SETTLE_MS);
      out.rssMb.push(rssMb(processTree(dataDir)));
    }
    out.processes = processTree(dataDir).filter(isOpencode).length;
    for (const id of ids) await pb.engine.endSession(OWNER, id);
    await sleep(SETTLE_MS);
    out.afterEndMb = rssMb(processTree(dataDir));
    // Churn: as many sessions again, each ended before the next; a shared server that kept
    // ended runs' instances would grow here.
    for (let n = 0; n < SESSIONS; n++) {
      const started = await pb.engine.startRun(OWNER, { repository: "acme/bench", prompt: `again ${n}` });
      await pb.engine.waitForTurn(OWNER, started.id);
      await pb.engine.endSession(OWNER, started.id);
    }
    await sleep(SETTLE_MS);
    out.afterChurnMb = rssMb(processTree(dataDir));
  } finally {
    await pb.close();
  }
  return out;
}

export const sharedAgent: BenchModule = {
  name: "shared-agent",
  async run() {
    const root = benchTempDir("shared");
    const model = await startScriptedModel({
      scripts: {
        [MODEL]: [
          [{ toolCalls: [{ name: "write", args: { filePath: "BENCH.md", content: "bench\n" } }] }, { text: "done" }],
        ],
      },
    });
    const rows: Row[] = [];
    try {
      const gitBase = benchRepository(path.join(root, "remote"), "acme/bench", 50);
      const separate = await measure(model, gitBase, root, false);
      const shared = await measure(model, gitBase, root, true);
      const note = "baseline: a server per run; value: one shared server";
      const last = SESSIONS - 1;
      rows.push(row("RSS with 1 idle session", separate.rssMb[0]!, shared.rssMb[0]!, "MB", note));
      rows.push(
        row(
          `RSS with ${SESSIONS} idle sessions`,
          separate.rssMb[last]!,
          shared.rssMb[last]!,
          "MB",
          `${note}; the ratio`,
        ),
      );
      rows.push(
        row(
          "RSS added per extra idle session",
          (separate.rssMb[last]! - separate.rssMb[0]!) / last,
          (shared.rssMb[last]! - shared.rssMb[0]!) / last,
          "MB",
          `${note}; (RSS with ${SESSIONS} - RSS with 1) / ${last}`,
        ),
      );
      rows.push(
        row(`opencode processes with ${SESSIONS} idle sessions`, separate.processes, shared.processes, "count", note),
      );
      rows.push(
        row(
          `RSS after the ${SESSIONS} sessions ended`,
          separate.afterEndMb,
          shared.afterEndMb,
          "MB",
          "the shared server stays up (its instances disposed); per-run servers are gone",
        ),
      );
      rows.push(
        row(
          `shared: RSS after ${SESSIONS} more sessions came and went`,
          shared.afterEndMb,
          shared.afterChurnMb,
          "MB",
          "baseline: RSS after the first sessions ended; each ended run's instance is disposed",
        ),
      );
      rows.push(
        row(
          "POST → idle, first run",
          separate.idleMs[0]!,
          shared.idleMs[0]!,
          "ms",
          "engine calls; both start a server for it",
        ),
      );
      rows.push(
        row(
          "POST → idle, later runs",
          median(separate.idleMs.slice(1)),
          median(shared.idleMs.slice(1)),
          "ms",
          `median of ${last}; shared: the server is already up`,
        ),
      );
    } finally {
      await model.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
    return { name: "shared-agent", rows };
  },
};
