/**
 * A background command in an E2B VM (`opencode serve`), as a {@link ProcessHandle}: started
 * by the sandbox's `spawn`, or taken back by pid after a restart (`reconnect`).
 */
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { E2bCommandHandle } from "./e2b-sdk.ts";
import type { ProcessHandle } from "./sandbox.ts";

export class E2bProcess implements ProcessHandle {
  pid: number | undefined;
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private resolveExit!: (v: { code: number | null; signal: string | null }) => void;
  private handle: Promise<E2bCommandHandle | undefined> = Promise.resolve(undefined);
  private readonly listeners: ((chunk: string, stream: "stdout" | "stderr") => void)[] = [];
  private failure = "";

  constructor(private readonly log: Logger) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  attach(started: Promise<E2bCommandHandle>): void {
    this.handle = started.then(
      (h) => {
        this.pid = h.pid;
        h.wait().then(
          (r) => this.resolveExit({ code: r.exitCode, signal: null }),
          (e: { exitCode?: number }) =>
            this.resolveExit({
              code: typeof e.exitCode === "number" ? e.exitCode : null,
              signal: typeof e.exitCode === "number" ? null : "SIGKILL",
            }),
        );
        return h;
      },
      (e: unknown) => {
        this.failure = (e as Error).message;
        this.emit(`${(e as Error).message}\n`, "stderr");
        this.resolveExit({ code: 127, signal: null });
        return undefined;
      },
    );
  }

  /** Resolves once the command runs; throws sandbox_failed if it could not start (or be reached). */
  async started(): Promise<void> {
    if ((await this.handle) === undefined) {
      throw new EngineError("sandbox_failed", `could not reach the process in the e2b sandbox: ${this.failure}`);
    }
  }

  emit(chunk: string, stream: "stdout" | "stderr"): void {
    for (const l of this.listeners) l(chunk, stream);
  }

  onOutput(listener: (chunk: string, stream: "stdout" | "stderr") => void): void {
    this.listeners.push(listener);
  }

  private detaching: Promise<void> | undefined;

  /** Stop following the command (idempotent: the agent and its sandbox both let go of it). */
  detach(): Promise<void> {
    return (this.detaching ??= this.disconnect());
  }

  private async disconnect(): Promise<void> {
    const h = await this.handle;
    try {
      await h?.disconnect();
    } catch (e) {
      this.log.warn("could not disconnect from an e2b command", { pid: h?.pid, error: e });
    }
  }

  async kill(): Promise<void> {
    const h = await this.handle;
    if (h) {
      try {
        await h.kill();
      } catch (e) {
        this.log.warn("could not kill an e2b command", { pid: h.pid, error: e });
      }
    }
    this.resolveExit({ code: null, signal: "SIGKILL" });
    await this.exited;
  }
}
