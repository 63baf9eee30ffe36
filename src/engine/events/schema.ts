/**
 * Run events: one ordered log per run. Two types, as in the reference API:
 * `builder.event` (normalised agent activity) and `run.status` (every status change).
 */
import * as z from "zod";
import { RunError, RunStatus } from "../run/schema.ts";

export const ToolStatus = z.enum(["pending", "running", "completed", "error"]);

/** Normalised agent activity. `kind` tells what happened. */
export const BuilderEventData = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("text"), text: z.string() }),
  z.object({ kind: z.literal("reasoning"), text: z.string() }),
  z.object({
    kind: z.literal("tool"),
    tool: z.string(),
    callId: z.string(),
    status: ToolStatus,
    title: z.string().optional(),
    input: z.unknown().optional(),
    /** Tool output, truncated. */
    output: z.string().optional(),
    error: z.string().optional(),
  }),
  z.object({ kind: z.literal("file.edited"), path: z.string() }),
  z.object({
    kind: z.literal("step"),
    phase: z.enum(["start", "finish"]),
    reason: z.string().optional(),
    tokens: z.object({ input: z.number(), output: z.number() }).optional(),
  }),
  z.object({ kind: z.literal("error"), code: z.string(), message: z.string() }),
  z.object({ kind: z.literal("log"), message: z.string() }),
  /** Images sent with the turn's prompt, described (never stored whole). */
  z.object({
    kind: z.literal("prompt.images"),
    images: z.array(z.object({ mimeType: z.string(), bytes: z.number().int(), sha256: z.string() })),
  }),
  /** The environment's setup began (before the agent's first prompt); its commands, as declared. */
  z.object({ kind: z.literal("setup.started"), commands: z.array(z.string()) }),
  /** Setup's cached layer was restored instead of running its commands. */
  z.object({ kind: z.literal("setup.cached"), key: z.string() }),
  z.object({
    kind: z.literal("setup.finished"),
    status: z.enum(["succeeded", "cached", "failed"]),
    durationMs: z.number(),
    /** The failing command's exit code (0 when every command passed or the cache served; null: timed out or never started). */
    exitCode: z.number().int().nullable(),
  }),
  /** The idle session hibernated: its agent server stopped (or its VM paused), its files and history kept. */
  z.object({ kind: z.literal("session.hibernated"), idleMs: z.number() }),
  /** A message woke the hibernated session: the same agent session continues; how long the wake took. */
  z.object({ kind: z.literal("session.resumed"), wakeMs: z.number(), hibernatedMs: z.number().optional() }),
]);
export type BuilderEventData = z.infer<typeof BuilderEventData>;

export const RunStatusData = z.object({
  status: RunStatus,
  turn: z.number().int(),
  error: RunError.optional(),
  sessionExpiresAt: z.string().nullable().optional(),
});
export type RunStatusData = z.infer<typeof RunStatusData>;

const base = {
  /** Position in the run's log, starting at 1. Also the SSE `id:`. */
  id: z.number().int().positive(),
  runId: z.string(),
  at: z.string(),
  turn: z.number().int(),
};

export const RunEvent = z.discriminatedUnion("type", [
  z.object({ ...base, type: z.literal("builder.event"), data: BuilderEventData }),
  z.object({ ...base, type: z.literal("run.status"), data: RunStatusData }),
]);
export type RunEvent = z.infer<typeof RunEvent>;

/** An event before the store has given it an id. */
export type NewRunEvent =
  | { type: "builder.event"; turn: number; data: BuilderEventData }
  | { type: "run.status"; turn: number; data: RunStatusData };
