/**
 * Real `patchbay serve` replicas on one fresh Postgres database, behind the round-robin proxy
 * (no sticky sessions), for the multi-replica suites: the first start creates the admin key,
 * the others find it; one more can join later (a replacement for a killed one). `close` keeps
 * each replica's log for a failure's post-mortem and kills what a killed replica left.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import pg from "pg";
import { startRoundRobin, type RoundRobin } from "../fixtures/round-robin.ts";
import { tempDir, waitFor } from "../helpers.ts";
import { createTestDatabase, type TestDatabase } from "../support/postgres.ts";
import { opencodeUnder, startServe, type ServeChild } from "../support/serve.ts";

export interface ClusterOptions {
  /** Replicas started at once. */
  count: number;
  /**
   * Each replica's own environment (fixtures, limits, sandbox) by its index; the cluster adds
   * the database, the shared secret key and a data dir of its own.
   */
  env: (i: number) => Record<string, string> | Promise<Record<string, string>>;
  /** How a replica starts (default `startServe`: `node bin/patchbay.mjs serve`). */
  start?: (env: Record<string, string>) => Promise<ServeChild>;
}

export interface Cluster {
  db: TestDatabase;
  lb: RoundRobin;
  /** By index, in start order; a killed one stays in its place. */
  replicas: ServeChild[];
  dataDirs: string[];
  /** The admin key the first replica created. */
  key: string;
  /** Through the proxy: each call may land on any replica. */
  viaLb(
    method: string,
    p: string,
    o?: { body?: unknown; headers?: Record<string, string>; key?: string },
  ): Promise<{ status: number; headers: Headers; json: any }>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** The replica id holding the run's lease (null: none). */
  leaseOf(runId: string): Promise<string | null>;
  /** The index of the replica holding the run's lease, once it has one. */
  replicaIndexOf(runId: string): Promise<number>;
  /** Start one more replica (a replacement) and put it behind the proxy; its index. */
  add(): Promise<number>;
  close(): Promise<void>;
}

export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const db = await createTestDatabase();
  const secretKey = randomBytes(32).toString("base64");
  const replicas: ServeChild[] = [];
  const dataDirs: string[] = [];
  const start = o.start ?? startServe;
  const launch = async (i: number): Promise<void> => {
    replicas[i] = await start({
      ...(await o.env(i)),
      PATCHBAY_DATA_DIR: (dataDirs[i] = tempDir(`replica${i}`)),
      PATCHBAY_DATABASE_URL: db.url,
      PATCHBAY_SECRET_KEY: secretKey,
    });
  };
  let lb: RoundRobin | undefined;
  const cluster: Cluster = {
    db,
    get lb() {
      return lb!;
    },
    replicas,
    dataDirs,
    key: "",
    async viaLb(method, p, r = {}) {
      const headers: Record<string, string> = { authorization: `Bearer ${r.key ?? cluster.key}`, ...r.headers };
      if (r.body !== undefined) headers["content-type"] = "application/json";
      const res = await fetch(lb!.url + p, {
        method,
        headers,
        ...(r.body !== undefined ? { body: JSON.stringify(r.body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
    },
    async leaseOf(runId) {
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        const { rows } = await c.query<{ lease_owner: string | null }>("SELECT lease_owner FROM runs WHERE id = $1", [
          runId,
        ]);
        return rows[0]?.lease_owner ?? null;
      } finally {
        await c.end();
      }
    },
    async replicaIndexOf(runId) {
      // Each replica logs its id when it registers.
      const owner = await waitFor(() => cluster.leaseOf(runId), { what: "the run's lease" });
      const i = replicas.findIndex((r) => r.stderr().includes(owner));
      if (i < 0) throw new Error(`no replica logged the id ${owner}`);
      return i;
    },
    async add() {
      const i = replicas.length;
      await launch(i);
      lb!.add(replicas[i]!.url);
      return i;
    },
    async close() {
      const logs = tempDir("replica-logs");
      replicas.forEach((r, i) => r && fs.writeFileSync(path.join(logs, `replica${i}.log`), r.stderr()));
      await lb?.close();
      for (const r of replicas) await r?.stop();
      // The OpenCode server a killed replica left: no later start on its data dir reaps it here.
      for (const dir of dataDirs)
        for (const pid of opencodeUnder(dir)) {
          try {
            process.kill(pid, "SIGKILL");
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== "ESRCH") throw e; // it ended meanwhile
          }
        }
      await db.drop();
    },
  };
  try {
    // The first start on an empty database creates the admin key; the others find it.
    await launch(0);
    cluster.key = replicas[0]!.adminKey!;
    await Promise.all(Array.from({ length: o.count - 1 }, (_, k) => launch(k + 1)));
    lb = await startRoundRobin(replicas.map((r) => r.url));
  } catch (e) {
    await cluster.close();
    throw e;
  }
  return cluster;
}
