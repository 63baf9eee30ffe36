/**
 * Per-run event logs: one append-only JSONL file per run, `<dir>/<runId>.jsonl`, one event
 * per line. Kept out of the database: an append to a file is cheaper than a committed insert
 * (docs/ARCHITECTURE.md), and costs the same at event 10 and at event 100,000.
 *
 * Crash safety: a kill -9 mid-append can leave a torn last line. The first time a run's log
 * is opened in a process, bytes after the last newline are cut off (so the next append does
 * not glue onto them), and every line is validated as a RunEvent on read, so a bad line is
 * skipped rather than served.
 *
 * Reads: a byte offset is remembered for every event appended by this process. Offsets of the
 * events already on disk are learnt by reading the file backwards from the end, only as far
 * as a read reaches back, and kept. A read then binary-searches the first wanted id and reads
 * only its bytes: resuming near the end of a long log after a restart stays cheap.
 */
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { RunEvent, type NewRunEvent } from "../events/schema.ts";
import type { Logger } from "../log.ts";

export interface EventLogs {
  append(runId: string, event: NewRunEvent): RunEvent;
  /** At most `limit` events after `after`, and at most `maxBytes` of lines (the first event always). */
  read(runId: string, after: number, limit: number, maxBytes: number): Promise<RunEvent[]>;
  lastId(runId: string): number;
  /** Delete the run's log and forget it: a later append starts again at id 1. */
  remove(runId: string): void;
}

export interface EventLogsOptions {
  /** Directory of the `.jsonl` files; must exist. */
  dir: string;
  log: Logger;
  now: () => Date;
}

/** What this process knows about one run's log file. */
interface RunLog {
  file: string;
  lastId: number;
  /** Bytes in the file; always the end of a complete line. */
  size: number;
  /**
   * Ids and byte offsets of the events from byte `indexedFrom` to the end, ids ascending.
   * Every event with an id above `coveredAbove` is in them.
   */
  ids: number[];
  offsets: number[];
  indexedFrom: number;
  coveredAbove: number;
  /** The backward pass in progress, if any; passes run one at a time. */
  extending?: Promise<void>;
}

const TAIL_WINDOW = 64 * 1024;
const READ_WINDOW = 256 * 1024;
const NEWLINE = 0x0a;

export function createEventLogs(opts: EventLogsOptions): EventLogs {
  const runs = new Map<string, RunLog>();

  /** The run's log state, opening (and repairing) the file the first time. Synchronous. */
  function open(runId: string): RunLog {
    const known = runs.get(runId);
    if (known) return known;
    const file = path.join(opts.dir, `${runId}.jsonl`);
    let size = 0;
    let lastId = 0;
    if (fs.existsSync(file)) {
      const fd = fs.openSync(file, "r+");
      try {
        size = cutTornTail(fd, fs.fstatSync(fd).size, file, opts.log);
        lastId = lastValidId(fd, size, runId);
      } finally {
        fs.closeSync(fd);
      }
    }
    // Nothing on disk is indexed yet; everything this process appends will be.
    const state: RunLog = { file, lastId, size, ids: [], offsets: [], indexedFrom: size, coveredAbove: lastId };
    runs.set(runId, state);
    return state;
  }

  /** Index the file backwards from `indexedFrom` until every event with id > `after` is indexed. */
  function reachBack(runId: string, st: RunLog, after: number): Promise<void> {
    const pass = async () => {
      if (st.coveredAbove <= after) return;
      const idChunks: number[][] = [];
      const offsetChunks: number[][] = [];
      let from = st.indexedFrom;
      let covered = st.coveredAbove;
      // Ids only grow in a log we wrote; going backwards each kept id must be below the last.
      let below = st.ids[0] ?? st.lastId + 1;
      let window = READ_WINDOW;
      const fh = await fs.promises.open(st.file, "r");
      try {
        while (covered > after && from > 0) {
          const start = Math.max(0, from - window);
          const buf = Buffer.alloc(from - start);
          await fh.read(buf, 0, buf.length, start);
          // Unless the window starts the file, its first line is cut: leave it to the next window.
          let lineStart = 0;
          if (start > 0) {
            const nl = buf.indexOf(NEWLINE);
            if (nl === -1 || nl === buf.length - 1) {
              window *= 4; // one line longer than the window
              continue;
            }
            lineStart = nl + 1;
          }
          const found: RunEvent[] = [];
          const at: number[] = [];
          for (let nl = buf.indexOf(NEWLINE, lineStart); nl !== -1; nl = buf.indexOf(NEWLINE, lineStart)) {
            const ev = parseLine(buf.toString("utf8", lineStart, nl), runId);
            if (ev) {
              found.push(ev);
              at.push(start + lineStart);
            }
            lineStart = nl + 1;
          }
          const ids: number[] = [];
          const offsets: number[] = [];
          for (let i = found.length - 1; i >= 0; i--) {
            if (found[i]!.id >= below) continue;
            below = found[i]!.id;
            ids.push(below);
            offsets.push(at[i]!);
          }
          idChunks.push(ids.reverse());
          offsetChunks.push(offsets.reverse());
          from = start === 0 ? 0 : start + buf.indexOf(NEWLINE) + 1;
          covered = from === 0 ? 0 : Math.min(covered, below - 1);
        }
      } finally {
        await fh.close();
      }
      // Publish in one synchronous step, so a concurrent read never sees half an index.
      // Appends made meanwhile were pushed onto st.ids: they stay at the end.
      st.ids = idChunks.reverse().flat().concat(st.ids);
      st.offsets = offsetChunks.reverse().flat().concat(st.offsets);
      st.indexedFrom = from;
      st.coveredAbove = covered;
    };
    // After a failed pass (its reader got the error) the next one simply tries again.
    st.extending = (st.extending ?? Promise.resolve()).then(pass, pass);
    return st.extending;
  }

  return {
    append(runId, event) {
      assertSafeRunId(runId);
      const st = open(runId);
      const candidate = { ...event, id: st.lastId + 1, runId, at: opts.now().toISOString() };
      const parsed = RunEvent.safeParse(candidate);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new EngineError(
          "internal",
          `refusing to store an invalid ${event.type} event for run ${runId}: ${issue?.path.join(".")}: ${issue?.message}`,
        );
      }
      const line = JSON.stringify(parsed.data) + "\n";
      try {
        fs.appendFileSync(st.file, line, { mode: 0o600 });
      } catch (e) {
        // A failed append (disk full) may leave part of the line: forget what we know so the
        // next open cuts it off again before appending.
        runs.delete(runId);
        throw new EngineError(
          "storage_failed",
          `could not append to ${runId}.jsonl in the data dir: ${e instanceof Error ? e.message : String(e)}`,
          { errno: (e as NodeJS.ErrnoException).code },
        );
      }
      st.ids.push(parsed.data.id);
      st.offsets.push(st.size);
      st.size += Buffer.byteLength(line);
      st.lastId = parsed.data.id;
      return parsed.data;
    },

    async read(runId, after, limit, maxBytes) {
      assertSafeRunId(runId);
      const st = open(runId);
      if (after >= st.lastId || limit <= 0) return [];
      if (after < st.coveredAbove) await reachBack(runId, st, after);
      // From here to the read below nothing awaits, so ids, offsets and size agree.
      const from = firstAbove(st.ids, after);
      if (from >= st.ids.length) return [];
      const start = st.offsets[from]!;
      let to = Math.min(st.ids.length, from + limit);
      // Event i ends where event i+1 starts: keep the events that end within maxBytes, at least one.
      if ((to < st.ids.length ? st.offsets[to]! : st.size) - start > maxBytes)
        to = Math.min(to, Math.max(from + 1, firstAbove(st.offsets, start + maxBytes) - 1));
      const end = to < st.ids.length ? st.offsets[to]! : st.size;
      const buf = Buffer.alloc(end - start);
      const fh = await fs.promises.open(st.file, "r");
      try {
        await fh.read(buf, 0, buf.length, start);
      } finally {
        await fh.close();
      }
      const events: RunEvent[] = [];
      for (const text of buf.toString("utf8").split("\n")) {
        if (!text) continue;
        const ev = parseLine(text, runId);
        if (ev) events.push(ev);
      }
      return events;
    },

    lastId(runId) {
      assertSafeRunId(runId);
      return open(runId).lastId;
    },

    remove(runId) {
      assertSafeRunId(runId);
      runs.delete(runId);
      fs.rmSync(path.join(opts.dir, `${runId}.jsonl`), { force: true });
    },
  };
}

const SAFE_RUN_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Run ids name files: refuse anything that could leave the directory or surprise a shell. */
export function assertSafeRunId(runId: string): void {
  if (typeof runId !== "string" || !SAFE_RUN_ID.test(runId)) {
    throw new EngineError(
      "invalid_request",
      `invalid run id ${JSON.stringify(String(runId)).slice(0, 80)}: expected 1-64 letters, digits, - or _`,
    );
  }
}

/** A line as a RunEvent of this run, or undefined if it is torn, garbled or foreign. */
function parseLine(text: string, runId: string): RunEvent | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    // A torn or garbled line is expected after a crash: callers skip it.
    if (e instanceof SyntaxError) return undefined;
    throw e;
  }
  const parsed = RunEvent.safeParse(json);
  return parsed.success && parsed.data.runId === runId ? parsed.data : undefined;
}

/** Index of the first value greater than `after` (values ascending: ids, offsets). */
function firstAbove(ids: readonly number[], after: number): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! <= after) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Cut bytes after the last newline (a line torn by a crash); returns the new size. */
function cutTornTail(fd: number, size: number, file: string, log: Logger): number {
  if (size === 0) return 0;
  const last = Buffer.alloc(1);
  fs.readSync(fd, last, 0, 1, size - 1);
  if (last[0] === NEWLINE) return size;
  let end = size;
  let keep = 0;
  while (end > 0) {
    const start = Math.max(0, end - TAIL_WINDOW);
    const buf = Buffer.alloc(end - start);
    fs.readSync(fd, buf, 0, buf.length, start);
    const nl = buf.lastIndexOf(NEWLINE);
    if (nl !== -1) {
      keep = start + nl + 1;
      break;
    }
    end = start;
  }
  log.warn("event log ends with a torn line (crash mid-write?); cutting it off", { file, bytes: size - keep });
  fs.ftruncateSync(fd, keep);
  return keep;
}

/** The id of the last valid line, reading backwards from the end in growing windows. */
function lastValidId(fd: number, size: number, runId: string): number {
  for (let window = Math.min(size, TAIL_WINDOW); ; window = Math.min(size, window * 4)) {
    const start = size - window;
    const buf = Buffer.alloc(window);
    fs.readSync(fd, buf, 0, window, start);
    const lines = buf.toString("utf8").split("\n");
    lines.pop(); // the empty string after the final newline
    // Unless the window reaches the start of the file, its first line is cut: skip it.
    if (start > 0) lines.shift();
    for (let i = lines.length - 1; i >= 0; i--) {
      const ev = parseLine(lines[i]!, runId);
      if (ev) return ev.id;
    }
    if (start === 0) return 0;
  }
}
