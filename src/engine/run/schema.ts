/**
 * Shapes of runs, shared by the engine, the store, the REST API and the MCP tools.
 * One schema per shape; the TypeScript type carries the schema's name.
 */
import * as z from "zod";
import { EnvironmentInput, RunEnvironment, SetupState } from "../environment/schema.ts";
import { RunWebhookInput } from "../webhooks/schema.ts";

export const RunStatus = z.enum(["queued", "running", "idle", "completed", "failed", "cancelled"]);
export type RunStatus = z.infer<typeof RunStatus>;
export const TERMINAL_STATUSES: readonly RunStatus[] = ["completed", "failed", "cancelled"];
export const isTerminal = (s: RunStatus) => TERMINAL_STATUSES.includes(s);

/** `owner/name`: letters, digits, `-`, `_`, `.`; never a URL or `..`. */
export const RepositoryFullName = z
  .string()
  .max(200)
  .regex(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})\/[A-Za-z0-9._-]{1,100}$/, "must be owner/name")
  // zod runs refinements even after the regex failed, so the name part may be missing here.
  .refine(
    (s) => !(s.split("/")[1] ?? "").startsWith(".") && !s.endsWith(".git") && !s.includes(".."),
    "must be owner/name",
  );
export type RepositoryFullName = z.infer<typeof RepositoryFullName>;

/** A git ref as a user writes it (branch, tag, sha); checked again with `git check-ref-format`. */
export const GitRefInput = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[^\s~^:?*[\\\x00-\x1f\x7f]+$/, "is not a valid git ref")
  .refine(
    (s) =>
      !s.startsWith("-") &&
      !s.includes("..") &&
      !s.includes("@{") &&
      !s.endsWith(".lock") &&
      !s.endsWith("/") &&
      !s.endsWith("."),
    "is not a valid git ref",
  );

export const TaskKind = z.enum(["code", "plan"]);
export type TaskKind = z.infer<typeof TaskKind>;
export const ValidationMode = z.enum(["basic", "tests", "minimal"]);
export type ValidationMode = z.infer<typeof ValidationMode>;

export const PublishMode = z.enum(["draft_pr", "none"]);
export type PublishMode = z.infer<typeof PublishMode>;

export const PublishInput = z
  .object({
    mode: PublishMode.default("none").describe("`draft_pr` pushes a branch and opens or updates a draft pull request"),
    branch: GitRefInput.optional(),
    allowExistingBranch: z
      .boolean()
      .optional()
      .describe(
        "Publish onto `branch` even when it already exists and Patchbay did not create it (default false: such a publish fails with branch_not_owned)",
      ),
  })
  .strict();
export type PublishInput = z.infer<typeof PublishInput>;

/**
 * A message's `publish`: a change to the run's settings, so what it leaves out is kept (no
 * default `mode`: naming only `branch` must not switch publishing off).
 */
export const PublishUpdate = PublishInput.extend({
  mode: PublishMode.optional().describe("Default: the run's current mode"),
});
export type PublishUpdate = z.infer<typeof PublishUpdate>;

export const BillingInput = z
  .object({
    mode: z.enum(["managed", "openrouter"]).default("managed"),
    openRouterApiKey: z.string().min(1).max(500).optional(),
  })
  .strict()
  .refine((b) => b.mode !== "openrouter" || !!b.openRouterApiKey, {
    message: "openRouterApiKey is required when billing.mode is openrouter",
    path: ["openRouterApiKey"],
  });
export type BillingInput = z.infer<typeof BillingInput>;

export const MAX_PROMPT_CHARS = 120_000;
/** Most sibling runs one `POST /runs` may start (`attempts`). */
export const MAX_ATTEMPTS = 4;
export const Prompt = z
  .string()
  .min(1, "prompt must not be empty")
  .max(MAX_PROMPT_CHARS, `prompt must be at most ${MAX_PROMPT_CHARS} characters`);

/** What a run may spend before it stops (run/budget.ts enforces it at the model gateway). */
export const RunLimits = z
  .object({
    maxTokens: z
      .number()
      .int()
      .positive()
      .max(1e12)
      .optional()
      .describe("Input plus output tokens over all turns; model calls stop once reached"),
    maxCostUsd: z
      .number()
      .positive()
      .max(1e6)
      .optional()
      .describe(
        "Model cost in US dollars over all turns (the upstream's reported cost, else the catalog's prices); model calls stop once reached",
      ),
    maxDurationMs: z
      .number()
      .int()
      .positive()
      .max(7 * 24 * 3_600_000)
      .optional()
      .describe("Time the agent spends working, over all turns; the turn is stopped once reached"),
    onExceeded: z
      .enum(["fail", "pause"])
      .optional()
      .describe(
        "`fail` (default): the run ends `failed` with `budget_exceeded`. `pause`: it goes `idle` with `error.code` `budget_exceeded` and its session warm; a message with raised `limits` continues it",
      ),
  })
  .strict();
export type RunLimits = z.infer<typeof RunLimits>;

/** Largest `outputSchema`, as JSON text. */
export const MAX_OUTPUT_SCHEMA_BYTES = 64 * 1024;
/**
 * A JSON Schema the turn's final answer must match (draft-07, or 2020-12 when its `$schema`
 * says so). Checked here for size only; `run/output.ts` compiles it (invalid_output_schema).
 */
export const OutputSchema = z.record(z.string(), z.unknown()).meta({
  description:
    "A JSON Schema (draft-07, or 2020-12 by its `$schema`; at most 64 KB) the turn's final answer must be valid against: the value lands in the run's `output` (null with `outputError` when the answer is still invalid after one repair turn)",
});
export type OutputSchema = z.infer<typeof OutputSchema>;

export const IMAGE_MIME_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"] as const;
export const MAX_IMAGES = 5;
export const MAX_IMAGE_BYTES = 10 * 1024 * 1024;
/** An image for the model, base64 (no data: prefix); its bytes are checked in `run/images.ts`. */
export const ImageInput = z
  .object({
    data: z
      .string()
      .min(1)
      // 10 MB decoded is at most this much base64 (with padding); the decoded size is checked again.
      .max(Math.ceil(MAX_IMAGE_BYTES / 3) * 4)
      .describe("The image's bytes, base64 (no `data:` prefix); at most 10 MB decoded"),
    mimeType: z.enum(IMAGE_MIME_TYPES).describe("Must match the bytes (checked by their magic number)"),
  })
  .strict();
export type ImageInput = z.infer<typeof ImageInput>;
export const ImagesInput = z.array(ImageInput).max(MAX_IMAGES, `at most ${MAX_IMAGES} images per message`).meta({
  description:
    "Images the model sees with the prompt (png, jpeg, gif, webp; at most 5, 10 MB each). A model the catalog marks text-only is refused (model_without_vision)",
});

/** Body of `POST /runs` and input of the `start_run` tool. Unknown fields are refused. */
export const CreateRunInput = z
  .object({
    repository: RepositoryFullName.optional(),
    repositoryFullName: RepositoryFullName.optional(),
    repositoryId: z.union([z.string().regex(/^\d{1,20}$/), z.number().int().positive()]).optional(),
    prompt: Prompt,
    modelId: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[\w.:/@-]+$/, "is not a model id")
      .optional(),
    taskKind: TaskKind.optional().meta({
      default: "code",
      description: "`code` changes the repository; `plan` only answers with a plan",
    }),
    baseRef: GitRefInput.optional(),
    gitCheckoutRef: GitRefInput.optional(),
    validationMode: ValidationMode.optional().meta({
      default: "basic",
      description: "Which checks run after a turn: `basic`, `tests` or `minimal`",
    }),
    publish: PublishInput.optional(),
    billing: BillingInput.optional(),
    /** Setup, secrets and network policy (see environment/schema.ts). */
    environment: EnvironmentInput.optional(),
    limits: RunLimits.optional().describe(
      "Spending limits of the run: tokens, cost, agent time, and what happens at one",
    ),
    requirePlanApproval: z
      .boolean()
      .optional()
      .describe(
        "A `code` run whose first turn is a plan turn (no writing tools); a message with `taskKind: code` approves the plan and continues the same session with writing tools on",
      ),
    attempts: z
      .number()
      .int()
      .min(1, "attempts must be from 1 to 4")
      .max(MAX_ATTEMPTS, "attempts must be from 1 to 4")
      .optional()
      .describe(
        "Start this many sibling runs (1–4) from one request, each with the same `group`; with `validationMode` `basic` or `tests` the group ranks them and names its best run, and only the best publishes",
      ),
    webhook: RunWebhookInput.optional().meta({
      description:
        "A signed webhook (Standard Webhooks) for this run's status changes and finished turns; see `POST /api/v1/webhooks` for every run",
    }),

    /** Applies to every turn of the run unless a message brings its own. */
    outputSchema: OutputSchema.optional(),
    images: ImagesInput.optional(),
  })
  .strict()
  .refine((b) => !(b.requirePlanApproval && b.taskKind === "plan"), {
    message: "requirePlanApproval applies to code runs (a plan run never writes)",
    path: ["requirePlanApproval"],
  })
  .refine((b) => !(b.requirePlanApproval && (b.attempts ?? 1) > 1), {
    message: "attempts are ranked by what they wrote, so they cannot wait for plan approval; drop one of the two",
    path: ["attempts"],
  })
  .refine((b) => !!(b.repository || b.repositoryFullName || b.repositoryId !== undefined), {
    message: "one of repository, repositoryFullName or repositoryId is required",
    path: ["repository"],
  })
  .refine((b) => !(b.repository && b.repositoryFullName && b.repository !== b.repositoryFullName), {
    message: "repository and repositoryFullName disagree",
    path: ["repositoryFullName"],
  })
  .refine((b) => !(b.baseRef && b.gitCheckoutRef && b.baseRef !== b.gitCheckoutRef), {
    message: "baseRef and gitCheckoutRef disagree",
    path: ["gitCheckoutRef"],
  });
export type CreateRunInput = z.infer<typeof CreateRunInput>;

/** Body of `POST /runs/{id}/messages` and input of `send_message`. */
export const MessageInput = z
  .object({
    prompt: Prompt.optional(),
    taskKind: TaskKind.optional().describe(
      "Switch the warm session's task kind from this turn on: `code` after a plan turn approves the plan and turns writing tools on; `plan` makes the turn read-only. Default: the run's current kind",
    ),
    /** Merged into the run's publish settings: only the fields it names change. */
    publish: PublishUpdate.optional(),
    /**
     * How a chained run (a message to an ended or expired run) is billed; without it the
     * chained run keeps the prior run's mode. Ignored when the session continues.
     */
    billing: BillingInput.optional(),
    /** Merged into the run's limits: the fields it names replace the run's (raise a paused run's limit to go on). */
    limits: RunLimits.optional().describe(
      "Changes the run's limits: the fields named replace the run's, the others stay (raise a limit to continue a paused run)",
    ),
    endSession: z.boolean().optional(),
    /** This turn's answer schema, instead of the run's. */
    outputSchema: OutputSchema.optional(),
    images: ImagesInput.optional(),
  })
  .strict()
  .refine((b) => b.endSession === true || !!b.prompt, {
    message: "prompt is required unless endSession is true",
    path: ["prompt"],
  });
export type MessageInput = z.infer<typeof MessageInput>;

/** The model ids runs may use, and the one they get when they name none (REST and MCP answer it). */
export const ModelCatalog = z.object({
  defaultModel: z.string().describe("The model a run uses when it names no modelId"),
  models: z.array(z.string()).describe("Allowed model ids; empty means any id the model provider serves is accepted"),
  textOnlyModels: z
    .array(z.string())
    .describe("Model ids that take no images (PATCHBAY_TEXT_ONLY_MODELS); every other model is assumed to see them"),
});
export type ModelCatalog = z.infer<typeof ModelCatalog>;

export const DiffStats = z.object({
  files: z.number().int(),
  additions: z.number().int(),
  deletions: z.number().int(),
});
export type DiffStats = z.infer<typeof DiffStats>;

export const RunError = z.object({ code: z.string(), message: z.string() });
export type RunError = z.infer<typeof RunError>;

export const Usage = z.object({
  inputTokens: z.number().int(),
  outputTokens: z.number().int(),
  costUsd: z.number().optional(),
  /** False once a model call's cost was neither reported nor priced: only token limits hold then. */
  costKnown: z.boolean().optional(),
  /** Time the agent spent working (turns), for `limits.maxDurationMs`. */
  durationMs: z.number().int().optional(),
});
export type Usage = z.infer<typeof Usage>;

/** GitHub's repository id: a number, as GitHub's own API gives it. */
const GitHubRepositoryId = z.number().int().positive();

export const RepositoryRef = z.object({
  fullName: RepositoryFullName.describe("`owner/name`"),
  owner: z.string(),
  name: z.string(),
  id: GitHubRepositoryId.optional().describe(
    "GitHub's numeric repository id. Present when the server has GitHub credentials (GITHUB_TOKEN or a GitHub App) or has seen the id before; absent for a repository reached without them",
  ),
});
export type RepositoryRef = z.infer<typeof RepositoryRef>;

/** A run's repository as stored: runs stored before the id was a number hold it as a decimal string. */
const StoredRepositoryRef = RepositoryRef.extend({
  id: z.union([GitHubRepositoryId, z.string().regex(/^\d+$/).transform(Number)]).optional(),
});

export const DraftPullRequest = z.object({
  number: z.number().int(),
  url: z.string(),
  branch: z.string(),
  headSha: z.string(),
  base: z.string(),
});
export type DraftPullRequest = z.infer<typeof DraftPullRequest>;

export const PublishState = z.object({
  mode: z.enum(["draft_pr", "none"]),
  branch: z.string().optional(),
  /** The request's opt-in to publish onto an existing branch Patchbay did not create. */
  allowExistingBranch: z.boolean().optional(),
  /** The branch Patchbay created for this run or the run it chains from: publishing onto it needs no opt-in. */
  ownedBranch: z.string().optional(),
  status: z.enum(["pending", "published", "failed", "skipped"]).optional(),
  error: RunError.optional(),
});
export type PublishState = z.infer<typeof PublishState>;

export const ValidationCommand = z.object({
  command: z.string(),
  exitCode: z.number().int().nullable(),
  durationMs: z.number(),
  outputTail: z.string(),
});
export const ValidationResult = z.object({
  mode: ValidationMode,
  status: z.enum(["passed", "failed", "skipped"]),
  commands: z.array(ValidationCommand),
});
export type ValidationResult = z.infer<typeof ValidationResult>;

/** Whether a `requirePlanApproval` run's plan awaits approval (a message with `taskKind: code`) or got it. */
export const PlanApproval = z.enum(["pending", "approved"]);
export type PlanApproval = z.infer<typeof PlanApproval>;

/** A run's place in a group of sibling attempts (`attempts` > 1). */
export const RunGroupRef = z.object({
  id: z.string().describe("The group's id (`grp_…`); `GET /groups/{id}` lists its runs"),
  attempt: z.number().int().describe("This run's attempt number, 1-based"),
  attempts: z.number().int().describe("How many sibling runs the group has"),
});
export type RunGroupRef = z.infer<typeof RunGroupRef>;

/** A run as stored. The public view (`RunView`) is derived from it. */
export const RunRecord = z.object({
  id: z.string(),
  ownerId: z.string(),
  status: RunStatus,
  repository: StoredRepositoryRef,
  modelId: z.string(),
  /** The kind of the current (or next) turn: a message may switch it on a warm session. */
  taskKind: TaskKind,
  planApproval: PlanApproval.optional(),
  /**
   * Its group of attempts; `holdPublish` while the group decides which sibling publishes
   * (true until ranked, and for good on the siblings that were not best).
   */
  group: RunGroupRef.extend({ holdPublish: z.boolean() }).optional(),
  baseRef: z.string().optional(),
  /** The commit the workspace was checked out at. */
  baseSha: z.string().optional(),
  validationMode: ValidationMode,
  publish: PublishState,
  billingMode: z.enum(["managed", "openrouter"]),
  turnCount: z.number().int(),
  sessionExpiresAt: z.string().nullable(),
  /** The idle session is hibernated (nothing runs; a message wakes it); absent or false otherwise. */
  hibernated: z.boolean().optional(),
  /** At most 16 KB (run/summary.ts); the whole text is in the store's summary file when this was cut. */
  summary: z.string().nullable(),
  summaryTruncated: z.boolean().optional(),
  changedPaths: z.array(z.string()),
  diffStats: DiffStats.nullable(),
  hasPatch: z.boolean(),
  draftPullRequest: DraftPullRequest.nullable(),
  validation: ValidationResult.nullable(),
  error: RunError.nullable(),
  usage: Usage,
  /** Absent when the run has none. */
  limits: RunLimits.optional(),
  chainedFrom: z.string().nullable(),
  /** Absent on runs stored before environments existed: read as open network, no secrets. */
  environment: RunEnvironment.optional(),
  /** The setup step's outcome; absent until the run's first turn reaches it. */
  setup: SetupState.nullable().optional(),
  /** The run's own webhook (its secret is sealed in the store's webhooks). */
  webhook: z.object({ id: z.string(), url: z.string() }).optional(),

  /** The run's `outputSchema`, for every turn a message gives none. */
  outputSchema: OutputSchema.optional(),
  /** The last turn's structured answer (null when it had none or it was invalid); absent before any schema. */
  output: z.unknown().optional(),
  /** The validator's messages when the last turn's answer stayed invalid; null otherwise. */
  outputError: z.array(z.string()).nullable().optional(),
  idempotencyKey: z.string().optional(),
  idempotencyHash: z.string().optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
export type RunRecord = z.infer<typeof RunRecord>;

export const TurnRecord = z.object({
  runId: z.string(),
  n: z.number().int(),
  prompt: z.string(),
  /** Absent on turns stored before a message could switch kinds: the run's kind then. */
  taskKind: TaskKind.optional(),
  status: z.enum(["running", "done", "failed", "cancelled"]),
  summary: z.string().nullable(),
  error: RunError.nullable(),
  /** The turn's structured answer (turns with an output schema). */
  output: z.unknown().optional(),
  outputError: z.array(z.string()).nullable().optional(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
});
export type TurnRecord = z.infer<typeof TurnRecord>;
