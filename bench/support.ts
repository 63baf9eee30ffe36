/**
 * What several benchmark modules need: a repository to clone (the tests' own `makeRepo`), the
 * memory of the processes a session holds, and a database of their own on the local Postgres.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { descendants } from "../src/engine/sandbox/process.ts";
import { makeRepo, processesUnder } from "../test/helpers.ts";

/**
 * A fresh directory under the system temp dir for one module's data, searchable (0711, not
 * listable) by others: a root Patchbay's bwrap runs the agent as an unprivileged user
 * (PATCHBAY_SANDBOX_UID), which must traverse it to reach the sandboxes inside. mkdtemp makes 0700.
 */
export function benchTempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `patchbay-bench-${prefix}-`));
  fs.chmodSync(dir, 0o711);
  return dir;
}

/**
 * A bare repository `<base>/<fullName>.git` of `files` small source files (`lines` lines each),
 * so a clone is not free. Returns the PATCHBAY_GIT_BASE_URL that serves it.
 */
export function benchRepository(base: string, fullName: string, files: number, lines = 1): string {
  const contents = Object.fromEntries(
    Array.from({ length: files }, (_, i) => [`src/mod${i}.js`, `export const value${i} = ${i};\n`.repeat(lines)]),
  );
  return makeRepo(base, fullName, contents).baseUrl;
}

/** RSS (MB) of one process; throws if it is gone. */
export function rssMbOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** Summed RSS (MB) of `pids`; one that ended meanwhile counts nothing. */
export function rssMb(pids: readonly number[]): number {
  let mb = 0;
  for (const pid of pids) {
    try {
      mb += rssMbOf(pid);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
  return mb;
}

/** Processes working (on the host) inside `dir`, and everything they started. */
export function processTree(dir: string): number[] {
  return [...new Set(descendants(processesUnder(dir)))];
}

/** A Patchbay's environment for a benchmark: its data dir and provider, the bench repository and the scripted model. */
export function benchEnv(o: {
  dataDir: string;
  sandbox: "local" | "bwrap";
  gitBase: string;
  modelBaseUrl: string;
}): Record<string, string | undefined> {
  return {
    PATH: process.env.PATH,
    PATCHBAY_DATA_DIR: o.dataDir,
    PATCHBAY_SANDBOX: o.sandbox,
    PATCHBAY_GIT_BASE_URL: o.gitBase,
    PATCHBAY_OPENROUTER_BASE_URL: o.modelBaseUrl,
    OPENROUTER_API_KEY: "sk-bench",
  };
}

const PG_ADMIN_URL = process.env.PATCHBAY_BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

async function pgAdmin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A fresh database on the local Postgres (PATCHBAY_BENCH_DATABASE_URL, default trust auth); `drop` removes it. */
export async function benchDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `patchbay_bench_${randomBytes(5).toString("hex")}`;
  await pgAdmin(`CREATE DATABASE ${name}`);
  return {
    url: Object.assign(new URL(PG_ADMIN_URL), { pathname: `/${name}` }).toString(),
    drop: () => pgAdmin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}
