/**
 * How a group of attempts ranks its siblings (`rankSiblings`, pure): runs that can be best
 * first, then validation, then a run with changes, then the smaller diff, then attempt order.
 */
import { describe, expect, it } from "vitest";
import { rankSiblings } from "../../../src/engine/run/groups.ts";
import type { RunRecord, ValidationResult } from "../../../src/engine/run/schema.ts";
import { runRecord } from "../store/fixtures.ts";

function sibling(
  attempt: number,
  over: { status?: RunRecord["status"]; validation?: ValidationResult["status"] | null; lines?: number },
): RunRecord {
  const lines = over.lines ?? 0;
  return runRecord({
    id: `run_${attempt}`,
    status: over.status ?? "idle",
    group: { id: "grp_1", attempt, attempts: 4, holdPublish: true },
    validation: over.validation ? { mode: "tests", status: over.validation, commands: [] } : null,
    hasPatch: lines > 0,
    diffStats: lines > 0 ? { files: 1, additions: lines, deletions: 0 } : null,
  });
}

const order = (runs: RunRecord[]) => rankSiblings(runs).map((r) => r.runId);

describe("ranking a group of attempts", () => {
  it("puts a passing run first even when its diff is the largest, then the smaller diff", () => {
    const ranked = rankSiblings([
      sibling(1, { validation: "failed", lines: 2 }),
      sibling(2, { validation: "passed", lines: 30 }),
      sibling(3, { validation: "failed", lines: 1 }),
    ]);
    expect(ranked).toEqual([
      { runId: "run_2", rank: 1, validation: "passed", diffSize: 30 },
      { runId: "run_3", rank: 2, validation: "failed", diffSize: 1 },
      { runId: "run_1", rank: 3, validation: "failed", diffSize: 2 },
    ]);
  });

  it("ranks passed, then skipped, then failed validation", () => {
    expect(
      order([
        sibling(1, { validation: "failed", lines: 1 }),
        sibling(2, { validation: "skipped", lines: 1 }),
        sibling(3, { validation: "passed", lines: 1 }),
      ]),
    ).toEqual(["run_3", "run_2", "run_1"]);
  });

  it("puts failed and cancelled runs last whatever their validation said", () => {
    expect(
      order([
        sibling(1, { status: "failed", validation: "passed", lines: 1 }),
        sibling(2, { status: "cancelled", lines: 1 }),
        sibling(3, { validation: "failed", lines: 5 }),
        sibling(4, { status: "completed", validation: "failed", lines: 9 }),
      ]),
    ).toEqual(["run_3", "run_4", "run_1", "run_2"]);
  });

  it("prefers a run that changed something over an empty one, and keeps attempt order on a tie", () => {
    expect(
      order([
        sibling(1, { validation: "passed", lines: 0 }),
        sibling(2, { validation: "passed", lines: 4 }),
        sibling(3, { validation: "passed", lines: 4 }),
      ]),
    ).toEqual(["run_2", "run_3", "run_1"]);
  });
});
