/**
 * The one-time move from store.json (every record in one JSON file) to store.db. The database
 * is built beside the old file under a temporary name, in one transaction, synced, and renamed
 * into place; only then is store.json renamed to `store.json.migrated` (kept as a backup).
 * A crash before the first rename leaves store.json as it was (the next start builds again
 * from scratch); a crash between the two renames leaves a complete store.db, and the next
 * start only sets store.json aside. Event logs, patches, summaries and delivery bodies are
 * files already and stay where they are.
 */
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "../log.ts";
import { parseStoreFile } from "./store-json.ts";
import { createWrites, openDatabase } from "./sqlite-tables.ts";

export const STORE_DB = "store.db";
const STORE_JSON = "store.json";
export const STORE_JSON_BACKUP = "store.json.migrated";

/** Migrate `<dataDir>/store.json` into `<dataDir>/store.db` if that has not been done yet. */
export function migrateStoreJson(dataDir: string, log: Logger): void {
  const json = path.join(dataDir, STORE_JSON);
  const db = path.join(dataDir, STORE_DB);
  if (!fs.existsSync(json)) return;
  if (fs.existsSync(db)) {
    log.warn("store.db is complete but store.json was not set aside (a crash mid-migration?); setting it aside now");
    setAside(dataDir, json);
    return;
  }
  const data = parseStoreFile(fs.readFileSync(json, "utf8"), json);
  const started = Date.now();
  const tmp = `${db}.migrating`;
  // What a crash during an earlier attempt left is incomplete by construction: start over.
  for (const f of [tmp, `${tmp}-journal`]) fs.rmSync(f, { force: true });
  const conn = openDatabase(tmp, { wal: false });
  try {
    const w = createWrites(conn);
    conn.transaction(() => {
      for (const r of data.runs) w.insertRun(r);
      for (const t of data.turns) w.putTurn(t);
      for (const k of data.keys) w.putKey(k);
      for (const r of data.repositories) w.putRepository(r);
      for (const s of data.secrets) w.putSecret(s);
      for (const s of data.ownerSecrets) w.putOwnerSecret(s);
      for (const b of data.ownerBudgets) w.putOwnerBudget(b);
      for (const g of data.groups) w.putGroup(g);
      for (const h of data.webhooks) w.putWebhook(h);
      for (const d of data.deliveries) w.putDelivery(d);
    })();
  } finally {
    conn.close();
  }
  fsyncPath(tmp);
  fs.renameSync(tmp, db);
  fsyncPath(dataDir);
  setAside(dataDir, json);
  log.info("migrated store.json to store.db", {
    runs: data.runs.length,
    keys: data.keys.length,
    ms: Date.now() - started,
    backup: STORE_JSON_BACKUP,
  });
}

/** Rename store.json to the backup name (never over an earlier backup), durably. */
function setAside(dataDir: string, json: string): void {
  let backup = path.join(dataDir, STORE_JSON_BACKUP);
  if (fs.existsSync(backup)) backup = `${backup}-${Date.now()}`;
  fs.renameSync(json, backup);
  fsyncPath(dataDir);
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
