/**
 * Following a run's event log: the stored events after a cursor, then the live ones as they
 * are published, in id order with none missed and none repeated. SSE, the CLI and MCP are
 * each a loop over this handle.
 *
 * Why nothing is missed: the handle subscribes before it reads the store, and an event is
 * appended before it is published. So every event after the cursor is either in a page read
 * from the store or in the live buffer; ids at or below the last one yielded are dropped, and
 * a live event past a gap (the buffer overflowed under a slow consumer) waits for a read of
 * the gap from the store.
 */
import { EngineError } from "../errors.ts";
import type { RunEvent } from "../events/schema.ts";
import type { RunStore } from "../store/store.ts";
import type { StreamSlots } from "./streams.ts";
import { isTerminal, type RunRecord, type RunStatus } from "./schema.ts";

/** Where iteration ends by itself: the run's terminal status, or the first status that ends a turn. */
export type FollowUntil = "terminal" | "turn";

export interface FollowOptions {
  /** Yield the events with an id above this. Default 0: the whole log. */
  after?: number;
  /** Aborting it ends the iteration, without an error. */
  signal?: AbortSignal;
  /**
   * "terminal" (default): end after the run's completed, failed or cancelled status.
   * "turn": end after the first status that is not queued or running (idle or terminal).
   * Either ends at once when the run had already stopped so (with nothing after the cursor
   * but events that do not change it).
   */
  until?: FollowUntil;
}

/** A run's events from a cursor on, replayed then live. Iterate it once; `close()` or leaving a for-await releases it. */
export interface RunFollow extends AsyncIterable<RunEvent> {
  readonly runId: string;
  /**
   * The run was terminal and the cursor at its last event when the follow was opened:
   * nothing will ever come (SSE answers 204, so an EventSource stops reconnecting).
   */
  readonly finished: boolean;
  close(): void;
}

export interface FollowDeps {
  store: Pick<RunStore, "readEvents" | "lastEventId">;
  /** Live events of one run, as the engine publishes them after appending them. Returns unsubscribe. */
  subscribe(runId: string, listener: (ev: RunEvent) => void): () => void;
  /** The run when `ownerId` owns it; throws run_not_found otherwise. */
  ownedRun(ownerId: string, runId: string): Promise<RunRecord>;
  /** Each open follow holds one of its owner's slots (too_many_streams beyond). */
  slots: StreamSlots;
}

/** Events read from the store at a time; stream_events' largest page fits in one. */
const PAGE = 500;
/**
 * Bytes of events read from the store at a time: a consumer that stops reading (an SSE
 * client that never reads its socket) holds at most one such page, whatever the log holds.
 */
export const PAGE_BYTES = 1024 * 1024;
/** Live events held for a consumer that is behind; past this they are dropped and read back from the store. */
const MAX_BUFFERED = 1000;
/** The same bound in (roughly counted) bytes: a few large text events must not pin megabytes per run. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** How far back the first look for the run's last status reaches (it grows eightfold each time). */
const STATUS_WINDOW = 16;

/** Throws event_not_found unless `after` is 0 or the id of a stored event. */
export function assertCursor(runId: string, after: number, lastEventId: number): void {
  if (!Number.isInteger(after) || after < 0 || after > lastEventId) {
    throw new EngineError(
      "event_not_found",
      `event ${after} does not exist in run ${runId} (last event is ${lastEventId})`,
      { lastEventId },
    );
  }
}

/**
 * Follow a run owned by `ownerId`. Checks ownership and the cursor before it resolves (so a
 * front can still answer 404), subscribing in between so nothing published meanwhile is lost.
 */
export async function followRun(
  deps: FollowDeps,
  ownerId: string,
  runId: string,
  opts: FollowOptions = {},
): Promise<RunFollow> {
  const run = await deps.ownedRun(ownerId, runId);
  if (isTerminal(run.status)) {
    // A terminal run's log never grows: a follow at its end needs no slot and no subscription.
    const last = await deps.store.lastEventId(runId);
    assertCursor(runId, opts.after ?? 0, last);
    const status = (opts.after ?? 0) === last ? await lastStatus(deps.store, runId, last) : undefined;
    if (status && isTerminal(status)) return finishedFollow(runId);
  }
  const release = deps.slots.acquire(ownerId);
  let follow: Follow;
  try {
    follow = new Follow(deps, ownerId, runId, opts, release);
  } catch (e) {
    release();
    throw e;
  }
  try {
    assertCursor(runId, opts.after ?? 0, await deps.store.lastEventId(runId));
  } catch (e) {
    follow.close();
    throw e;
  }
  return follow;
}

function finishedFollow(runId: string): RunFollow {
  return {
    runId,
    finished: true,
    close() {},
    async *[Symbol.asyncIterator]() {},
  };
}

const ends = (status: RunStatus, until: FollowUntil): boolean =>
  until === "terminal" ? isTerminal(status) : status !== "queued" && status !== "running";

/** One follow: owns its subscription, its live buffer and the wake-up of its waiting iteration. */
class Follow implements RunFollow {
  readonly finished = false;
  private readonly buffer: RunEvent[] = [];
  private bufferedBytes = 0;
  private stopped = false;
  private released = false;
  private wake: (() => void) | undefined;
  private readonly unsubscribe: () => void;
  private readonly iteration: AsyncGenerator<RunEvent>;
  private readonly after: number;
  private readonly until: FollowUntil;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = () => this.close();

  constructor(
    private readonly deps: FollowDeps,
    private readonly ownerId: string,
    readonly runId: string,
    opts: FollowOptions,
    private readonly releaseSlot: () => void,
  ) {
    this.after = opts.after ?? 0;
    this.until = opts.until ?? "terminal";
    this.signal = opts.signal;
    this.unsubscribe = deps.subscribe(runId, (ev) => this.receive(ev));
    this.signal?.addEventListener("abort", this.onAbort, { once: true });
    if (this.signal?.aborted) this.close();
    this.iteration = this.events();
  }

  [Symbol.asyncIterator](): AsyncGenerator<RunEvent> {
    return this.iteration;
  }

  close(): void {
    this.stopped = true;
    this.release();
    this.wake?.();
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.releaseSlot();
    this.unsubscribe();
    this.signal?.removeEventListener("abort", this.onAbort);
  }

  private receive(ev: RunEvent): void {
    // Dropping the buffer loses nothing: the next live event opens a gap, read from the store.
    if (this.buffer.length >= MAX_BUFFERED || this.bufferedBytes >= MAX_BUFFERED_BYTES) {
      this.buffer.length = 0;
      this.bufferedBytes = 0;
    }
    this.buffer.push(ev);
    this.bufferedBytes += weight(ev);
    this.wake?.();
  }

  private async *events(): AsyncGenerator<RunEvent> {
    const { store } = this.deps;
    let last = this.after;
    /** The store may hold events after `last` that the buffer does not. */
    let behind = true;
    /** A status was yielded (and did not end the iteration): the run is working. */
    let sawStatus = false;
    let checked = false;
    /** Stored events read ahead of the live buffer, not yielded yet. */
    let page: RunEvent[] = [];
    try {
      while (!this.stopped) {
        let ev: RunEvent | undefined;
        if (page.length) ev = page.shift();
        else if (behind) {
          const end = await store.lastEventId(this.runId);
          page = await store.readEvents(this.runId, last, PAGE, { maxBytes: PAGE_BYTES });
          behind = page.length > 0 && page.at(-1)!.id < end;
          const head = this.buffer[0];
          if (!page.length && head && head.id > last + 1)
            throw new EngineError("internal", `run ${this.runId}: events ${last + 1}-${head.id - 1} are not stored`);
          continue;
        } else {
          ev = this.buffer.shift();
          if (ev) this.bufferedBytes = this.buffer.length ? this.bufferedBytes - weight(ev) : 0;
          if (ev && ev.id > last + 1) {
            // A gap (the buffer overflowed): read it from the store first.
            this.buffer.unshift(ev);
            this.bufferedBytes += weight(ev);
            behind = true;
            continue;
          }
        }
        if (ev) {
          if (ev.id <= last) continue;
          last = ev.id;
          yield ev;
          if (ev.type === "run.status") {
            if (ends(ev.data.status, this.until)) return;
            sawStatus = true;
          }
          continue;
        }
        // Caught up with the store and the buffer.
        if (!checked && !sawStatus) {
          checked = true;
          if (await this.stoppedAt(last)) return;
          continue; // events may have arrived during the check
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
      }
    } finally {
      this.release();
    }
  }

  /** Whether the run had already stopped (per `until`) as of event `cursor`, so no event of interest follows. */
  private async stoppedAt(cursor: number): Promise<boolean> {
    const run = await this.deps.ownedRun(this.ownerId, this.runId);
    if (!ends(run.status, this.until)) return false;
    // The record can be ahead of what this follow has read (the status event was stored after
    // our last read and is still on its way here): the log's last status up to `cursor` decides.
    const status = await lastStatus(this.deps.store, this.runId, cursor);
    return status !== undefined && ends(status, this.until);
  }
}

/** An event's size, roughly: its long strings. Cheaper than serialising it for every follower. */
function weight(ev: RunEvent): number {
  const data = ev.data as Record<string, unknown>;
  let n = 200;
  for (const field of ["text", "output", "error", "message"])
    if (typeof data[field] === "string") n += (data[field] as string).length;
  return n;
}

/** The status of the last run.status event at or before `cursor`, read backwards in growing windows. */
async function lastStatus(
  store: Pick<RunStore, "readEvents">,
  runId: string,
  cursor: number,
): Promise<RunStatus | undefined> {
  let window = STATUS_WINDOW;
  for (let end = cursor; end > 0; window *= 8) {
    const from = Math.max(0, end - window);
    const events = await store.readEvents(runId, from, end - from);
    for (let i = events.length - 1; i >= 0; i--) {
      const ev = events[i]!;
      if (ev.type === "run.status") return ev.data.status;
    }
    end = from;
  }
  return undefined;
}
