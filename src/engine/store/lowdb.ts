/**
 * The embedded store: lowdb over `<dataDir>/store.json` for runs, turns, keys, repositories,
 * secrets (per-run and owner), webhooks and delivery records; one JSONL event log per run
 * (`events/<runId>.jsonl`, see event-log.ts); one patch file per run (`patches/<runId>.json`,
 * see patch-files.ts); the whole summary of a run whose record holds a cut one
 * (`summaries/<runId>.txt`); the body of each webhook delivery (`deliveries/<id>.json`, see
 * delivery-records.ts). One process owns the data dir (lock.ts).
 *
 * Everything lives in memory (Maps, so no id can collide with Object.prototype); a mutation
 * changes memory at once and then schedules a write of the whole JSON file. Mutations in the
 * same tick share one write, writes never overlap, and each mutation's promise settles when
 * a write that includes it has reached the disk.
 *
 * Events are appended synchronously inside their async method (event-log.ts): an event has
 * its id and is readable before the call returns, so ids follow call order without a queue,
 * and `transition` can change a run and append its event with no await in between.
 * On disk a transition's event comes first (its line now, the run at the next store.json
 * write). A crash between the two leaves an event for a change the record lacks; recovery
 * works from the record and appends an event of its own, so the log ends agreeing with it.
 * The other order would leave a status change that no follower of the log ever hears of.
 */
import fs from "node:fs";
import path from "node:path";
import { Low } from "lowdb";
import { EngineError } from "../errors.ts";
import { silentLogger, type Logger } from "../log.ts";
import { GroupRecord } from "../run/group-schema.ts";
import { RunRecord, TurnRecord, type RunStatus } from "../run/schema.ts";
import { assertSafeRunId, createEventLogs } from "./event-log.ts";
import { acquireDataDirLock } from "./lock.ts";
import { NamedRecords } from "./named.ts";
import { createPatchFiles } from "./patch-files.ts";
import { createSummaryFiles } from "./summary-files.ts";
import { firstAfter, listRuns, newer, runKey, type RunKey } from "./run-pages.ts";
import {
  ApiKeyRecord,
  OwnerBudgetRecord,
  OwnerSecretRecord,
  RepositoryRecord,
  SecretRecord,
  type RunStore,
} from "./store.ts";
import { DeliveryRecord, WebhookRecord } from "../webhooks/schema.ts";
import { DeliveryRecords } from "./delivery-records.ts";
import { copy, emptyStore, PrivateJsonFile, scheduleWrites, StoreFile, valid } from "./lowdb-file.ts";

const ACTIVE: readonly RunStatus[] = ["queued", "running", "idle"];

export interface LowdbStoreOptions {
  dataDir: string;
  log?: Logger;
  /** Time source for event timestamps; default the system clock. */
  now?: () => Date;
}

/**
 * Open (or create) the store in `dataDir`, taking the data-dir lock.
 * Throws EngineError `store_locked` if another live process holds it, and `internal` if
 * store.json is not valid JSON or holds a record that does not match its schema.
 */
export async function createLowdbStore(opts: LowdbStoreOptions): Promise<RunStore> {
  const dataDir = path.resolve(opts.dataDir);
  const log = (opts.log ?? silentLogger).child({ component: "store" });
  const lock = await acquireDataDirLock(dataDir);
  try {
    return await open(dataDir, log, opts.now ?? (() => new Date()), lock.release);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function open(
  dataDir: string,
  log: Logger,
  now: () => Date,
  releaseLock: () => Promise<void>,
): Promise<RunStore> {
  const eventsDir = path.join(dataDir, "events");
  const patchesDir = path.join(dataDir, "patches");
  const summariesDir = path.join(dataDir, "summaries");
  const deliveriesDir = path.join(dataDir, "deliveries");
  for (const dir of [eventsDir, patchesDir, summariesDir, deliveriesDir])
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });

  const file = path.join(dataDir, "store.json");
  const db = new Low<unknown>(new PrivateJsonFile(file), emptyStore());
  await db.read();
  const checked = StoreFile.safeParse(db.data);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    throw new EngineError(
      "internal",
      `store file ${file} is corrupt: ${issue.path.join(".") || "(root)"}: ${issue.message}; restore it from a backup or move it away to start empty`,
      { file },
    );
  }
  const data = checked.data;

  const runs = new Map(data.runs.map((r) => [r.id, r]));
  // Each owner's runs newest first (createdAt and id never change): a page is a binary search
  // and a slice, not a filter and sort of every run per request (bench/api-load.ts, 10k runs).
  const byOwner = new Map<string, RunKey[]>();
  for (const r of runs.values()) byOwner.set(r.ownerId, [...(byOwner.get(r.ownerId) ?? []), r]);
  for (const [owner, list] of byOwner) byOwner.set(owner, list.map(runKey).sort(newer));
  const turns = new Map<string, TurnRecord[]>();
  for (const t of data.turns) turns.set(t.runId, [...(turns.get(t.runId) ?? []), t]);
  for (const list of turns.values()) list.sort((a, b) => a.n - b.n);
  const keys = new Map(data.keys.map((k) => [k.id, k]));
  const keyIdByHash = new Map(data.keys.map((k) => [k.hash, k.id]));
  const repos = new Map(data.repositories.map((r) => [r.id, r]));
  // GitHub names are case-insensitive: `Octo/Repo` and `octo/repo` are one repository.
  const repoIdByName = new Map(data.repositories.map((r) => [r.fullName.toLowerCase(), r.id]));
  const secrets = new NamedRecords(data.secrets, (s) => s.runId);
  const ownerSecrets = new NamedRecords(data.ownerSecrets, (s) => s.ownerId);
  const ownerBudgets = new Map(data.ownerBudgets.map((b) => [b.ownerId, b]));
  const groups = new Map(data.groups.map((g) => [g.id, g]));
  const webhooks = new Map(data.webhooks.map((w) => [w.id, w]));
  const deliveries = new DeliveryRecords(data.deliveries, deliveriesDir);

  const snapshot = (): StoreFile => ({
    version: 1,
    runs: [...runs.values()],
    turns: [...turns.values()].flat(),
    keys: [...keys.values()],
    repositories: [...repos.values()],
    secrets: secrets.all(),
    ownerSecrets: ownerSecrets.all(),
    ownerBudgets: [...ownerBudgets.values()],
    groups: [...groups.values()],
    webhooks: [...webhooks.values()],
    deliveries: deliveries.all(),
  });

  const writes = scheduleWrites(async () => {
    db.data = snapshot();
    try {
      await db.write();
    } catch (e) {
      log.error("store write failed", { file, err: e });
      throw e;
    }
  });
  const persist = writes.persist;
  let closed = false;

  function usable(): void {
    if (closed) throw new EngineError("shutting_down", "the store is closed");
  }

  const events = createEventLogs({ dir: eventsDir, log, now });
  const patches = createPatchFiles(patchesDir);
  const summaries = createSummaryFiles(summariesDir);

  /** The run with `patch` applied and checked, not yet stored. Throws run_not_found. */
  function patchedRun(id: string, patch: Partial<RunRecord>): RunRecord {
    const current = runs.get(id);
    if (!current) throw new EngineError("run_not_found", `run ${id} not found`, { runId: id });
    return valid(RunRecord, { ...current, ...patch, id }, "run");
  }

  async function putNamed<T extends { name: string }>(records: NamedRecords<T>, record: T): Promise<void> {
    usable();
    records.put(record);
    await persist();
  }
  function getNamed<T extends { name: string }>(records: NamedRecords<T>, group: string, name: string): T | undefined {
    usable();
    return copy(records.get(group, name));
  }

  const store: RunStore = {
    // --- runs
    async createRun(run) {
      usable();
      assertSafeRunId(run.id);
      if (runs.has(run.id)) throw new EngineError("internal", `run ${run.id} already exists`);
      const record = valid(RunRecord, run, "run");
      runs.set(run.id, record);
      const list = byOwner.get(record.ownerId) ?? [];
      list.splice(firstAfter(list, runKey(record)), 0, runKey(record));
      byOwner.set(record.ownerId, list);
      await persist();
    },
    async getRun(id) {
      usable();
      return copy(runs.get(id));
    },
    async updateRun(id, patch) {
      usable();
      const next = patchedRun(id, patch);
      runs.set(id, next);
      await persist();
      return copy(next);
    },
    async transition(id, patch, event) {
      usable();
      const next = patchedRun(id, patch);
      // No await between append and update: no reader in this process sees one without the
      // other. A refused event throws before the run changes. Crash order: see the file header.
      const stored = events.append(id, event(copy(next)));
      runs.set(id, next);
      await persist();
      return { run: copy(next), event: stored };
    },
    async listRuns(ownerId, opts) {
      usable();
      return listRuns(byOwner.get(ownerId) ?? [], opts, (id) => copy(runs.get(id)!));
    },
    async runsByStatus(statuses) {
      usable();
      return [...runs.values()].filter((r) => statuses.includes(r.status)).map(copy);
    },
    async findRunByIdempotencyKey(ownerId, key) {
      usable();
      for (const r of runs.values()) if (r.ownerId === ownerId && r.idempotencyKey === key) return copy(r);
      return undefined;
    },
    async countActiveRuns(ownerId) {
      usable();
      let n = 0;
      for (const r of runs.values()) if (r.ownerId === ownerId && ACTIVE.includes(r.status)) n++;
      return n;
    },

    // --- groups
    async createGroup(group) {
      usable();
      if (groups.has(group.id)) throw new EngineError("internal", `group ${group.id} already exists`);
      groups.set(group.id, valid(GroupRecord, group, "group"));
      await persist();
    },
    async getGroup(id) {
      usable();
      return copy(groups.get(id));
    },
    async updateGroup(id, patch) {
      usable();
      const current = groups.get(id);
      if (!current) throw new EngineError("group_not_found", `group ${id} not found`, { groupId: id });
      const next = valid(GroupRecord, { ...current, ...patch, id }, "group");
      groups.set(id, next);
      await persist();
      return copy(next);
    },

    // --- turns
    async addTurn(turn) {
      usable();
      const list = turns.get(turn.runId) ?? [];
      if (list.some((t) => t.n === turn.n))
        throw new EngineError("internal", `run ${turn.runId} already has turn ${turn.n}`);
      list.push(valid(TurnRecord, turn, "turn"));
      list.sort((a, b) => a.n - b.n);
      turns.set(turn.runId, list);
      await persist();
    },
    async updateTurn(runId, n, patch) {
      usable();
      const list = turns.get(runId);
      const i = list?.findIndex((t) => t.n === n) ?? -1;
      if (!list || i < 0) throw new EngineError("run_not_found", `run ${runId} has no turn ${n}`, { runId, turn: n });
      list[i] = valid(TurnRecord, { ...list[i]!, ...patch, runId, n }, "turn");
      await persist();
    },
    async listTurns(runId) {
      usable();
      return (turns.get(runId) ?? []).map(copy);
    },

    // --- events
    async appendEvent(runId, event) {
      usable();
      return events.append(runId, event);
    },
    async readEvents(runId, after = 0, limit = Number.POSITIVE_INFINITY, opts = {}) {
      usable();
      return events.read(runId, after, limit, opts.maxBytes ?? Number.POSITIVE_INFINITY);
    },
    async lastEventId(runId) {
      usable();
      return events.lastId(runId);
    },

    // --- patches
    async putPatch(runId, patch) {
      usable();
      await patches.put(runId, patch);
    },
    async getPatch(runId) {
      usable();
      return (await patches.get(runId))?.text;
    },
    async getBinaryPatch(runId) {
      usable();
      return (await patches.get(runId))?.binary;
    },

    // --- whole summaries
    async putSummary(runId, text) {
      usable();
      await summaries.put(runId, text);
    },
    async getSummary(runId) {
      usable();
      return summaries.get(runId);
    },

    // --- API keys
    async createKey(key) {
      usable();
      if (keys.has(key.id)) throw new EngineError("internal", `key ${key.id} already exists`);
      const record = valid(ApiKeyRecord, key, "API key");
      keys.set(record.id, record);
      keyIdByHash.set(record.hash, record.id);
      await persist();
    },
    async findKeyByHash(hash) {
      usable();
      const id = keyIdByHash.get(hash);
      return id === undefined ? undefined : copy(keys.get(id));
    },
    async listKeys() {
      usable();
      return [...keys.values()].map(copy);
    },
    async updateKey(id, patch) {
      usable();
      const current = keys.get(id);
      if (!current) return undefined;
      // The hash names the key; changing it would make a different key.
      const next = valid(ApiKeyRecord, { ...current, ...patch, id, hash: current.hash }, "API key");
      keys.set(id, next);
      await persist();
      return copy(next);
    },

    // --- repositories
    async upsertRepository(repo) {
      usable();
      const record = valid(RepositoryRecord, repo, "repository");
      const old = repos.get(record.id);
      if (old) repoIdByName.delete(old.fullName.toLowerCase());
      repos.set(record.id, record);
      repoIdByName.set(record.fullName.toLowerCase(), record.id);
      await persist();
    },
    async getRepositoryById(id) {
      usable();
      return copy(repos.get(id));
    },
    async getRepositoryByName(fullName) {
      usable();
      const id = repoIdByName.get(fullName.toLowerCase());
      return id === undefined ? undefined : copy(repos.get(id));
    },

    // --- secrets (a run's, and an owner's)
    putSecret: async (secret) => putNamed(secrets, valid(SecretRecord, secret, "secret")),
    getSecret: async (runId, name) => getNamed(secrets, runId, name),
    async deleteSecrets(runId) {
      usable();
      if (secrets.deleteGroup(runId)) await persist();
    },
    putOwnerSecret: async (secret) => putNamed(ownerSecrets, valid(OwnerSecretRecord, secret, "owner secret")),
    getOwnerSecret: async (ownerId, name) => getNamed(ownerSecrets, ownerId, name),

    // --- owner budgets
    async getOwnerBudget(ownerId) {
      usable();
      return copy(ownerBudgets.get(ownerId));
    },
    async putOwnerBudget(record) {
      usable();
      const checked = valid(OwnerBudgetRecord, record, "owner budget");
      ownerBudgets.set(checked.ownerId, checked);
      await persist();
    },
    async listOwnerSecrets(ownerId) {
      usable();
      return ownerSecrets.list(ownerId).map(copy);
    },
    async deleteOwnerSecret(ownerId, name) {
      usable();
      if (!ownerSecrets.delete(ownerId, name)) return false;
      await persist();
      return true;
    },

    // --- webhooks and deliveries
    async putWebhook(hook) {
      usable();
      webhooks.set(hook.id, valid(WebhookRecord, hook, "webhook"));
      await persist();
    },
    async getWebhook(id) {
      usable();
      return copy(webhooks.get(id));
    },
    async listWebhooks(ownerId) {
      usable();
      return [...webhooks.values()].filter((w) => w.ownerId === ownerId).map(copy);
    },
    async deleteWebhook(id) {
      usable();
      if (!webhooks.delete(id)) return false;
      await persist();
      return true;
    },
    async putDelivery(delivery) {
      usable();
      await deliveries.put(valid(DeliveryRecord, delivery, "delivery"));
      await persist();
    },
    async getDelivery(id) {
      usable();
      return deliveries.get(id);
    },
    async listDeliveries(runId) {
      usable();
      return deliveries.list(runId);
    },
    async pendingDeliveries() {
      usable();
      return deliveries.pending();
    },

    async close() {
      if (closed) return;
      closed = true;
      try {
        await writes.settled();
      } finally {
        await releaseLock();
      }
    },
  };
  return store;
}
