/**
 * The embedded store's webhook deliveries: each record in store.json without its body, and
 * the body in `<dir>/<deliveryId>.json`, written once, before the record is stored, and never
 * changed (every attempt sends the same body). A body holds the run's view (its summary up to
 * 16 KB) and lowdb rewrites store.json whole on every write, so store.json keeps only the
 * small records, as it does for patches and summaries.
 */
import path from "node:path";
import type * as z from "zod";
import { EngineError } from "../errors.ts";
import { DeliveryRecord } from "../webhooks/schema.ts";
import { assertSafeRunId } from "./event-log.ts";
import { readIfExists, writePrivateFile } from "./private-file.ts";

/** A delivery as store.json holds it. */
export const StoredDelivery = DeliveryRecord.omit({ body: true });
export type StoredDelivery = z.infer<typeof StoredDelivery>;

/** The deliveries in memory (by id and by run) and their body files. Only the lowdb store touches it. */
export class DeliveryRecords {
  private readonly byId: Map<string, StoredDelivery>;
  private readonly byRun = new Map<string, Set<string>>();

  /** `dir` must exist. */
  constructor(
    records: readonly StoredDelivery[],
    private readonly dir: string,
  ) {
    this.byId = new Map(records.map((d) => [d.id, d]));
    for (const d of records) this.index(d);
  }

  /** Store or replace one in memory, its body written first when it is new; the caller persists. */
  async put(delivery: DeliveryRecord): Promise<void> {
    const { body, ...record } = delivery;
    if (!this.byId.has(record.id)) await writePrivateFile(this.file(record.id), body);
    this.byId.set(record.id, record);
    this.index(record);
  }

  get(id: string): Promise<DeliveryRecord | undefined> {
    const d = this.byId.get(id);
    return d ? this.withBody(d) : Promise.resolve(undefined);
  }

  /** A run's, by seq. */
  list(runId: string): Promise<DeliveryRecord[]> {
    const list = [...(this.byRun.get(runId) ?? [])].map((id) => this.byId.get(id)!).sort(bySeq);
    return Promise.all(list.map((d) => this.withBody(d)));
  }

  /** Every pending one, by run and seq. */
  pending(): Promise<DeliveryRecord[]> {
    const list = [...this.byId.values()]
      .filter((d) => d.status === "pending")
      .sort((a, b) => (a.runId < b.runId ? -1 : a.runId > b.runId ? 1 : bySeq(a, b)));
    return Promise.all(list.map((d) => this.withBody(d)));
  }

  /** What store.json holds. */
  all(): StoredDelivery[] {
    return [...this.byId.values()];
  }

  private index(d: StoredDelivery): void {
    this.byRun.set(d.runId, (this.byRun.get(d.runId) ?? new Set()).add(d.id));
  }

  private file(id: string): string {
    // Delivery ids are made like run ids: the same check keeps them inside `dir`.
    assertSafeRunId(id);
    return path.join(this.dir, `${id}.json`);
  }

  /** A copy with its body; internal when the body is missing (it is written before its record, so it never is). */
  private async withBody(d: StoredDelivery): Promise<DeliveryRecord> {
    const body = await readIfExists(this.file(d.id));
    if (body === undefined) throw new EngineError("internal", `the body of webhook delivery ${d.id} is missing`);
    return { ...structuredClone(d), body };
  }
}

function bySeq(a: StoredDelivery, b: StoredDelivery): number {
  return a.seq - b.seq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
