/**
 * A real `patchbay serve` in a child process, for tests that kill it (SIGKILL, SIGTERM) and
 * start it again on the same data dir, plus process checks shared by the reliability suites.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { waitFor } from "../helpers.ts";
import { LOADED } from "./harness.ts";
import { API, parseSse, type SseFrame } from "./http.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export { API };

export interface ServeChild {
  url: string;
  /** The admin key printed on the first start of a data dir (undefined on later starts). */
  adminKey: string | undefined;
  proc: ChildProcess;
  /** Everything the child wrote to stderr so far. */
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  api(
    method: string,
    p: string,
    opts?: { key?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<{ status: number; headers: Headers; json: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** SIGTERM and wait (SIGKILL after `ms`). */
  stop(ms?: number): Promise<void>;
}

/**
 * Start `node bin/patchbay.mjs serve` on a free port; resolves once it listens. `argv` runs
 * another entry that serves (a fixture that replaces an engine part, e.g. the E2B stand-in).
 */
export async function startServe(
  env: Record<string, string>,
  argv: string[] = ["bin/patchbay.mjs", "serve"],
): Promise<ServeChild> {
  const proc = spawn(process.execPath, argv, {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/tmp",
      PATCHBAY_TEST_ROOT: process.env.PATCHBAY_TEST_ROOT ?? "",
      PORT: "0",
      PATCHBAY_LOG_LEVEL: "info",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  proc.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.once("exit", (code, signal) => r({ code, signal })),
  );
  let early: string | undefined;
  void exited.then(({ code, signal }) => (early = `serve exited (${code ?? signal}) early: ${err.slice(-3000)}`));
  const url = await waitFor(
    () => {
      if (early) throw new Error(early);
      return /"url":"(http:\/\/[^"]+)"/.exec(err)?.[1];
    },
    { timeoutMs: LOADED.hookMs, what: "patchbay serve to listen" },
  );
  const adminKey = /^\s+(pb_[A-Za-z0-9_-]+)\s*$/m.exec(err)?.[1];
  const child: ServeChild = {
    url,
    adminKey,
    proc,
    stderr: () => err,
    exited,
    async api(method, p, o = {}) {
      const headers: Record<string, string> = { ...o.headers };
      if (o.key ?? adminKey) headers.authorization = `Bearer ${o.key ?? adminKey}`;
      if (o.body !== undefined) headers["content-type"] = "application/json";
      const res = await fetch(url + p, {
        method,
        headers,
        ...(o.body !== undefined ? { body: JSON.stringify(o.body) } : {}),
      });
      const text = await res.text();
      let json: unknown;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
        json = { raw: text };
      }
      return { status: res.status, headers: res.headers, json };
    },
    async stop(ms = 30_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), ms);
      await exited;
      clearTimeout(timer);
    },
  };
  return child;
}

export { opencodeUnder } from "../helpers.ts";

/**
 * Follow a run's SSE stream in the background, collecting frames until the server closes it
 * or `stop()` is called. Used to compare what a client saw before a crash with the log after.
 */
export function follow(
  url: string,
  key: string,
  runId: string,
): { frames: () => SseFrame[]; ended: () => boolean; stop: () => void; done: Promise<void> } {
  const ac = new AbortController();
  let raw = "";
  let ended = false;
  const done = (async () => {
    try {
      const res = await fetch(`${url}${API}/runs/${runId}/stream`, {
        headers: { authorization: `Bearer ${key}` },
        signal: ac.signal,
      });
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      for (;;) {
        const { value, done: end } = await reader.read();
        if (end) return;
        raw += dec.decode(value, { stream: true });
      }
    } catch (e) {
      // Aborted by stop(), or the server died under it (the crash test kills it on purpose).
      if (ac.signal.aborted || (e instanceof TypeError && /terminated|fetch failed/.test(e.message))) return;
      throw e;
    } finally {
      ended = true;
    }
  })();
  return {
    frames: () => parseSse(raw).filter((f) => f.id !== undefined),
    ended: () => ended,
    stop: () => ac.abort(),
    done,
  };
}
