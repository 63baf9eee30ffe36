/**
 * Per-run event logs: one append-only JSONL file per run, `<dir>/<runId>.jsonl`, one event
 * per line. Kept out of the lowdb JSON because a lowdb write re-serialises the whole file:
 * here an append costs the same at event 10 and at event 100,000.
 *
 * Crash safety: a kill -9 mid-append can leave a torn last line. The first time a run's log
 * is opened in a process, bytes after the last newline are cut off (so the next append does
 * not glue onto them), and every line is validated as a RunEvent on read, so a bad line is
 * skipped rather than served.
 *
 * Reads: a byte offset is remembered for every event appended by this process, and for the
 * events already on disk once a read reaches back before them (one streaming pass per run
 * per process). A read then binary-searches the first wanted id and reads only its bytes.
 */
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { RunEvent, type NewRunEvent } from "../events/schema.ts";
import type { Logger } from "../log.ts";

export interface EventLogs {
  append(runId: string, event: NewRunEvent): RunEvent;
  read(runId: string, after: number, limit: number): Promise<RunEvent[]>;
  lastId(runId: string): number;
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
  /** Last id and size found on disk when the log was first opened in this process. */
  diskLastId: number;
  diskSize: number;
  /**
   * Ids and byte offsets of the events in the file, ascending. Until `indexed`, they cover only
   * the events appended by this process (offsets >= diskSize); the older ones are added by
   * `indexOnDisk` the first time a read needs them.
   */
  ids: number[];
  offsets: number[];
  indexed: boolean;
  indexing?: Promise<void>;
}

const TAIL_WINDOW = 64 * 1024;
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
    const state: RunLog = { file, lastId, size, diskLastId: lastId, diskSize: size, ids: [], offsets: [], indexed: size === 0 };
    runs.set(runId, state);
    return state;
  }

  /** One streaming pass over the bytes that were on disk at open, validating each line. */
  function indexOnDisk(runId: string, st: RunLog): Promise<void> {
    st.indexing ??= (async () => {
      const ids: number[] = [];
      const offsets: number[] = [];
      let prev = 0;
      let pending: Buffer = Buffer.alloc(0);
      let pendingAt = 0;
      const stream = fs.createReadStream(st.file, { start: 0, end: st.diskSize - 1, highWaterMark: 256 * 1024 });
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        const buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        let lineStart = 0;
        for (let nl = buf.indexOf(NEWLINE); nl !== -1; nl = buf.indexOf(NEWLINE, lineStart)) {
          const ev = parseLine(buf.toString("utf8", lineStart, nl), runId);
          // Ids only grow in a log we wrote; anything else is damage and is skipped.
          if (ev && ev.id > prev) {
            ids.push(ev.id);
            offsets.push(pendingAt + lineStart);
            prev = ev.id;
          }
          lineStart = nl + 1;
        }
        pending = buf.subarray(lineStart);
        pendingAt += lineStart;
      }
      // Appends made while we streamed are already in st.ids (all after diskSize): keep them last.
      st.ids = ids.concat(st.ids);
      st.offsets = offsets.concat(st.offsets);
      st.indexed = true;
    })();
    return st.indexing;
  }

  return {
    append(runId, event) {
      assertSafeRunId(runId);
      const st = open(runId);
      const candidate = { ...event, id: st.lastId + 1, runId, at: opts.now().toISOString() };
      const parsed = RunEvent.safeParse(candidate);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new EngineError("internal", `refusing to store an invalid ${event.type} event for run ${runId}: ${issue?.path.join(".")}: ${issue?.message}`);
      }
      const line = JSON.stringify(parsed.data) + "\n";
      try {
        fs.appendFileSync(st.file, line, { mode: 0o600 });
      } catch (e) {
        // A failed append (disk full) may leave part of the line: forget what we know so the
        // next open cuts it off again before appending.
        runs.delete(runId);
        throw e;
      }
      st.ids.push(parsed.data.id);
      st.offsets.push(st.size);
      st.size += Buffer.byteLength(line);
      st.lastId = parsed.data.id;
      return parsed.data;
    },

    async read(runId, after, limit) {
      assertSafeRunId(runId);
      const st = open(runId);
      if (after >= st.lastId || limit <= 0) return [];
      // Events after diskLastId were all appended by this process and are indexed already;
      // only a read reaching further back needs the one-time pass over the file.
      if (!st.indexed && after < st.diskLastId) await indexOnDisk(runId, st);
      // From here to the read below nothing awaits, so ids, offsets and size agree.
      const from = firstAbove(st.ids, after);
      if (from >= st.ids.length) return [];
      const to = Math.min(st.ids.length, from + limit);
      const start = st.offsets[from]!;
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
  };
}

const SAFE_RUN_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Run ids name files: refuse anything that could leave the directory or surprise a shell. */
export function assertSafeRunId(runId: string): void {
  if (typeof runId !== "string" || !SAFE_RUN_ID.test(runId)) {
    throw new EngineError("invalid_request", `invalid run id ${JSON.stringify(String(runId)).slice(0, 80)}: expected 1-64 letters, digits, - or _`);
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

/** Index of the first id greater than `after` (ids ascending). */
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
