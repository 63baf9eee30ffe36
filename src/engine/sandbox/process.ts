/**
 * Process plumbing of the sandboxes whose processes run on this host (`host.ts`, the base of
 * `local` and `bwrap`): process groups that die whole, capped output, stdin, and cleanup of
 * what a dead Patchbay left behind (Linux `/proc`).
 */
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { ProcessHandle } from "./sandbox.ts";

export function writeStdin(child: ChildProcess, stdin: string | undefined, log: Logger): void {
  if (stdin === undefined || !child.stdin) return;
  // A command may exit without reading its input; that shows in its exit code, not here.
  child.stdin.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE") log.warn("could not write to a command's stdin", { error: e });
  });
  child.stdin.end(stdin);
}

/**
 * A process started as the leader of its own process group, so that killing it kills
 * everything it started.
 */
export class GroupProcess implements ProcessHandle {
  readonly pid: number | undefined;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  /** The process itself has ended (its output may still be open, held by what it started). */
  private readonly ended: Promise<void>;
  running = true;
  spawnError: Error | undefined;
  private readonly listeners: ((chunk: string, stream: "stdout" | "stderr") => void)[] = [];
  private ending: Promise<void> | undefined;
  private killing: Promise<void> | undefined;

  constructor(
    private readonly child: ChildProcess,
    private readonly graceMs: number,
    private readonly log: Logger,
  ) {
    this.pid = child.pid;
    for (const stream of ["stdout", "stderr"] as const) {
      const s = child[stream];
      if (!s) continue;
      // Decoding in the stream keeps a multi-byte character split across chunks whole.
      s.setEncoding("utf8");
      s.on("data", (chunk: string) => {
        for (const l of this.listeners) l(chunk, stream);
      });
    }
    this.ended = new Promise((resolve) => {
      child.once("exit", () => resolve());
      child.once("error", () => resolve());
    });
    this.exited = new Promise((resolve) => {
      child.on("error", (e) => {
        this.spawnError = e;
      });
      // "close" waits for the output pipes too, so no output arrives after `exited`.
      child.on("close", (code, signal) => {
        this.running = false;
        // A program that could not start reports a negative errno; say 127 like a shell.
        resolve({ code: this.spawnError ? 127 : code, signal });
      });
    });
  }

  onOutput(listener: (chunk: string, stream: "stdout" | "stderr") => void): void {
    this.listeners.push(listener);
  }

  /** Send a signal to the whole process group; a group already gone is fine. */
  signalGroup(signal: NodeJS.Signals): void {
    if (this.pid === undefined) return;
    try {
      process.kill(-this.pid, signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ESRCH")
        this.log.warn("could not signal process group", { pid: this.pid, signal, error: e });
    }
  }

  /** SIGTERM, SIGKILL after the grace period; resolves once the process itself has ended. */
  end(): Promise<void> {
    this.ending ??= (async () => {
      this.signalGroup("SIGTERM");
      const timer = setTimeout(() => this.signalGroup("SIGKILL"), this.graceMs);
      await this.ended;
      clearTimeout(timer);
      // The leader is gone; children that ignored SIGTERM may still hold the group.
      this.signalGroup("SIGKILL");
    })();
    return this.ending;
  }

  /**
   * `end`, then wait for the output to close. A process that left the group (setsid, or
   * bwrap's inner process orphaned before its PDEATHSIG was set) may hold it open: the
   * sandbox kills those by where they run; after a bounded wait the output is closed here.
   */
  kill(): Promise<void> {
    this.killing ??= (async () => {
      await this.end();
      if (await settles(this.exited, OUTPUT_CLOSE_WAIT_MS)) return;
      this.log.warn("a process's output stayed open after it ended; closing it", { pid: this.pid });
      this.child.stdout?.destroy();
      this.child.stderr?.destroy();
      await this.exited;
    })();
    return this.killing;
  }
}

/** How long a kill waits for a process's output to close once the process has ended. */
const OUTPUT_CLOSE_WAIT_MS = 2000;

function settles(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** Keeps the last `cap` characters of a stream. */
export class Tail {
  private chunks: string[] = [];
  private size = 0;
  constructor(private readonly cap: number) {}
  push(chunk: string): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.cap && this.chunks.length > 1) this.size -= this.chunks.shift()!.length;
    if (this.size > this.cap) {
      this.chunks[0] = this.chunks[0]!.slice(this.size - this.cap);
      this.size = this.cap;
    }
  }
  text(): string {
    return this.chunks.join("");
  }
}

/**
 * Remove a directory tree even when an agent made parts of it read-only (`chmod -w`), which
 * would otherwise make `rm` fail with EACCES and leave the sandbox behind.
 */
export async function removeTree(dir: string): Promise<void> {
  try {
    await fs.promises.rm(dir, { recursive: true, force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EACCES" && (e as NodeJS.ErrnoException).code !== "EPERM") throw e;
    makeWritable(dir);
    await fs.promises.rm(dir, { recursive: true, force: true });
  }
}

function makeWritable(dir: string): void {
  fs.chmodSync(dir, 0o700);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) makeWritable(path.join(dir, entry.name));
  }
}

/**
 * Give a tree Patchbay made to `user`: every entry, symbolic links themselves (never their
 * targets), without following links into directories.
 */
export function chownTree(dir: string, user: { uid: number; gid: number }): void {
  fs.lchownSync(dir, user.uid, user.gid);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) chownTree(p, user);
    else fs.lchownSync(p, user.uid, user.gid);
  }
}

/**
 * Kill the processes of a sandbox that are no longer ours to track (after a restart, or one
 * that left its group): found by working directory under one of `roots`, or by a command
 * line naming a path under one (bwrap's binds; inside its mount namespace the working
 * directory reads differently). Linux `/proc`.
 */
export function killStrays(roots: string | readonly string[], log: Logger): void {
  const under = (typeof roots === "string" ? [roots] : roots).map((r) => path.resolve(r));
  const within = (p: string) => under.some((r) => p === r || p.startsWith(r + path.sep));
  let pids: string[];
  try {
    pids = fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid);
  } catch (e) {
    // No /proc (macOS): nothing to look at; the directory is still removed.
    log.debug("cannot list processes", { error: e });
    return;
  }
  for (const pid of pids) {
    let cwd: string;
    let args: string[];
    try {
      cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
      args = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    } catch (e) {
      // Gone meanwhile, or another user's process: neither is one of ours.
      if (["ENOENT", "EACCES", "ESRCH"].includes((e as NodeJS.ErrnoException).code ?? "")) continue;
      throw e;
    }
    if (!within(cwd) && !args.some(within)) continue;
    try {
      process.kill(Number(pid), "SIGKILL");
      log.info("killed stray sandbox process", { pid: Number(pid) });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e;
    }
  }
}

/** True while `pid` exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw e;
  }
}

/**
 * Every process below `roots` (Linux `/proc`), the roots included. Exported for tests and
 * the benchmark, which measure what a sandbox holds.
 */
export function descendants(roots: readonly number[]): number[] {
  if (!roots.length) return [];
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [...roots];
    throw e;
  }
  for (const entry of entries) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ESRCH") continue;
      throw e;
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [...roots];
  while (queue.length) {
    const pid = queue.shift()!;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** A TCP port free on the host's loopback right now (the OS picks it; the caller binds it next). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const addr = server.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      server.close(() =>
        port ? resolve(port) : reject(new EngineError("sandbox_failed", "could not find a free port")),
      );
    });
  });
}
