/**
 * Per-run summary files: `<dir>/<runId>.txt` holds the whole final text of a run's last turn
 * when it is longer than the bound store.json keeps (run/summary.ts). Kept out of store.json
 * for the reason patches are: the database holds small records.
 */
import fs from "node:fs";
import path from "node:path";
import { assertSafeRunId } from "./event-log.ts";
import { readIfExists, writePrivateFile } from "./private-file.ts";

export interface SummaryFiles {
  put(runId: string, text: string): Promise<void>;
  get(runId: string): Promise<string | undefined>;
  remove(runId: string): void;
}

/** Summary files in `dir`, which must exist. */
export function createSummaryFiles(dir: string): SummaryFiles {
  return {
    async put(runId, text) {
      assertSafeRunId(runId);
      await writePrivateFile(path.join(dir, `${runId}.txt`), text);
    },
    async get(runId) {
      assertSafeRunId(runId);
      return readIfExists(path.join(dir, `${runId}.txt`));
    },
    remove(runId) {
      assertSafeRunId(runId);
      fs.rmSync(path.join(dir, `${runId}.txt`), { force: true });
    },
  };
}
