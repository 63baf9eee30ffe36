/**
 * The store: runs, turns, API keys, repositories, per-run and owner secrets, patches, and the
 * per-run event logs. `createSqliteStore` (SQLite for records + append-only JSONL event logs)
 * is the embedded default; other backends implement the same interface, and every method returns a
 * promise so that one talking to a database can. test/engine/store/contract.test.ts is the
 * suite every implementation must pass.
 */
import * as z from "zod";
import { RepositoryAllowList } from "../keys/allow-list.ts";
import type { GroupRecord } from "../run/group-schema.ts";
import type { RunRecord, TurnRecord } from "../run/schema.ts";
import type { NewRunEvent, RunEvent } from "../events/schema.ts";
import type { DeliveryRecord, WebhookRecord } from "../webhooks/schema.ts";

export const ApiKeyRecord = z.object({
  id: z.string(),
  name: z.string(),
  ownerId: z.string(),
  /** sha256 of the key, hex. The key itself is never stored. */
  hash: z.string(),
  /** First characters of the key, for display (`crt_ab12…`). */
  prefix: z.string(),
  scopes: z.array(z.enum(["read:builder", "write:builder", "admin"])),
  /** Repositories the key may start runs on (`owner/name`, `owner/*`); absent: any. */
  repos: RepositoryAllowList.optional(),
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
  lastUsedAt: z.string().nullable().optional(),
});
export type ApiKeyRecord = z.infer<typeof ApiKeyRecord>;
export type Scope = ApiKeyRecord["scopes"][number];

export const RepositoryRecord = z.object({
  id: z.string(),
  fullName: z.string(),
  defaultBranch: z.string().optional(),
  updatedAt: z.string(),
});
export type RepositoryRecord = z.infer<typeof RepositoryRecord>;

/** A value sealed with AES-256-GCM under its name (see secrets/secrets.ts). */
const sealedValue = { name: z.string(), iv: z.string(), tag: z.string(), data: z.string() };

/** An encrypted per-run secret (run id as associated data). */
export const SecretRecord = z.object({ runId: z.string(), ...sealedValue });
export type SecretRecord = z.infer<typeof SecretRecord>;

/**
 * A secret an owner stored once (`POST /api/v1/secrets`) for runs to name: sealed with
 * AES-256-GCM, the owner id (and the name) as associated data.
 */
export const OwnerSecretRecord = z.object({
  ownerId: z.string(),
  ...sealedValue,
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type OwnerSecretRecord = z.infer<typeof OwnerSecretRecord>;

/**
 * An owner's budget: the daily cost cap an admin set (null: none) and what the owner's runs
 * spent on `spentDay` (UTC, `YYYY-MM-DD`); a new day starts from zero.
 */
export const OwnerBudgetRecord = z.object({
  ownerId: z.string(),
  dailyCostUsd: z.number().nullable(),
  spentDay: z.string().nullable(),
  spentUsd: z.number(),
  updatedAt: z.string(),
});
export type OwnerBudgetRecord = z.infer<typeof OwnerBudgetRecord>;

/** A run's patch in both forms: `text` for people ("Binary files differ"), `binary` for git. */
export const RunPatch = z.object({ text: z.string(), binary: z.string() });
export type RunPatch = z.infer<typeof RunPatch>;

export interface ReadEventsOptions {
  /**
   * Stop before the event that would take the page's JSON past this many bytes; the first
   * event after the cursor is returned whatever its size, so a reader always moves on.
   * Default: no bound.
   */
  maxBytes?: number;
}

export interface ListRunsOptions {
  limit: number;
  /** Opaque cursor from a previous page. */
  cursor?: string;
}
export interface RunPage {
  runs: RunRecord[];
  nextCursor: string | null;
}

export interface RunStore {
  // runs
  createRun(run: RunRecord): Promise<void>;
  getRun(id: string): Promise<RunRecord | undefined>;
  /** Apply a partial update; returns the updated record. Throws run_not_found. */
  updateRun(id: string, patch: Partial<RunRecord>): Promise<RunRecord>;
  /** The owner's runs, newest first. */
  listRuns(ownerId: string, opts: ListRunsOptions): Promise<RunPage>;
  /** Runs in any of the given statuses (all owners), for recovery and reaping. */
  runsByStatus(statuses: readonly RunRecord["status"][]): Promise<RunRecord[]>;
  /** Runs (all owners, any status) last updated at or after `sinceIso`: what a restart reconciles. */
  runsUpdatedSince(sinceIso: string): Promise<RunRecord[]>;
  findRunByIdempotencyKey(ownerId: string, key: string): Promise<RunRecord | undefined>;
  countActiveRuns(ownerId: string): Promise<number>;
  /**
   * Delete a run and everything kept for it: its turns, events, patch, summary, secrets, its
   * own webhooks (those with its `runId`) and their deliveries. False when there was no such
   * run. The caller decides whether the run may go (the engine refuses a live one).
   */
  deleteRun(id: string): Promise<boolean>;
  /**
   * Delete (as `deleteRun`) at most `limit` finished runs last updated before `cutoffIso`,
   * oldest first: completed, failed, cancelled, and idle ones whose session has ended
   * (`sessionExpiresAt` null or past). Returns their ids; fewer than `limit` means none is left.
   */
  purgeFinishedBefore(cutoffIso: string, limit: number): Promise<string[]>;

  // groups of sibling attempts
  createGroup(group: GroupRecord): Promise<void>;
  getGroup(id: string): Promise<GroupRecord | undefined>;
  /** Apply a partial update; returns the updated record. Throws group_not_found. */
  updateGroup(id: string, patch: Partial<GroupRecord>): Promise<GroupRecord>;

  // turns
  addTurn(turn: TurnRecord): Promise<void>;
  updateTurn(runId: string, n: number, patch: Partial<TurnRecord>): Promise<void>;
  listTurns(runId: string): Promise<TurnRecord[]>;

  // events: append-only, ids 1..n per run in call order (also for calls not awaited one by one)
  /** Append one event; it gets the run's next id. Throws internal for an event that fails its schema. */
  appendEvent(runId: string, event: NewRunEvent): Promise<RunEvent>;
  /** Events with id > after, in order, at most `limit` (and at most `opts.maxBytes` of JSON). */
  readEvents(runId: string, after?: number, limit?: number, opts?: ReadEventsOptions): Promise<RunEvent[]>;
  /** The id of the run's last event; 0 before the first. */
  lastEventId(runId: string): Promise<number>;
  /**
   * Update a run and append the event built from the UPDATED record, as one operation: any
   * reader that can see the update can read the event, and vice versa. Throws run_not_found;
   * when the update or the event is refused, neither is stored.
   */
  transition(
    runId: string,
    patch: Partial<RunRecord>,
    event: (run: RunRecord) => NewRunEvent,
  ): Promise<{ run: RunRecord; event: RunEvent }>;

  // patches (kept out of the records; may be large)
  /** Store a run's patch, replacing the previous one: both forms together, as one record. */
  putPatch(runId: string, patch: RunPatch): Promise<void>;
  /** The text diff users read. */
  getPatch(runId: string): Promise<string | undefined>;
  /** The binary-safe diff `git apply` takes (chained runs start from it). */
  getBinaryPatch(runId: string): Promise<string | undefined>;

  // whole summaries (kept out of the records; the run record holds a bounded one)
  /** Store the whole final text of the run's last turn, replacing the previous one. */
  putSummary(runId: string, text: string): Promise<void>;
  getSummary(runId: string): Promise<string | undefined>;

  // API keys
  createKey(key: ApiKeyRecord): Promise<void>;
  findKeyByHash(hash: string): Promise<ApiKeyRecord | undefined>;
  listKeys(): Promise<ApiKeyRecord[]>;
  updateKey(id: string, patch: Partial<ApiKeyRecord>): Promise<ApiKeyRecord | undefined>;

  // repositories (GitHub id <-> full name, remembered once seen)
  upsertRepository(repo: RepositoryRecord): Promise<void>;
  getRepositoryById(id: string): Promise<RepositoryRecord | undefined>;
  getRepositoryByName(fullName: string): Promise<RepositoryRecord | undefined>;

  // per-run secrets (ciphertext only)
  putSecret(secret: SecretRecord): Promise<void>;
  getSecret(runId: string, name: string): Promise<SecretRecord | undefined>;
  deleteSecrets(runId: string): Promise<void>;

  // owner secrets (ciphertext only), by owner and name
  /** Store or replace the owner's secret of that name. */
  putOwnerSecret(secret: OwnerSecretRecord): Promise<void>;
  getOwnerSecret(ownerId: string, name: string): Promise<OwnerSecretRecord | undefined>;
  /** The owner's secrets, by name. */
  listOwnerSecrets(ownerId: string): Promise<OwnerSecretRecord[]>;
  /** Delete one; false when the owner has none of that name. */
  deleteOwnerSecret(ownerId: string, name: string): Promise<boolean>;

  // webhooks (secrets sealed) and their deliveries: the queue that outlives a restart
  /** Store or replace a webhook. */
  putWebhook(hook: WebhookRecord): Promise<void>;
  getWebhook(id: string): Promise<WebhookRecord | undefined>;
  /** The owner's webhooks (its own and its runs'), oldest first. */
  listWebhooks(ownerId: string): Promise<WebhookRecord[]>;
  /** False when there is none with that id. */
  deleteWebhook(id: string): Promise<boolean>;
  /**
   * Store or replace a delivery; resolves once it is durable (a delivery is stored before
   * its first attempt, and each attempt's outcome before the next).
   */
  putDelivery(delivery: DeliveryRecord): Promise<void>;
  getDelivery(id: string): Promise<DeliveryRecord | undefined>;
  /** A run's deliveries, by `seq` (then id). */
  listDeliveries(runId: string): Promise<DeliveryRecord[]>;
  /** Every delivery still `pending` (all runs), by run and `seq`: what a restart resumes. */
  pendingDeliveries(): Promise<DeliveryRecord[]>;
  // owner budgets (run/budget.ts is the one writer; it serialises changes per owner)
  getOwnerBudget(ownerId: string): Promise<OwnerBudgetRecord | undefined>;
  /** Store or replace the owner's budget record. */
  putOwnerBudget(record: OwnerBudgetRecord): Promise<void>;

  /** Flush pending writes and release the data-dir lock. */
  close(): Promise<void>;
}
