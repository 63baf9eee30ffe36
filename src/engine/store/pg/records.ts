/**
 * The Postgres store's records that are not a run's: API keys, repositories, per-run and
 * owner secrets, owner budgets, groups, webhooks and deliveries. Each is a json row checked
 * by its zod schema before it is written, with its lookup columns beside it.
 */
import { EngineError } from "../../errors.ts";
import { GroupRecord } from "../../run/group-schema.ts";
import { DeliveryRecord, WebhookRecord } from "../../webhooks/schema.ts";
import { valid } from "../sqlite-tables.ts";
import { ApiKeyRecord, OwnerBudgetRecord, OwnerSecretRecord, RepositoryRecord, SecretRecord } from "../store.ts";
import type { RunStore } from "../store.ts";
import type { Db, Queries } from "./db.ts";

/** Runs `write` for a run, fenced by the run's lease when this replica leased it (postgres.ts). */
export type LeasedWrite = <T>(runId: string, write: (q: Queries) => Promise<T>) => Promise<T>;

type RecordMethods = Pick<
  RunStore,
  | "createGroup"
  | "getGroup"
  | "updateGroup"
  | "createKey"
  | "findKeyByHash"
  | "listKeys"
  | "updateKey"
  | "upsertRepository"
  | "getRepositoryById"
  | "getRepositoryByName"
  | "putSecret"
  | "getSecret"
  | "deleteSecrets"
  | "putOwnerSecret"
  | "getOwnerSecret"
  | "listOwnerSecrets"
  | "deleteOwnerSecret"
  | "putWebhook"
  | "getWebhook"
  | "listWebhooks"
  | "deleteWebhook"
  | "putDelivery"
  | "getDelivery"
  | "listDeliveries"
  | "pendingDeliveries"
  | "getOwnerBudget"
  | "putOwnerBudget"
>;

const byName = <T extends { name: string }>(a: T, b: T) => a.name.localeCompare(b.name);

export function createRecords(db: Db, leased: LeasedWrite = (_runId, write) => write(db)): RecordMethods {
  return {
    // --- groups
    async createGroup(group) {
      const record = valid(GroupRecord, group, "group");
      const n = await db.count("INSERT INTO run_groups (id, data) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
        record.id,
        JSON.stringify(record),
      ]);
      if (!n) throw new EngineError("internal", `group ${group.id} already exists`);
    },
    getGroup: (id) => db.one("SELECT data FROM run_groups WHERE id = $1", [id]),
    async updateGroup(id, patch) {
      return db.tx(async (q) => {
        const current = await q.one<GroupRecord>("SELECT data FROM run_groups WHERE id = $1 FOR UPDATE", [id]);
        if (!current) throw new EngineError("group_not_found", `group ${id} not found`, { groupId: id });
        const next = valid(GroupRecord, { ...current, ...patch, id }, "group");
        await q.count("UPDATE run_groups SET data = $2 WHERE id = $1", [id, JSON.stringify(next)]);
        return next;
      });
    },

    // --- API keys
    async createKey(key) {
      const record = valid(ApiKeyRecord, key, "API key");
      const n = await db.count("INSERT INTO api_keys (id, hash, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [
        record.id,
        record.hash,
        JSON.stringify(record),
      ]);
      if (!n) throw new EngineError("internal", `key ${key.id} already exists`);
    },
    findKeyByHash: (hash) => db.one("SELECT data FROM api_keys WHERE hash = $1", [hash]),
    listKeys: () => db.many("SELECT data FROM api_keys ORDER BY seq"),
    async updateKey(id, patch) {
      return db.tx(async (q) => {
        const current = await q.one<ApiKeyRecord>("SELECT data FROM api_keys WHERE id = $1 FOR UPDATE", [id]);
        if (!current) return undefined;
        // The hash names the key; changing it would make a different key.
        const next = valid(ApiKeyRecord, { ...current, ...patch, id, hash: current.hash }, "API key");
        await q.count("UPDATE api_keys SET data = $2 WHERE id = $1", [id, JSON.stringify(next)]);
        return next;
      });
    },

    // --- repositories (GitHub names are case-insensitive)
    async upsertRepository(repo) {
      const record = valid(RepositoryRecord, repo, "repository");
      await db.count(
        `INSERT INTO repositories (id, name_lower, data) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET name_lower = EXCLUDED.name_lower, data = EXCLUDED.data`,
        [record.id, record.fullName.toLowerCase(), JSON.stringify(record)],
      );
    },
    getRepositoryById: (id) => db.one("SELECT data FROM repositories WHERE id = $1", [id]),
    getRepositoryByName: (fullName) =>
      // The latest record to take the name wins, as in the embedded store.
      db.one("SELECT data FROM repositories WHERE name_lower = $1 ORDER BY data->>'updatedAt' DESC LIMIT 1", [
        fullName.toLowerCase(),
      ]),

    // --- a run's secrets and an owner's
    async putSecret(secret) {
      const record = valid(SecretRecord, secret, "secret");
      await leased(record.runId, (q) =>
        q.count(
          `INSERT INTO run_secrets (run_id, name, data) VALUES ($1, $2, $3)
           ON CONFLICT (run_id, name) DO UPDATE SET data = EXCLUDED.data`,
          [record.runId, record.name, JSON.stringify(record)],
        ),
      );
    },
    getSecret: (runId, name) => db.one("SELECT data FROM run_secrets WHERE run_id = $1 AND name = $2", [runId, name]),
    async deleteSecrets(runId) {
      await leased(runId, (q) => q.count("DELETE FROM run_secrets WHERE run_id = $1", [runId]));
    },
    async putOwnerSecret(secret) {
      const record = valid(OwnerSecretRecord, secret, "owner secret");
      await db.count(
        `INSERT INTO owner_secrets (owner_id, name, data) VALUES ($1, $2, $3)
         ON CONFLICT (owner_id, name) DO UPDATE SET data = EXCLUDED.data`,
        [record.ownerId, record.name, JSON.stringify(record)],
      );
    },
    getOwnerSecret: (ownerId, name) =>
      db.one("SELECT data FROM owner_secrets WHERE owner_id = $1 AND name = $2", [ownerId, name]),
    listOwnerSecrets: async (ownerId) =>
      (await db.many<OwnerSecretRecord>("SELECT data FROM owner_secrets WHERE owner_id = $1", [ownerId])).sort(byName),
    deleteOwnerSecret: async (ownerId, name) =>
      (await db.count("DELETE FROM owner_secrets WHERE owner_id = $1 AND name = $2", [ownerId, name])) > 0,

    // --- owner budgets
    getOwnerBudget: (ownerId) => db.one("SELECT data FROM owner_budgets WHERE owner_id = $1", [ownerId]),
    async putOwnerBudget(budget) {
      const record = valid(OwnerBudgetRecord, budget, "owner budget");
      await db.count(
        `INSERT INTO owner_budgets (owner_id, data) VALUES ($1, $2)
         ON CONFLICT (owner_id) DO UPDATE SET data = EXCLUDED.data`,
        [record.ownerId, JSON.stringify(record)],
      );
    },

    // --- webhooks and deliveries
    async putWebhook(hook) {
      const record = valid(WebhookRecord, hook, "webhook");
      await db.count(
        `INSERT INTO webhooks (id, owner_id, data) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET owner_id = EXCLUDED.owner_id, data = EXCLUDED.data`,
        [record.id, record.ownerId, JSON.stringify(record)],
      );
    },
    getWebhook: (id) => db.one("SELECT data FROM webhooks WHERE id = $1", [id]),
    listWebhooks: (ownerId) => db.many("SELECT data FROM webhooks WHERE owner_id = $1 ORDER BY seq", [ownerId]),
    deleteWebhook: async (id) => (await db.count("DELETE FROM webhooks WHERE id = $1", [id])) > 0,
    async putDelivery(delivery) {
      const record = valid(DeliveryRecord, delivery, "delivery");
      await db.count(
        `INSERT INTO deliveries (id, run_id, seq, status, data) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET run_id = EXCLUDED.run_id, seq = EXCLUDED.seq,
           status = EXCLUDED.status, data = EXCLUDED.data`,
        [record.id, record.runId, record.seq, record.status, JSON.stringify(record)],
      );
    },
    getDelivery: (id) => db.one("SELECT data FROM deliveries WHERE id = $1", [id]),
    listDeliveries: (runId) => db.many("SELECT data FROM deliveries WHERE run_id = $1 ORDER BY seq, id", [runId]),
    pendingDeliveries: () => db.many("SELECT data FROM deliveries WHERE status = 'pending' ORDER BY run_id, seq, id"),
  };
}
