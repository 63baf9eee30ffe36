/**
 * The one input parser of the engine and its fronts: a value checked against its zod
 * schema, or an `invalid_request` that names the field, in the same form everywhere.
 */
import type * as z from "zod";
import { EngineError } from "./errors.ts";

/**
 * Parse `value` with `schema`. On failure throws `EngineError("invalid_request",
 * "<path>: <message>", { issues })`, reporting the first issue in the message and every
 * issue in `details.issues` (`{ path, message }`, path dotted).
 *
 * `where` names the part of a request the value came from (`body`, `query`,
 * `header.Idempotency-Key`) and prefixes every path; without it paths are the value's own
 * and an issue about the whole value is reported as `body`.
 */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, where?: string): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const dotted = (path: readonly PropertyKey[]): string =>
    (where === undefined ? path.map(String) : [where, ...path.map(String)]).join(".");
  const issue = r.error.issues[0]!;
  const at = where === undefined && issue.path.length === 0 ? "body" : dotted(issue.path);
  throw new EngineError("invalid_request", `${at}: ${issue.message}`, {
    issues: r.error.issues.map((i) => ({ path: dotted(i.path), message: i.message })),
  });
}
