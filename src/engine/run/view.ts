/**
 * The public view of a run: the response shape of the reference API (`GET /runs/{id}`),
 * shared by REST and MCP. Derived from the stored record, never stored itself.
 */
import * as z from "zod";
import { SetupState } from "../environment/schema.ts";
import { RunEvent } from "../events/schema.ts";
import { RunWebhookView } from "../webhooks/schema.ts";
import {
  DiffStats,
  DraftPullRequest,
  PlanApproval,
  PublishState,
  RepositoryRef,
  RunError,
  RunLimits,
  RunGroupRef,
  RunStatus,
  TaskKind,
  Usage,
  ValidationMode,
  ValidationResult,
  type RunRecord,
  type TurnRecord,
} from "./schema.ts";

/** One turn of a run as `?turns=1` shows it. */
export const TurnView = z.object({
  n: z.number().int().describe("The turn's number, from 1"),
  prompt: z.string().describe("The prompt the turn was given (secrets masked)"),
  taskKind: TaskKind.describe("`code` or `plan`"),
  status: z.enum(["running", "done", "failed", "cancelled"]),
  summary: z.string().nullable().describe("The agent's final text of the turn; null until it ends"),
  error: RunError.nullable(),
  startedAt: z.string().describe("ISO 8601"),
  finishedAt: z.string().nullable().describe("ISO 8601; null while the turn runs"),
});
export type TurnView = z.infer<typeof TurnView>;

export const RunView = z.object({
  id: z.string().describe("Run id (`run_…`)"),
  status: RunStatus.describe(
    "`queued`, `running`, `idle` (the turn is over and the session is warm: results are ready and a message continues it; not terminal), " +
      "`completed`, `failed` or `cancelled` (terminal)",
  ),
  sessionActive: z
    .boolean()
    .describe("True while the run is idle and its session has not expired: a message continues the same session"),
  sessionExpiresAt: z
    .string()
    .nullable()
    .describe("When an idle session ends on its own (ISO 8601); null while no session is warm"),
  hibernated: z
    .boolean()
    .describe(
      "True while the idle session is hibernated: its agent server is stopped (or its VM paused) with its files and history kept; a message wakes it and continues the same session",
    ),
  turnCount: z.number().int().describe("Number of user turns on this run"),
  repository: RepositoryRef.describe("The repository: full name, owner, name and GitHub's id when known"),
  modelId: z.string().describe("The model the run uses"),
  taskKind: TaskKind.describe(
    "`code` or `plan`: the kind of the current turn (or the next, while idle); a message may switch it",
  ),
  planApproval: PlanApproval.nullable().describe(
    "`pending` while a `requirePlanApproval` run's plan awaits a message with `taskKind: code`, `approved` after it; null for runs that did not ask for approval",
  ),
  group: RunGroupRef.nullable().describe(
    "The group of sibling attempts this run belongs to (`attempts` > 1); null for a run started alone",
  ),
  baseRef: z
    .string()
    .nullable()
    .describe("The ref the repository was checked out at, as requested; null for the default branch"),
  baseSha: z
    .string()
    .nullable()
    .describe("The commit the workspace was checked out at; null until the sandbox is ready"),
  validationMode: ValidationMode.describe("Which checks run after a turn"),
  billing: z
    .object({ mode: z.enum(["managed", "openrouter"]) })
    .describe("Who pays for the model: `managed` (the server's key) or `openrouter` (the run's own key)"),
  summary: z
    .string()
    .nullable()
    .describe(
      "The agent's final text of the last turn, cut at 16 KB unless asked for whole (`?fullSummary=1`); null until a turn ends",
    ),
  summaryTruncated: z.boolean().describe("true when `summary` was cut (it ends with a `… [truncated N bytes]` marker)"),
  changedPaths: z.array(z.string()).describe("Paths the run changed against its base"),
  diffStats: DiffStats.nullable().describe("Files, additions and deletions of the patch; null while there is none"),
  patch: z
    .string()
    .nullable()
    .optional()
    .describe("Unified diff against the base; only when asked for (`?patch=1`), null until a turn has finished"),
  events: z.array(RunEvent).optional().describe("The run's whole event log; only when asked for (`?events=1`)"),
  turns: z.array(TurnView).optional().describe("The run's turns, oldest first; only when asked for (`?turns=1`)"),
  publish: PublishState.describe("Publishing settings and the last publish's outcome"),
  draftPullRequest: DraftPullRequest.nullable().describe(
    "The draft pull request when `publish.mode` is `draft_pr` and a publish succeeded; else null",
  ),
  validation: ValidationResult.nullable().describe("The last turn's validation; null until it ran"),
  setup: SetupState.nullable().describe(
    "The environment's setup: run, restored from the cache, failed, or skipped (nothing to set up); null before the first turn reaches it",
  ),
  output: z
    .unknown()
    .describe(
      "The last turn's answer as a JSON value valid against its `outputSchema`; null when the turn had no schema or its answer stayed invalid (then `outputError` says why)",
    ),
  outputError: z
    .array(z.string())
    .nullable()
    .describe(
      "The validator's messages when the last turn's answer stayed invalid after its repair turn; null otherwise",
    ),
  error: RunError.nullable().describe("Why the run or its last turn failed (`code`, `message`); null otherwise"),
  usage: Usage.describe(
    "Model tokens, cost (reported by the upstream, else from the catalog's prices) and agent time over all turns. " +
      "`costKnown` is false once a call's cost could not be known: then only token and time limits hold",
  ),
  limits: RunLimits.nullable().describe(
    "The run's spending limits (`usage` is measured against them); null when it has none. " +
      "A limit reached ends the run `failed` with `budget_exceeded`, or pauses it `idle` with that error when `onExceeded` is `pause`",
  ),
  chainedFrom: z
    .string()
    .nullable()
    .describe("The run this one continues (a message to an ended or expired run starts a chained run); null otherwise"),
  webhook: RunWebhookView.optional().describe(
    "The run's own webhook when it was started with one; `secret` only in the answer that started the run, when Patchbay generated it",
  ),
  createdAt: z.string().describe("ISO 8601"),
  updatedAt: z.string().describe("ISO 8601"),
  startedAt: z.string().nullable().describe("When the first turn started (ISO 8601)"),
  finishedAt: z.string().nullable().describe("When the run reached a terminal status (ISO 8601); null before"),
});
export type RunView = z.infer<typeof RunView>;

export function toRunView(
  r: RunRecord,
  now: Date,
  extra: { patch?: string | null; events?: RunEvent[]; turns?: TurnRecord[]; fullSummary?: string } = {},
): RunView {
  const sessionActive = r.status === "idle" && !!r.sessionExpiresAt && Date.parse(r.sessionExpiresAt) > now.getTime();
  return {
    id: r.id,
    status: r.status,
    sessionActive,
    sessionExpiresAt: r.sessionExpiresAt,
    hibernated: sessionActive && r.hibernated === true,
    turnCount: r.turnCount,
    repository: r.repository,
    modelId: r.modelId,
    taskKind: r.taskKind,
    planApproval: r.planApproval ?? null,
    group: r.group ? { id: r.group.id, attempt: r.group.attempt, attempts: r.group.attempts } : null,
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
    ...(extra.turns !== undefined ? { turns: extra.turns.map((t) => toTurnView(t, r)) } : {}),
    publish: r.publish,
    draftPullRequest: r.draftPullRequest,
    validation: r.validation,
    setup: r.setup ?? null,
    output: r.output ?? null,
    outputError: r.outputError ?? null,
    error: r.error,
    usage: r.usage,
    limits: r.limits ?? null,
    chainedFrom: r.chainedFrom,
    ...(r.webhook ? { webhook: { id: r.webhook.id, url: r.webhook.url } } : {}),
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
  };
}

function toTurnView(t: TurnRecord, r: RunRecord): TurnView {
  return {
    n: t.n,
    prompt: t.prompt,
    taskKind: t.taskKind ?? r.taskKind,
    status: t.status,
    summary: t.summary,
    error: t.error,
    startedAt: t.startedAt,
    finishedAt: t.finishedAt,
  };
}
