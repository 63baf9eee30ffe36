/**
 * `store.json`, the file the embedded store kept every record in before store.db (lowdb,
 * rewritten whole on every write): its shape, read once to migrate it (sqlite-migrate.ts).
 */
import * as z from "zod";
import { EngineError } from "../errors.ts";
import { GroupRecord } from "../run/group-schema.ts";
import { RunRecord, TurnRecord } from "../run/schema.ts";
import { WebhookRecord } from "../webhooks/schema.ts";
import { StoredDelivery } from "./delivery-records.ts";
import { ApiKeyRecord, OwnerBudgetRecord, OwnerSecretRecord, RepositoryRecord, SecretRecord } from "./store.ts";

export const StoreFile = z.object({
  version: z.literal(1),
  runs: z.array(RunRecord),
  turns: z.array(TurnRecord),
  keys: z.array(ApiKeyRecord),
  repositories: z.array(RepositoryRecord),
  secrets: z.array(SecretRecord),
  /** Absent in files written before owner secrets existed. */
  ownerSecrets: z.array(OwnerSecretRecord).default([]),
  /** Absent in files written before budgets existed. */
  ownerBudgets: z.array(OwnerBudgetRecord).default([]),
  /** Absent in files written before groups of attempts existed. */
  groups: z.array(GroupRecord).default([]),
  /** Absent in files written before webhooks existed. */
  webhooks: z.array(WebhookRecord).default([]),
  /** Without their bodies, which are files of their own (delivery-records.ts). */
  deliveries: z.array(StoredDelivery).default([]),
});
export type StoreFile = z.infer<typeof StoreFile>;

/** Parse and check store.json's text; a clear error naming the file and the bad field otherwise. */
export function parseStoreFile(text: string, file: string): StoreFile {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    throw new EngineError(
      "internal",
      `store file ${file} is not valid JSON (${e.message}); restore it from a backup or move it away to start empty`,
      { file },
    );
  }
  const checked = StoreFile.safeParse(json);
  if (checked.success) return checked.data;
  const issue = checked.error.issues[0]!;
  throw new EngineError(
    "internal",
    `store file ${file} is corrupt: ${issue.path.join(".") || "(root)"}: ${issue.message}; restore it from a backup or move it away to start empty`,
    { file },
  );
}
