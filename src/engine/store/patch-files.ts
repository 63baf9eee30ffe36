/**
 * Per-run patch files: `<dir>/<runId>.json` holds both forms of a run's patch, the text diff
 * people read and the binary-safe one `git apply` takes, so one atomic replace writes both
 * and a reader never sees one form new and the other old. Kept out of store.json: a patch
 * may be megabytes, and the database holds small records.
 */
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { assertSafeRunId } from "./event-log.ts";
import { readIfExists, writePrivateFile } from "./private-file.ts";
import { RunPatch } from "./store.ts";

export interface PatchFiles {
  put(runId: string, patch: RunPatch): Promise<void>;
  get(runId: string): Promise<RunPatch | undefined>;
  /** Delete the run's patch, in either layout. */
  remove(runId: string): void;
}

/** Patch files in `dir`, which must exist. */
export function createPatchFiles(dir: string): PatchFiles {
  return {
    async put(runId, patch) {
      assertSafeRunId(runId);
      const parsed = RunPatch.safeParse(patch);
      if (!parsed.success) throw new EngineError("internal", `refusing to store an invalid patch for run ${runId}`);
      await writePrivateFile(path.join(dir, `${runId}.json`), JSON.stringify(parsed.data));
    },

    async get(runId) {
      assertSafeRunId(runId);
      const file = path.join(dir, `${runId}.json`);
      const text = await readIfExists(file);
      if (text === undefined) return readLegacy(dir, runId);
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
        // Falls through to the schema check, which reports the file as corrupt.
      }
      const parsed = RunPatch.safeParse(json);
      if (!parsed.success) {
        throw new EngineError(
          "internal",
          `patch file ${file} is corrupt; move it away to serve the run without a patch`,
          {
            file,
          },
        );
      }
      return parsed.data;
    },

    remove(runId) {
      assertSafeRunId(runId);
      for (const name of [`${runId}.json`, `${runId}.diff`, `${runId}_bin.diff`])
        fs.rmSync(path.join(dir, name), { force: true });
    },
  };
}

/**
 * A patch written before the two forms shared a file: the text in `<runId>.diff`, the binary
 * form in `<runId>_bin.diff`. Read so that runs from an older data dir keep their patches.
 */
async function readLegacy(dir: string, runId: string): Promise<RunPatch | undefined> {
  const text = await readIfExists(path.join(dir, `${runId}.diff`));
  if (text === undefined) return undefined;
  // Older still, only the text form existed; git applies it unless a binary file changed.
  return { text, binary: (await readIfExists(path.join(dir, `${runId}_bin.diff`))) ?? text };
}
