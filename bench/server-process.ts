/**
 * A Patchbay server in a child process, so that load is generated from a second process
 * (the benchmark itself) and the server's CPU and RSS are its own.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { rssMbOf } from "./support.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export interface ServerProcess {
  url: string;
  pid: number;
  /** Milliseconds from spawn to listening (includes loading the store). */
  startMs: number;
  /** Resident memory of the server process, in MB. */
  rssMb(): number;
  /** Everything the server printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface ServerProcessOptions {
  env: Record<string, string>;
  /** Script to run instead of `bin/patchbay.mjs serve` (a bench server with hooks). */
  script?: string[];
  /** How long the server may take to print its URL. Default 120 s (a big store loads first). */
  startTimeoutMs?: number;
}

export async function startServerProcess(opts: ServerProcessOptions): Promise<ServerProcess> {
  const started = Date.now();
  const args = opts.script ?? ["bin/patchbay.mjs", "serve"];
  const child: ChildProcess = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Collected for the whole life of the child: callers read later lines too.
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`server did not start: ${out.slice(-2000)}`)),
      opts.startTimeoutMs ?? 120_000,
    );
    const onData = (d: Buffer) => {
      out += d.toString();
      // The serve log line is JSON with "url"; bench servers print `listening <url>`.
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out) ?? /listening (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening: ${out.slice(-2000)}`));
    });
  });
  const startMs = Date.now() - started;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return {
    url,
    pid: child.pid!,
    startMs,
    rssMb: () => rssMbOf(child.pid!),
    output: () => out,
    async stop(graceMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
