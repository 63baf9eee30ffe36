/**
 * The store: runs, turns, API keys, repositories, per-run secrets, patches, and the
 * per-run event logs. `createLowdbStore` (lowdb JSON + append-only JSONL event logs) is the
 * embedded default; other backends implement the same interface.
 */
import * as z from "zod";
import type { RunRecord, TurnRecord } from "../run/schema.ts";
import type { NewRunEvent, RunEvent } from "../events/schema.ts";

export const ApiKeyRecord = z.object({
  id: z.string(),
  name: z.string(),
  ownerId: z.string(),
  /** sha256 of the key, hex. The key itself is never stored. */
  hash: z.string(),
  /** First characters of the key, for display (`crt_ab12…`). */
  prefix: z.string(),
  scopes: z.array(z.enum(["read:builder", "write:builder", "admin"])),
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

/** An encrypted per-run secret (AES-256-GCM, run id as associated data). */
export const SecretRecord = z.object({
  runId: z.string(),
  name: z.string(),
  iv: z.string(),
  tag: z.string(),
  data: z.string(),
});
export type SecretRecord = z.infer<typeof SecretRecord>;

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
  findRunByIdempotencyKey(ownerId: string, key: string): Promise<RunRecord | undefined>;
  countActiveRuns(ownerId: string): Promise<number>;

  // turns
  addTurn(turn: TurnRecord): Promise<void>;
  updateTurn(runId: string, n: number, patch: Partial<TurnRecord>): Promise<void>;
  listTurns(runId: string): Promise<TurnRecord[]>;

  // events: append-only, ids 1..n per run, constant cost per append
  appendEvent(runId: string, event: NewRunEvent): RunEvent;
  /** Events with id > after, in order, at most `limit`. */
  readEvents(runId: string, after?: number, limit?: number): Promise<RunEvent[]>;
  lastEventId(runId: string): number;

  // patches (kept out of the JSON store; may be large)
  putPatch(runId: string, patch: string): Promise<void>;
  getPatch(runId: string): Promise<string | undefined>;

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

  /** Flush pending writes and release the data-dir lock. */
  close(): Promise<void>;
}
