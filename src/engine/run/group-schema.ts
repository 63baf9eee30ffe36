/**
 * Groups of sibling attempts (`attempts` > 1 on `POST /runs`): the stored record and the
 * public view, shared by the store, the REST API and the MCP tools.
 */
import * as z from "zod";
import { RunStatus, ValidationMode } from "./schema.ts";

export const GroupStatus = z.enum(["running", "settled"]);

/** One sibling's place in the ranking, fixed when the group settled. */
export const GroupRank = z.object({
  runId: z.string(),
  rank: z.number().int().describe("1 is best"),
  validation: z
    .enum(["passed", "failed", "skipped"])
    .nullable()
    .describe("The run's validation when the group settled; null when it had none (a failed turn)"),
  diffSize: z.number().int().describe("Lines added plus lines deleted"),
});
export type GroupRank = z.infer<typeof GroupRank>;

export const GroupRecord = z.object({
  id: z.string(),
  ownerId: z.string(),
  /** The siblings, in attempt order. */
  runIds: z.array(z.string()).min(1),
  validationMode: ValidationMode,
  status: GroupStatus,
  /** Null until settled, and for good when the mode is `minimal` (nothing to rank by). */
  ranking: z.array(GroupRank).nullable(),
  bestRunId: z.string().nullable(),
  createdAt: z.string(),
  settledAt: z.string().nullable(),
});
export type GroupRecord = z.infer<typeof GroupRecord>;

export const GroupView = z.object({
  id: z.string().describe("Group id (`grp_…`)"),
  status: GroupStatus.describe(
    "`running` while any sibling is queued or running; `settled` once every one was idle or ended (the ranking is then fixed)",
  ),
  attempts: z.number().int().describe("How many sibling runs the group has"),
  validationMode: ValidationMode.describe("The siblings' validation mode; `minimal` groups are not ranked"),
  bestRunId: z
    .string()
    .nullable()
    .describe(
      "The best sibling once ranked: validation passed first, then the smaller diff; null while running, for `minimal` groups, or when every sibling failed",
    ),
  runs: z
    .array(
      z.object({
        id: z.string().describe("Run id"),
        attempt: z.number().int().describe("Attempt number, 1-based"),
        status: RunStatus.describe("The run's current status"),
        rank: z.number().int().nullable().describe("1 is best; null until the group is ranked"),
        validation: GroupRank.shape.validation,
        diffSize: z.number().int().nullable().describe("Lines added plus deleted when ranked; null before"),
      }),
    )
    .describe("The siblings in attempt order"),
  createdAt: z.string().describe("ISO 8601"),
  settledAt: z.string().nullable().describe("When every sibling was idle or ended (ISO 8601); null before"),
});
export type GroupView = z.infer<typeof GroupView>;
