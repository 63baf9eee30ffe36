/**
 * Files in the data dir: written atomically (temp file, fsync, rename) and readable only by
 * us, because the store holds key hashes, sealed secrets and patches of private code.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";

/**
 * Write a file readable only by us, atomically. A failure (disk full, read-only) is a
 * storage_failed EngineError, so a run that hits it says so instead of blaming the agent.
 */
export async function writePrivateFile(file: string, text: string): Promise<void> {
  try {
    await writePrivateFileOnce(file, text);
  } catch (e) {
    throw storageFailed(e, file);
  }
}

/** The data dir refused a write: name the file and the system's reason. */
export function storageFailed(e: unknown, file: string): EngineError {
  if (e instanceof EngineError) return e;
  const reason = e instanceof Error ? e.message : String(e);
  return new EngineError("storage_failed", `could not write ${path.basename(file)} in the data dir: ${reason}`, {
    errno: (e as NodeJS.ErrnoException).code,
  });
}

/** Temp file, fsync, rename. */
async function writePrivateFileOnce(file: string, text: string): Promise<void> {
  // Unique temp name: two writes of one patch may overlap, and must not share a temp file.
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(6).toString("hex")}.tmp`);
  const fh = await fs.promises.open(tmp, "wx", 0o600);
  try {
    await fh.writeFile(text, "utf8");
    await fh.sync();
  } catch (e) {
    await fh.close();
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await fs.promises.rename(tmp, file);
}

/** The file's text, or undefined when it does not exist. */
export async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.promises.readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}
