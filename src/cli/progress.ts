/**
 * Progress of a run on stderr. On a terminal: a spinner line showing the run's state, with a
 * line printed above it for each agent step (a tool done, a file edited, a status change).
 * Elsewhere (CI logs, pipes): the same steps as plain lines, no control characters.
 */
import type { RunEvent } from "../../client/index.ts";
import { describeStep } from "../engine/index.ts";

export interface Progress {
  /** An event of the run: a step line, and the spinner's status. */
  event(ev: RunEvent): void;
  /** A line of its own (a reconnection, the run's id). */
  note(text: string): void;
  /** Stop the spinner and clear its line. */
  stop(): void;
}

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

export interface ProgressOptions {
  /** Where lines go (stderr). */
  out: NodeJS.WritableStream & { isTTY?: boolean };
  /** Draw a spinner; default: whether `out` is a terminal. */
  tty?: boolean;
  /** Silence everything (`--json` keeps stderr for errors only). */
  quiet?: boolean;
}

export function createProgress(opts: ProgressOptions): Progress {
  const { out } = opts;
  const tty = opts.tty ?? out.isTTY === true;
  if (opts.quiet) return { event: () => undefined, note: () => undefined, stop: () => undefined };
  let status = "starting";
  let frame = 0;
  let timer: NodeJS.Timeout | undefined;
  const clear = () => tty && out.write("\r\x1b[2K");
  const draw = () => tty && out.write(`\r\x1b[2K${FRAMES[frame++ % FRAMES.length]} ${status}`);
  const line = (text: string) => {
    clear();
    out.write(`${text}\n`);
    draw();
  };
  if (tty) {
    timer = setInterval(draw, 100);
    timer.unref();
  }
  return {
    event(ev) {
      // RunEvent from the client is the engine's event, as the OpenAPI document describes it.
      const step = describeStep(ev as Parameters<typeof describeStep>[0]);
      if (ev.type === "run.status") status = `${ev.data.status} (turn ${ev.turn})`;
      else if (ev.data.kind === "tool" && ev.data.status === "running") status = `running ${ev.data.tool}`;
      if (step) line(tty ? `  ${step}` : `[#${ev.id}] ${step}`);
      else draw();
    },
    note: (text) => line(text),
    stop() {
      if (timer) clearInterval(timer);
      clear();
    },
  };
}
