/**
 * The embedded store's database file, `<dataDir>/store.db` (SQLite through better-sqlite3):
 * its tables, how it is opened, and the writes both the store (sqlite.ts) and the migration
 * from store.json (sqlite-migrate.ts) make. Each record is its JSON in `data`, checked by its
 * zod schema on the way in and out; the columns beside it are what queries look up.
 */
import fs from "node:fs";
import Database from "better-sqlite3";
import type * as z from "zod";
import { EngineError } from "../errors.ts";
import type { GroupRecord } from "../run/group-schema.ts";
import type { RunRecord, TurnRecord } from "../run/schema.ts";
import type { WebhookRecord } from "../webhooks/schema.ts";
import type { StoredDelivery } from "./delivery-records.ts";
import type { ApiKeyRecord, OwnerBudgetRecord, OwnerSecretRecord, RepositoryRecord, SecretRecord } from "./store.ts";

export type Db = Database.Database;

/** `PRAGMA user_version` of the schema below; a later release migrates from it. */
export const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL, idempotency_key TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_owner ON runs (owner_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS runs_by_owner_status ON runs (owner_id, status);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE INDEX IF NOT EXISTS runs_by_updated ON runs (updated_at);
CREATE INDEX IF NOT EXISTS runs_by_idempotency ON runs (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS turns (run_id TEXT NOT NULL, n INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, n));
CREATE TABLE IF NOT EXISTS groups (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS repositories (id TEXT PRIMARY KEY, name_lower TEXT NOT NULL, updated_at TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS repositories_by_name ON repositories (name_lower);
CREATE TABLE IF NOT EXISTS secrets (run_id TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS owner_secrets (owner_id TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (owner_id, name));
CREATE TABLE IF NOT EXISTS owner_budgets (owner_id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhooks (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL, run_id TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS webhooks_by_owner ON webhooks (owner_id);
CREATE INDEX IF NOT EXISTS webhooks_by_run ON webhooks (run_id) WHERE run_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_by_run ON deliveries (run_id, seq, id);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (run_id, seq, id) WHERE status = 'pending';
`;

/**
 * Open (creating it 0600 when missing) a database file and make sure its tables exist.
 * `wal`: write-ahead log with synchronous=NORMAL, for the live store (see docs/ARCHITECTURE.md);
 * otherwise a rollback journal, for a file that is built once and renamed (the migration).
 * secure_delete: a deleted run's rows are overwritten, not left in free pages.
 */
export function openDatabase(file: string, opts: { wal: boolean }): Db {
  // SQLite gives its -wal and -shm files the database file's mode: create it private first.
  fs.closeSync(fs.openSync(file, "a", 0o600));
  fs.chmodSync(file, 0o600);
  const db = new Database(file);
  try {
    if (opts.wal) {
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = NORMAL");
    }
    db.pragma("secure_delete = ON");
    db.pragma("foreign_keys = OFF");
    const version = db.pragma("user_version", { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new EngineError(
        "internal",
        `store file ${file} has schema version ${version}, newer than this Patchbay knows (${SCHEMA_VERSION}); run a newer Patchbay`,
        { file },
      );
    }
    db.exec(SCHEMA);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

const json = (v: unknown) => JSON.stringify(v);

/** The record writes, as prepared statements (one set per connection). */
export function createWrites(db: Db) {
  const s = {
    insertRun: db.prepare(
      "INSERT INTO runs (id, owner_id, status, created_at, updated_at, idempotency_key, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
    ),
    updateRun: db.prepare("UPDATE runs SET status = ?, updated_at = ?, idempotency_key = ?, data = ? WHERE id = ?"),
    putTurn: db.prepare("INSERT OR REPLACE INTO turns (run_id, n, data) VALUES (?, ?, ?)"),
    putGroup: db.prepare("INSERT OR REPLACE INTO groups (id, data) VALUES (?, ?)"),
    putKey: db.prepare("INSERT OR REPLACE INTO keys (id, hash, data) VALUES (?, ?, ?)"),
    putRepository: db.prepare(
      "INSERT OR REPLACE INTO repositories (id, name_lower, updated_at, data) VALUES (?, ?, ?, ?)",
    ),
    putSecret: db.prepare("INSERT OR REPLACE INTO secrets (run_id, name, data) VALUES (?, ?, ?)"),
    putOwnerSecret: db.prepare("INSERT OR REPLACE INTO owner_secrets (owner_id, name, data) VALUES (?, ?, ?)"),
    putOwnerBudget: db.prepare("INSERT OR REPLACE INTO owner_budgets (owner_id, data) VALUES (?, ?)"),
    putWebhook: db.prepare("INSERT OR REPLACE INTO webhooks (id, owner_id, run_id, data) VALUES (?, ?, ?, ?)"),
    putDelivery: db.prepare("INSERT OR REPLACE INTO deliveries (id, run_id, seq, status, data) VALUES (?, ?, ?, ?, ?)"),
  };
  return {
    insertRun: (r: RunRecord) =>
      s.insertRun.run(r.id, r.ownerId, r.status, r.createdAt, r.updatedAt, r.idempotencyKey ?? null, json(r)),
    /** Whether the run was there. */
    updateRun: (r: RunRecord) =>
      s.updateRun.run(r.status, r.updatedAt, r.idempotencyKey ?? null, json(r), r.id).changes > 0,
    putTurn: (t: TurnRecord) => s.putTurn.run(t.runId, t.n, json(t)),
    putGroup: (g: GroupRecord) => s.putGroup.run(g.id, json(g)),
    putKey: (k: ApiKeyRecord) => s.putKey.run(k.id, k.hash, json(k)),
    putRepository: (r: RepositoryRecord) => s.putRepository.run(r.id, r.fullName.toLowerCase(), r.updatedAt, json(r)),
    putSecret: (x: SecretRecord) => s.putSecret.run(x.runId, x.name, json(x)),
    putOwnerSecret: (x: OwnerSecretRecord) => s.putOwnerSecret.run(x.ownerId, x.name, json(x)),
    putOwnerBudget: (b: OwnerBudgetRecord) => s.putOwnerBudget.run(b.ownerId, json(b)),
    putWebhook: (w: WebhookRecord) => s.putWebhook.run(w.id, w.ownerId, w.runId ?? null, json(w)),
    putDelivery: (d: StoredDelivery) => s.putDelivery.run(d.id, d.runId, d.seq, d.status, json(d)),
  };
}
export type Writes = ReturnType<typeof createWrites>;

/**
 * A record read back from `data`, checked by its schema. A row that fails it was changed
 * behind the store's back: say which, rather than serve it.
 */
export function fromRow<S extends z.ZodType>(schema: S, data: string, what: string): z.infer<S> {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new EngineError(
    "internal",
    `a stored ${what} in store.db is corrupt: ${issue.path.join(".") || "(root)"}: ${issue.message}`,
  );
}

/**
 * Check a record before it is stored: a bad record is refused here, where the bug is,
 * rather than at the next read.
 */
export function valid<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new EngineError("internal", `refusing to store an invalid ${what}: ${issue.path.join(".")}: ${issue.message}`);
}
