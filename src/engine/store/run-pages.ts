/**
 * An owner's runs, newest first, a page at a time. The store keeps each owner's run keys
 * sorted (createdAt and id never change), so a page is a binary search and a slice; the
 * cursor names the last run of the previous page, so it survives runs created meanwhile.
 */
import * as z from "zod";
import { EngineError } from "../errors.ts";
import type { RunRecord } from "../run/schema.ts";
import type { ListRunsOptions, RunPage } from "./store.ts";

/** Cursor: the last run of the previous page, as base64url JSON. */
const Cursor = z.object({ c: z.string(), i: z.string() });

export interface RunKey {
  createdAt: string;
  id: string;
}
export const runKey = (r: RunKey): RunKey => ({ createdAt: r.createdAt, id: r.id });

// Newest first: createdAt descending, then id descending to break ties stably.
// Plain code-unit comparison: ISO times sort as text, and localeCompare would depend on the locale.
const desc = (x: string, y: string) => (x < y ? 1 : x > y ? -1 : 0);
export const newer = (a: RunKey, b: RunKey) => desc(a.createdAt, b.createdAt) || desc(a.id, b.id);

/** Index of the first key strictly after `pos` in newest-first order (`pos` itself may be gone). */
export function firstAfter(sorted: readonly RunKey[], pos: RunKey): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (newer(sorted[mid]!, pos) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** One page of `owned` (newest first); `get` returns the record a caller may keep. */
export function listRuns(owned: readonly RunKey[], opts: ListRunsOptions, get: (id: string) => RunRecord): RunPage {
  if (!Number.isInteger(opts.limit) || opts.limit < 1) {
    throw new EngineError("invalid_request", `limit must be a positive integer (got ${opts.limit})`);
  }
  let start = 0;
  if (opts.cursor !== undefined) {
    const after = decodeCursor(opts.cursor);
    start = firstAfter(owned, { createdAt: after.c, id: after.i });
  }
  const page = owned.slice(start, start + opts.limit).map((k) => get(k.id));
  const lastRun = page[page.length - 1];
  const more = start + opts.limit < owned.length;
  return {
    runs: page,
    nextCursor: more && lastRun ? encodeCursor(lastRun) : null,
  };
}

/** The run a `nextCursor` names; throws invalid_request for anything else. */
export function decodeCursor(cursor: string): z.infer<typeof Cursor> {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    // Falls through to the schema check below, which names the problem.
  }
  const parsed = Cursor.safeParse(json);
  if (!parsed.success)
    throw new EngineError("invalid_request", "invalid cursor: pass back the nextCursor of a previous page");
  return parsed.data;
}

/** The cursor of the page after `last`. */
export function encodeCursor(last: RunKey): string {
  return Buffer.from(JSON.stringify({ c: last.createdAt, i: last.id })).toString("base64url");
}
