/** Records for store tests: complete and schema-valid, with overrides. */
import type { RunRecord, TurnRecord } from "../../../src/engine/run/schema.ts";

export function runRecord(over: Partial<RunRecord> & { id: string }): RunRecord {
  return {
    ownerId: "own_a",
    status: "queued",
    repository: { fullName: "octo/demo", owner: "octo", name: "demo" },
    modelId: "test/model",
    taskKind: "code",
    validationMode: "basic",
    publish: { mode: "none" },
    billingMode: "managed",
    turnCount: 0,
    sessionExpiresAt: null,
    summary: null,
    changedPaths: [],
    diffStats: null,
    hasPatch: false,
    draftPullRequest: null,
    validation: null,
    error: null,
    usage: { inputTokens: 0, outputTokens: 0 },
    chainedFrom: null,
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
    startedAt: null,
    finishedAt: null,
    ...over,
  };
}

export function turnRecord(over: Partial<TurnRecord> & { runId: string; n: number }): TurnRecord {
  return {
    prompt: "do it",
    status: "running",
    summary: null,
    error: null,
    startedAt: "2026-01-01T00:00:00.000Z",
    finishedAt: null,
    ...over,
  };
}
