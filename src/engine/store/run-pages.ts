/**
 * Pages of an owner's runs, newest first (createdAt descending, then id descending to break
 * ties): the limit check and the cursor. The cursor names the last run of the previous page,
 * so it survives runs created meanwhile; it is opaque to callers.
 */
import * as z from "zod";
import { EngineError } from "../errors.ts";
import type { ListRunsOptions } from "./store.ts";

/** Cursor: the last run of the previous page, as base64url JSON. */
const Cursor = z.object({ c: z.string(), i: z.string() });

export interface RunKey {
  createdAt: string;
  id: string;
}

/** The page's limit, checked, and where it starts (after the cursor's run, if any). */
export function pageStart(opts: ListRunsOptions): { limit: number; after: RunKey | undefined } {
  if (!Number.isInteger(opts.limit) || opts.limit < 1) {
    throw new EngineError("invalid_request", `limit must be a positive integer (got ${opts.limit})`);
  }
  return { limit: opts.limit, after: opts.cursor === undefined ? undefined : decodeCursor(opts.cursor) };
}

/** The cursor of the page after the one ending with `last`. */
export function encodeCursor(last: RunKey): string {
  return Buffer.from(JSON.stringify({ c: last.createdAt, i: last.id })).toString("base64url");
}

function decodeCursor(cursor: string): RunKey {
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
  return { createdAt: parsed.data.c, id: parsed.data.i };
}
