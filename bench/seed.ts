/**
 * Seeding a data dir for load benchmarks. Keys go through the store API; runs are validated
 * as the store would and inserted with the store's own statements in one transaction
 * (100,000 runs in seconds, where one commit per run would take minutes). Events are written as JSONL files directly, one write per run, in the exact line
 * format the store appends (checked against the schema), since a million appendFileSync
 * calls would take longer than the benchmark.
 */
import fs from "node:fs";
import path from "node:path";
import { RunEvent, type NewRunEvent } from "../src/engine/events/schema.ts";
import { createKeyService } from "../src/engine/keys/keys.ts";
import { RunRecord } from "../src/engine/run/schema.ts";
import { createSqliteStore } from "../src/engine/store/sqlite.ts";
import { STORE_DB } from "../src/engine/store/sqlite-migrate.ts";
import { createWrites, openDatabase, valid } from "../src/engine/store/sqlite-tables.ts";

export interface SeedOptions {
  dataDir: string;
  runs: number;
  /** Total events, spread evenly over the runs. */
  events: number;
  ownerId?: string;
}

export interface Seeded {
  /** A read/write key of `ownerId`, which owns every seeded run. */
  apiKey: string;
  ownerId: string;
  runIds: string[];
  seedMs: number;
}

/** A representative stored event: a tool call with a little output. */
export function sampleEvent(i: number): NewRunEvent {
  return {
    type: "builder.event",
    turn: 1,
    data: {
      kind: "tool",
      tool: "edit",
      callId: `call_${i}`,
      status: "completed",
      title: `src/file${i % 50}.ts`,
      output: "x".repeat(160),
    },
  };
}

export function sampleRun(i: number, ownerId: string, createdAt: Date): RunRecord {
  const t = createdAt.toISOString();
  return {
    id: `run_seed${i.toString(36).padStart(6, "0")}`,
    ownerId,
    status: i % 10 === 0 ? "failed" : "completed",
    repository: { fullName: "acme/web", owner: "acme", name: "web" },
    modelId: "test/model",
    taskKind: "code",
    baseRef: "main",
    baseSha: "0".repeat(40),
    validationMode: "basic",
    publish: { mode: "none" },
    billingMode: "managed",
    turnCount: 1,
    sessionExpiresAt: null,
    summary: `Seeded run ${i}: changed two files and added a test.`,
    changedPaths: ["src/app.js", "test/app.test.js"],
    diffStats: { files: 2, additions: 12, deletions: 3 },
    hasPatch: false,
    draftPullRequest: null,
    validation: null,
    error: i % 10 === 0 ? { code: "model_error", message: "seeded failure" } : null,
    usage: { inputTokens: 1200, outputTokens: 300 },
    chainedFrom: null,
    createdAt: t,
    updatedAt: t,
    startedAt: t,
    finishedAt: t,
  };
}

export async function seedStore(opts: SeedOptions): Promise<Seeded> {
  const started = Date.now();
  const ownerId = opts.ownerId ?? "owner-bench";
  const store = await createSqliteStore({ dataDir: opts.dataDir });
  try {
    const { key } = await createKeyService({ store, defaultOwnerId: ownerId }).create({
      name: "bench",
      ownerId,
      scopes: ["read:builder", "write:builder"],
    });
    const t0 = Date.now() - opts.runs * 1000;
    const runs = Array.from({ length: opts.runs }, (_, i) => sampleRun(i, ownerId, new Date(t0 + i * 1000)));
    insertRuns(opts.dataDir, runs);
    const perRun = Math.floor(opts.events / opts.runs);
    const at = new Date(t0).toISOString();
    let n = 0;
    for (const r of runs) {
      const count = r === runs[runs.length - 1] ? opts.events - n : perRun;
      const lines: string[] = [];
      for (let i = 0; i < count; i++) {
        const ev = { ...sampleEvent(n + i), id: i + 1, runId: r.id, at };
        if (i === 0) RunEvent.parse(ev);
        lines.push(JSON.stringify(ev));
      }
      if (count) fs.writeFileSync(path.join(opts.dataDir, "events", `${r.id}.jsonl`), lines.join("\n") + "\n");
      n += count;
    }
    return { apiKey: key, ownerId, runIds: runs.map((r) => r.id), seedMs: Date.now() - started };
  } finally {
    await store.close();
  }
}

/** Insert runs into `<dataDir>/store.db` in one transaction (beside an open store: WAL allows it). */
export function insertRuns(dataDir: string, runs: readonly RunRecord[]): void {
  const db = openDatabase(path.join(dataDir, STORE_DB), { wal: true });
  try {
    const w = createWrites(db);
    db.transaction(() => {
      for (const r of runs) w.insertRun(valid(RunRecord, r, "run"));
    })();
  } finally {
    db.close();
  }
}
