/**
 * The file behind the embedded store (lowdb.ts): the shape of `store.json`, an empty one, the
 * lowdb adapter that writes it privately and atomically, and the scheduling of its writes.
 */
import fs from "node:fs";
import type { Adapter } from "lowdb";
import * as z from "zod";
import { EngineError } from "../errors.ts";
import { GroupRecord } from "../run/group-schema.ts";
import { RunRecord, TurnRecord } from "../run/schema.ts";
import { WebhookRecord } from "../webhooks/schema.ts";
import { StoredDelivery } from "./delivery-records.ts";
import { writePrivateFile } from "./private-file.ts";
import { ApiKeyRecord, OwnerBudgetRecord, OwnerSecretRecord, RepositoryRecord, SecretRecord } from "./store.ts";

/** The shape of store.json. `version` lets a later release migrate old files. */
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

export const emptyStore = (): StoreFile => ({
  version: 1,
  runs: [],
  turns: [],
  keys: [],
  repositories: [],
  secrets: [],
  ownerSecrets: [],
  ownerBudgets: [],
  groups: [],
  webhooks: [],
  deliveries: [],
});

/**
 * lowdb adapter for store.json. Unlike lowdb's JSONFile (steno), it creates the file 0600
 * (the store holds key hashes and encrypted secrets) and fsyncs before the rename, so a
 * crash leaves the old file or the new one, never an empty one. Writes are serialised by
 * the store, so one temp name is enough.
 */
export class PrivateJsonFile implements Adapter<unknown> {
  constructor(private readonly file: string) {}

  async read(): Promise<unknown> {
    let text: string;
    try {
      text = await fs.promises.readFile(this.file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
      throw new EngineError(
        "internal",
        `store file ${this.file} is not valid JSON (${e.message}); restore it from a backup or move it away to start empty`,
        {
          file: this.file,
        },
      );
    }
  }

  async write(data: unknown): Promise<void> {
    await writePrivateFile(this.file, JSON.stringify(data, null, 2));
  }
}

export interface ScheduledWrites {
  /** Resolves when a write that includes every change made so far has reached the disk. */
  persist(): Promise<void>;
  /** The newest write started or queued (close waits for it, and sees its failure). */
  settled(): Promise<void>;
}

/**
 * Whole-file writes, coalesced: the changes of one tick share one write, writes never overlap,
 * and a failed write's changes ride on the next (it carries the whole state). `queued` is the
 * write that will include a change made now; `last` is the newest started or queued.
 */
export function scheduleWrites(write: () => Promise<void>): ScheduledWrites {
  let queued: Promise<void> | undefined;
  let last: Promise<void> = Promise.resolve();
  const noop = () => undefined;
  return {
    persist() {
      if (queued) return queued;
      const previous = last;
      const next = (async () => {
        // A failed write was already reported to its callers; this one retries its changes.
        await previous.then(noop, noop);
        // Let the rest of this tick's mutations join this write.
        await new Promise((r) => setImmediate(r));
        queued = undefined;
        await write();
      })();
      queued = next;
      last = next;
      return next;
    },
    settled: () => last,
  };
}

/** Callers get copies: changing a returned record must not change the store behind its back. */
export function copy<T>(v: T): T {
  return v === undefined ? v : structuredClone(v);
}

/**
 * Check a record before it is stored. A bad record written now would make store.json
 * refuse to load at the next start, so it is refused here, where the bug is.
 */
export function valid<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  throw new EngineError("internal", `refusing to store an invalid ${what}: ${issue.path.join(".")}: ${issue.message}`);
}
