/**
 * A database of its own for each test file: created on the local Postgres (.ci/run starts it)
 * under a random name and dropped at the end, with whatever connections are left on it.
 * PATCHBAY_TEST_DATABASE_URL names the server's maintenance database (default: trust auth as
 * `postgres` on 127.0.0.1:5432).
 */
import { randomBytes } from "node:crypto";
import pg from "pg";

const ADMIN_URL = process.env.PATCHBAY_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface TestDatabase {
  /** Connection URL of the new database. */
  url: string;
  name: string;
  /** Drop it (ending its connections first). Idempotent. */
  drop(): Promise<void>;
}

async function admin<T>(work: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: ADMIN_URL });
  await c.connect();
  try {
    return await work(c);
  } finally {
    await c.end();
  }
}

export async function createTestDatabase(prefix = "patchbay_test"): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    url: url.toString(),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** Empty every table of Patchbay's schema in the database at `url` (not the migrations' record). */
export async function emptyDatabase(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ tablename: string }>(
      "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'patchbay_migrations'",
    );
    if (rows.length) await c.query(`TRUNCATE ${rows.map((r) => `"${r.tablename}"`).join(", ")}`);
  } finally {
    await c.end();
  }
}
