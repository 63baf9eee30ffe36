/**
 * Schema migrations for the Postgres store, run by node-pg-migrate on every start: all
 * pending ones in one transaction, under its advisory lock in `wait` mode, so replicas that
 * start together migrate once and the others wait for it and then find nothing to do.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { runner } from "node-pg-migrate";
import type { Logger } from "../../log.ts";

/** SQL files, `NNNN_name.sql` with `-- Up Migration` / `-- Down Migration` sections. */
export const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "migrations");

/** Bring the database at `databaseUrl` up to date; returns the names of the migrations applied. */
export async function migrate(databaseUrl: string, log: Logger): Promise<string[]> {
  const applied = await runner({
    databaseUrl,
    dir: MIGRATIONS_DIR,
    direction: "up",
    migrationsTable: "patchbay_migrations",
    singleTransaction: true,
    advisoryLockMode: "wait",
    checkOrder: true,
    logger: { debug: () => undefined, info: () => undefined, warn: (m) => log.warn(m), error: (m) => log.error(m) },
  });
  if (applied.length) log.info("database migrated", { migrations: applied.map((m) => m.name) });
  return applied.map((m) => m.name);
}
