/**
 * The embedded store's small records (sqlite.ts holds runs, turns, events and the rest):
 * API keys, repositories, a run's and an owner's secrets, owners' budgets, webhooks and their
 * deliveries. Each method is one statement or one transaction, so it is durable (to a crash of
 * the process) when it returns.
 */
import { EngineError } from "../errors.ts";
import { DeliveryRecord, WebhookRecord } from "../webhooks/schema.ts";
import type { DeliveryBodies } from "./delivery-records.ts";
import { StoredDelivery } from "./delivery-records.ts";
import { fromRow, valid, type Db, type Writes } from "./sqlite-tables.ts";
import {
  ApiKeyRecord,
  OwnerBudgetRecord,
  OwnerSecretRecord,
  RepositoryRecord,
  SecretRecord,
  type RunStore,
} from "./store.ts";

type RecordMethods = Pick<
  RunStore,
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
  | "getOwnerBudget"
  | "putOwnerBudget"
  | "putWebhook"
  | "getWebhook"
  | "listWebhooks"
  | "deleteWebhook"
  | "putDelivery"
  | "getDelivery"
  | "listDeliveries"
  | "pendingDeliveries"
>;

interface Row {
  data: string;
}

/** `usable` throws once the store is closed; every method calls it first. */
export function createRecordMethods(db: Db, w: Writes, bodies: DeliveryBodies, usable: () => void): RecordMethods {
  const q = {
    keyById: db.prepare<[string], Row>("SELECT data FROM keys WHERE id = ?"),
    keyByHash: db.prepare<[string], Row>("SELECT data FROM keys WHERE hash = ?"),
    keys: db.prepare<[], Row>("SELECT data FROM keys ORDER BY rowid"),
    repoById: db.prepare<[string], Row>("SELECT data FROM repositories WHERE id = ?"),
    // Two ids may have held one name (a rename, then a new repository): the newest wins.
    repoByName: db.prepare<[string], Row>(
      "SELECT data FROM repositories WHERE name_lower = ? ORDER BY updated_at DESC, rowid DESC LIMIT 1",
    ),
    secret: db.prepare<[string, string], Row>("SELECT data FROM secrets WHERE run_id = ? AND name = ?"),
    deleteSecrets: db.prepare<[string]>("DELETE FROM secrets WHERE run_id = ?"),
    ownerSecret: db.prepare<[string, string], Row>("SELECT data FROM owner_secrets WHERE owner_id = ? AND name = ?"),
    ownerSecrets: db.prepare<[string], Row>("SELECT data FROM owner_secrets WHERE owner_id = ?"),
    deleteOwnerSecret: db.prepare<[string, string]>("DELETE FROM owner_secrets WHERE owner_id = ? AND name = ?"),
    budget: db.prepare<[string], Row>("SELECT data FROM owner_budgets WHERE owner_id = ?"),
    webhook: db.prepare<[string], Row>("SELECT data FROM webhooks WHERE id = ?"),
    webhooks: db.prepare<[string], Row>("SELECT data FROM webhooks WHERE owner_id = ? ORDER BY rowid"),
    deleteWebhook: db.prepare<[string]>("DELETE FROM webhooks WHERE id = ?"),
    delivery: db.prepare<[string], Row>("SELECT data FROM deliveries WHERE id = ?"),
    deliveries: db.prepare<[string], Row>("SELECT data FROM deliveries WHERE run_id = ? ORDER BY seq, id"),
    pending: db.prepare<[], Row>("SELECT data FROM deliveries WHERE status = 'pending' ORDER BY run_id, seq, id"),
  };
  const key = (r: Row | undefined) => (r ? fromRow(ApiKeyRecord, r.data, "API key") : undefined);
  const repo = (r: Row | undefined) => (r ? fromRow(RepositoryRecord, r.data, "repository") : undefined);
  const ownerSecret = (r: Row | undefined) => (r ? fromRow(OwnerSecretRecord, r.data, "owner secret") : undefined);
  const delivery = (r: Row) => bodies.withBody(fromRow(StoredDelivery, r.data, "delivery"));

  return {
    // --- API keys
    async createKey(k) {
      usable();
      if (q.keyById.get(k.id)) throw new EngineError("internal", `key ${k.id} already exists`);
      w.putKey(valid(ApiKeyRecord, k, "API key"));
    },
    async findKeyByHash(hash) {
      usable();
      return key(q.keyByHash.get(hash));
    },
    async listKeys() {
      usable();
      return q.keys.all().map((r) => key(r)!);
    },
    async updateKey(id, patch) {
      usable();
      const current = key(q.keyById.get(id));
      if (!current) return undefined;
      // The hash names the key; changing it would make a different key.
      const next = valid(ApiKeyRecord, { ...current, ...patch, id, hash: current.hash }, "API key");
      w.putKey(next);
      return next;
    },

    // --- repositories (GitHub names are case-insensitive: `Octo/Repo` and `octo/repo` are one)
    async upsertRepository(r) {
      usable();
      w.putRepository(valid(RepositoryRecord, r, "repository"));
    },
    async getRepositoryById(id) {
      usable();
      return repo(q.repoById.get(id));
    },
    async getRepositoryByName(fullName) {
      usable();
      return repo(q.repoByName.get(fullName.toLowerCase()));
    },

    // --- a run's secrets and an owner's (ciphertext only)
    async putSecret(secret) {
      usable();
      w.putSecret(valid(SecretRecord, secret, "secret"));
    },
    async getSecret(runId, name) {
      usable();
      const r = q.secret.get(runId, name);
      return r ? fromRow(SecretRecord, r.data, "secret") : undefined;
    },
    async deleteSecrets(runId) {
      usable();
      q.deleteSecrets.run(runId);
    },
    async putOwnerSecret(secret) {
      usable();
      w.putOwnerSecret(valid(OwnerSecretRecord, secret, "owner secret"));
    },
    async getOwnerSecret(ownerId, name) {
      usable();
      return ownerSecret(q.ownerSecret.get(ownerId, name));
    },
    async listOwnerSecrets(ownerId) {
      usable();
      return q.ownerSecrets
        .all(ownerId)
        .map((r) => ownerSecret(r)!)
        .sort((a, b) => a.name.localeCompare(b.name));
    },
    async deleteOwnerSecret(ownerId, name) {
      usable();
      return q.deleteOwnerSecret.run(ownerId, name).changes > 0;
    },

    // --- owner budgets
    async getOwnerBudget(ownerId) {
      usable();
      const r = q.budget.get(ownerId);
      return r ? fromRow(OwnerBudgetRecord, r.data, "owner budget") : undefined;
    },
    async putOwnerBudget(record) {
      usable();
      w.putOwnerBudget(valid(OwnerBudgetRecord, record, "owner budget"));
    },

    // --- webhooks and deliveries
    async putWebhook(hook) {
      usable();
      w.putWebhook(valid(WebhookRecord, hook, "webhook"));
    },
    async getWebhook(id) {
      usable();
      const r = q.webhook.get(id);
      return r ? fromRow(WebhookRecord, r.data, "webhook") : undefined;
    },
    async listWebhooks(ownerId) {
      usable();
      return q.webhooks.all(ownerId).map((r) => fromRow(WebhookRecord, r.data, "webhook"));
    },
    async deleteWebhook(id) {
      usable();
      return q.deleteWebhook.run(id).changes > 0;
    },
    async putDelivery(d) {
      usable();
      const { body, ...record } = valid(DeliveryRecord, d, "delivery");
      // The body first: a stored record always has one.
      if (!q.delivery.get(record.id)) await bodies.put(record.id, body);
      usable();
      w.putDelivery(record);
    },
    async getDelivery(id) {
      usable();
      const r = q.delivery.get(id);
      return r ? delivery(r) : undefined;
    },
    async listDeliveries(runId) {
      usable();
      return Promise.all(q.deliveries.all(runId).map(delivery));
    },
    async pendingDeliveries() {
      usable();
      return Promise.all(q.pending.all().map(delivery));
    },
  };
}
