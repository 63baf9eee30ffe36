/**
 * Hibernation benchmark: what a hibernated session holds, and what waking it costs.
 *
 * For `local` (and `bwrap` where it runs), cold sessions of a real Patchbay on the scripted
 * model: the summed RSS of the process tree working in the run's sandbox while the session is
 * awake and idle, and once hibernated; the time from a follow-up message to the model's first
 * request on a hibernated session (a new `opencode serve` continuing the stored session), on
 * an awake one, and from a new run's start to its first request (cold start-up). The baseline
 * is the same hand-driven floor as bench/startup.ts (tuned: clone + opencode serve + prompt),
 * measured in the same process right before each measured session: on a machine shared with
 * other jobs the load changes from minute to minute, and floors taken minutes away from the
 * wakes (before and after all sessions, as this bench did) compared two different loads.
 */
import fs from "node:fs";
import path from "node:path";
import { loadConfig } from "../src/config.ts";
import { createLogger, openPatchbay } from "../src/engine/index.ts";
import { startScriptedModel, type ScriptedModel } from "../test/fixtures/scripted-model.ts";
import { median, row, type BenchModule, type Row } from "./harness.ts";
import { baseline, hasBwrap, type Timing } from "./startup.ts";
import { benchEnv, benchRepository, benchTempDir, processTree, rssMb } from "./support.ts";

const RUNS = 5;
const FILES = 300;
const OWNER = "bench";

interface Sample {
  /** The hand-driven floor, measured right before this session. */
  floor: Timing;
  coldFirstMs: number;
  awakeRssMb: number;
  hibernatedRssMb: number;
  /** Patchbay's own RSS change across the hibernation (its bookkeeping; noisy, GC). */
  ownDeltaMb: number;
  wakeFirstMs: number;
  awakeFollowUpFirstMs: number;
}

const turn = (file: string) => [
  { toolCalls: [{ name: "write", args: { filePath: file, content: "bench\n" } }] },
  { text: "done" },
];

async function sessions(
  model: ScriptedModel,
  gitBase: string,
  root: string,
  sandbox: "local" | "bwrap",
  floor: () => Promise<Timing>,
): Promise<Sample[]> {
  const dataDir = fs.mkdtempSync(path.join(root, `${sandbox}-`));
  const config = loadConfig({
    ...benchEnv({ dataDir, sandbox, gitBase, modelBaseUrl: model.baseUrl }),
    // Hibernated when the benchmark asks (engine.hibernate), not on a timer.
    PATCHBAY_HIBERNATE_AFTER_MS: "0",
    PATCHBAY_LOG_LEVEL: "warn",
  });
  const pb = await openPatchbay(config, { log: createLogger({ level: "warn" }) });
  const samples: Sample[] = [];
  try {
    // One unmeasured run first: it fills the mirror cache, as on a server that has seen the repository.
    for (let n = 0; n <= RUNS; n++) {
      const modelId = `bench/hibernate-${sandbox}-${n}`;
      model.script(modelId, [turn("ONE.md"), turn("TWO.md"), turn("THREE.md")]);
      const timed = async (send: () => Promise<unknown>) => {
        const t0 = performance.now();
        const first = model.nextRequest(modelId).then(() => performance.now() - t0);
        await send();
        return first;
      };
      const until = async (id: string) => {
        const run = await pb.engine.waitForTurn(OWNER, id);
        if (run.status !== "idle") throw new Error(`run ${id} ended ${run.status}: ${JSON.stringify(run.error)}`);
      };
      const floorNow = n > 0 ? await floor() : undefined;
      let id = "";
      const coldFirst = await timed(async () => {
        id = (
          await pb.engine.startRun(OWNER, {
            repository: "acme/bench",
            prompt: "write one",
            modelId,
            validationMode: "minimal",
          })
        ).id;
      });
      await until(id);
      const tree = () => rssMb(processTree(path.join(dataDir, "sandboxes", id)));
      const awakeRssMb = tree();
      // A follow-up on the awake session, for comparison with a woken one.
      const awakeFollowUp = await timed(() => pb.engine.sendMessage(OWNER, id, { prompt: "write two" }));
      await until(id);
      const own = process.memoryUsage().rss / 2 ** 20;
      const napping = await pb.engine.hibernate(OWNER, id);
      if (!napping.hibernated) throw new Error(`run ${id} did not hibernate`);
      const hibernatedRssMb = tree();
      const ownDeltaMb = process.memoryUsage().rss / 2 ** 20 - own;
      const wake = await timed(() => pb.engine.sendMessage(OWNER, id, { prompt: "write three" }));
      await until(id);
      if (floorNow)
        samples.push({
          floor: floorNow,
          coldFirstMs: await coldFirst,
          awakeRssMb,
          hibernatedRssMb,
          ownDeltaMb,
          wakeFirstMs: await wake,
          awakeFollowUpFirstMs: await awakeFollowUp,
        });
      await pb.engine.endSession(OWNER, id);
    }
  } finally {
    await pb.close();
  }
  return samples;
}

export const hibernate: BenchModule = {
  name: "hibernate",
  async run() {
    const root = benchTempDir("hibernate");
    const model = await startScriptedModel();
    const rows: Row[] = [];
    try {
      const gitBase = benchRepository(path.join(root, "remote"), "acme/bench", FILES, 20);
      await baseline(model, gitBase, root, "tuned", -1); // warms the binary, unmeasured
      let floors = 0;
      const floor = () => baseline(model, gitBase, root, "tuned", floors++);
      const measured: { sandbox: "local" | "bwrap"; s: Sample[] }[] = [];
      for (const sandbox of hasBwrap() ? (["local", "bwrap"] as const) : (["local"] as const))
        measured.push({ sandbox, s: await sessions(model, gitBase, root, sandbox, floor) });
      for (const { sandbox, s } of measured) {
        const m = (f: (x: Sample) => number) => median(s.map(f));
        const firstFloor = m((x) => x.floor.firstRequestMs);
        const rssFloor = m((x) => x.floor.rssMb);
        const floorNote = `baseline: tuned floor of bench/startup.ts (clone + opencode serve + prompt), measured right before each session`;
        // Each session against its own floor: the spread says how much the load moved.
        const paired = s.map((x) => x.wakeFirstMs / x.floor.firstRequestMs).sort((a, b) => a - b);
        const pairedNote = `each wake / its floor: ${paired.map((r) => r.toFixed(2)).join(", ")}`;
        const note = `median of ${RUNS}`;
        rows.push(
          row(
            `${sandbox}: RSS of an awake idle session`,
            rssFloor,
            m((x) => x.awakeRssMb),
            "MB",
            `${note}; ${floorNote}`,
          ),
          row(
            `${sandbox}: RSS of a hibernated session (process tree)`,
            m((x) => x.awakeRssMb),
            m((x) => x.hibernatedRssMb),
            "MB",
            `${note}; baseline: the same session awake; limit 50 MB`,
          ),
          row(
            `${sandbox}: Patchbay's own RSS change on hibernating`,
            m((x) => x.awakeRssMb),
            m((x) => x.ownDeltaMb),
            "MB",
            `${note}; baseline: the session awake; GC makes this noisy, it may be negative`,
          ),
          row(
            `${sandbox}: follow-up on a hibernated session → first model request`,
            firstFloor,
            m((x) => x.wakeFirstMs),
            "ms",
            `${note}; ${floorNote}; ${pairedNote}; limit 1.0×`,
          ),
          row(
            `${sandbox}: follow-up on a hibernated session vs a cold run's start`,
            m((x) => x.coldFirstMs),
            m((x) => x.wakeFirstMs),
            "ms",
            `${note}; baseline: this Patchbay's new cold run, start → first model request`,
          ),
          row(
            `${sandbox}: follow-up on an awake session → first model request`,
            firstFloor,
            m((x) => x.awakeFollowUpFirstMs),
            "ms",
            `${note}; ${floorNote}`,
          ),
        );
      }
    } finally {
      await model.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
    return { name: "hibernate", rows };
  },
};
