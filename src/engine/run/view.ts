/**
 * The public view of a run: the response shape of the reference API (`GET /runs/{id}`),
 * shared by REST and MCP. Derived from the stored record, never stored itself.
 */
import * as z from "zod";
import { SetupState } from "../environment/schema.ts";
import { RunEvent } from "../events/schema.ts";
import {
  DiffStats,
  DraftPullRequest,
  PublishState,
  RepositoryRef,
  RunError,
  RunStatus,
  TaskKind,
  Usage,
  ValidationMode,
  ValidationResult,
  type RunRecord,
} from "./schema.ts";

export const RunView = z.object({
  id: z.string(),
  status: RunStatus,
  /** True while the run is idle and its session has not expired: a message continues it. */
  sessionActive: z.boolean(),
  sessionExpiresAt: z.string().nullable(),
  /** Number of user turns on this run. */
  turnCount: z.number().int(),
  repository: RepositoryRef,
  modelId: z.string(),
  taskKind: TaskKind,
  baseRef: z.string().nullable(),
  baseSha: z.string().nullable(),
  validationMode: ValidationMode,
  billing: z.object({ mode: z.enum(["managed", "openrouter"]) }),
  /** The agent's final text of the last turn, cut at 16 KB unless asked for whole (`?fullSummary=1`). */
  summary: z.string().nullable(),
  /** true when `summary` was cut (it ends with a `… [truncated N bytes]` marker). */
  summaryTruncated: z.boolean(),
  changedPaths: z.array(z.string()),
  diffStats: DiffStats.nullable(),
  /** Unified diff against the base; only when asked for (`?patch=1`) and ready. */
  patch: z.string().nullable().optional(),
  /** The run's event log; only when asked for (`?events=1`). */
  events: z.array(RunEvent).optional(),
  publish: PublishState,
  draftPullRequest: DraftPullRequest.nullable(),
  validation: ValidationResult.nullable(),
  /** The environment's setup: run, restored from the cache, failed, or skipped (nothing to set up); null before the first turn reaches it. */
  setup: SetupState.nullable(),
  error: RunError.nullable(),
  usage: Usage,
  chainedFrom: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
export type RunView = z.infer<typeof RunView>;

export function toRunView(
  r: RunRecord,
  now: Date,
  extra: { patch?: string | null; events?: RunEvent[]; fullSummary?: string } = {},
): RunView {
  const sessionActive = r.status === "idle" && !!r.sessionExpiresAt && Date.parse(r.sessionExpiresAt) > now.getTime();
  return {
    id: r.id,
    status: r.status,
    sessionActive,
    sessionExpiresAt: r.sessionExpiresAt,
    turnCount: r.turnCount,
    repository: r.repository,
    modelId: r.modelId,
    taskKind: r.taskKind,
    baseRef: r.baseRef ?? null,
    baseSha: r.baseSha ?? null,
    validationMode: r.validationMode,
    billing: { mode: r.billingMode },
    summary: extra.fullSummary ?? r.summary,
    summaryTruncated: extra.fullSummary === undefined && r.summaryTruncated === true,
    changedPaths: r.changedPaths,
    diffStats: r.diffStats,
    ...(extra.patch !== undefined ? { patch: extra.patch } : {}),
    ...(extra.events !== undefined ? { events: extra.events } : {}),
    publish: r.publish,
    draftPullRequest: r.draftPullRequest,
    validation: r.validation,
    setup: r.setup ?? null,
    error: r.error,
    usage: r.usage,
    chainedFrom: r.chainedFrom,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
  };
}
