/**
 * The data-dir lock: one Patchbay process owns a data dir, because two writers on one
 * store lose updates. `<dataDir>/patchbay.lock` is created exclusively and holds the
 * owner's pid and start time. A lock whose owner is gone (kill -9, crash, reboot) is taken
 * over at once: liveness is checked by pid, not by mtime age, so a restart is never refused.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import * as z from "zod";
import { EngineError } from "../errors.ts";

export const LOCK_FILE = "patchbay.lock";

const LockContent = z.object({
  pid: z.number().int().positive(),
  /** When the owning process started (ISO), for people reading the file. */
  startedAt: z.string(),
  /**
   * Linux only: the process start time from /proc/<pid>/stat plus the boot id. Together with
   * the pid they name one process exactly, so a pid reused after a crash (pid 1 in a
   * container, every time) is not mistaken for the old owner.
   */
  procStart: z.string().optional(),
  /** Tells this lock apart from a later one, so release never removes another owner's lock. */
  token: z.string(),
});
type LockContent = z.infer<typeof LockContent>;

export interface DataDirLock {
  readonly file: string;
  /** Remove the lock file if it is still ours. Safe to call twice. */
  release(): Promise<void>;
}

/**
 * Take `<dataDir>/patchbay.lock` (creating the dir, 0700, if needed).
 * Throws EngineError `store_locked` when a live process, this one included, holds it.
 */
export async function acquireDataDirLock(dataDir: string): Promise<DataDirLock> {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, LOCK_FILE);
  const me: LockContent = {
    pid: process.pid,
    startedAt: new Date(Date.now() - process.uptime() * 1000).toISOString(),
    procStart: procStartOf(process.pid),
    token: crypto.randomBytes(12).toString("base64url"),
  };

  // A few rounds: each round either creates the lock, or finds a live owner (throw), or
  // removes a stale lock and tries again. Another process racing us for a stale lock can
  // make a round fail, hence more than one.
  for (let attempt = 0; attempt < 5; attempt++) {
    if (tryCreate(file, me)) return handle(file, me.token);
    const holder = await readHolder(file);
    if (holder === "gone") continue;
    if (holder !== "unreadable" && isAlive(holder)) {
      const who =
        holder.pid === process.pid
          ? `is already open in this process (pid ${holder.pid}); close the other store first`
          : `is in use by another Patchbay process (pid ${holder.pid}); stop it or set PATCHBAY_DATA_DIR to another directory`;
      throw new EngineError("store_locked", `data dir ${dataDir} ${who}`, { dataDir, pid: holder.pid });
    }
    // Stale: the owner died without releasing (or left an unreadable file). Remove only the
    // file we judged, not one a racing process has just created in its place.
    removeIfUnchanged(file, holder);
  }
  throw new EngineError(
    "store_locked",
    `data dir ${dataDir}: could not take ${file} (another process keeps racing for it)`,
    {
      dataDir,
    },
  );
}

function tryCreate(file: string, me: LockContent): boolean {
  let fd: number;
  try {
    fd = fs.openSync(file, "wx", 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  }
  try {
    fs.writeSync(fd, JSON.stringify(me) + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return true;
}

/**
 * The current holder of the lock, "gone" if the file vanished meanwhile, or "unreadable"
 * if it stays empty or garbled (a crash between create and write).
 */
async function readHolder(file: string): Promise<LockContent | "gone" | "unreadable"> {
  // A holder that has just created the file may not have written it yet: give it a moment
  // before calling an empty file stale.
  for (let i = 0; i < 5; i++) {
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return "gone";
      throw e;
    }
    const parsed = LockContent.safeParse(safeJson(text));
    if (parsed.success) return parsed.data;
    await new Promise((r) => setTimeout(r, 20));
  }
  return "unreadable";
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    // Garbled lock content is a normal state (torn write); the caller treats it as unreadable.
    if (e instanceof SyntaxError) return undefined;
    throw e;
  }
}

/** True when the process that wrote `holder` still runs. */
function isAlive(holder: LockContent): boolean {
  try {
    process.kill(holder.pid, 0);
  } catch (e) {
    // EPERM: the pid exists but belongs to another user, so it is alive.
    if ((e as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (holder.procStart === undefined) return true;
  const now = procStartOf(holder.pid);
  // Unknown here (no /proc): trust the pid alone.
  return now === undefined || now === holder.procStart;
}

function removeIfUnchanged(file: string, judged: LockContent | "unreadable"): void {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  const current = LockContent.safeParse(safeJson(text));
  const same = judged === "unreadable" ? !current.success : current.success && current.data.token === judged.token;
  if (!same) return;
  try {
    fs.unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

function handle(file: string, token: string): DataDirLock {
  let released = false;
  return {
    file,
    async release() {
      if (released) return;
      released = true;
      let text: string;
      try {
        text = await fs.promises.readFile(file, "utf8");
      } catch (e) {
        // Someone removed it by hand: nothing left to release.
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
        throw e;
      }
      const current = LockContent.safeParse(safeJson(text));
      if (current.success && current.data.token === token) await fs.promises.rm(file, { force: true });
    },
  };
}

/**
 * `<boot id>:<start ticks>` of a process on Linux, undefined elsewhere or if it is gone.
 * Field 22 of /proc/<pid>/stat; the command name (field 2) may hold spaces, so fields are
 * counted after its closing parenthesis.
 */
function procStartOf(pid: number): string | undefined {
  let stat: string;
  let boot: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    boot = fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch (e) {
    // No procfs (macOS, Windows) or the process is gone: the caller falls back to the pid.
    if (["ENOENT", "EACCES", "ESRCH"].includes((e as NodeJS.ErrnoException).code ?? "")) return undefined;
    throw e;
  }
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After the name, state is field 3; starttime (field 22) is index 19 here.
  const ticks = fields[19];
  return ticks ? `${boot}:${ticks}` : undefined;
}
