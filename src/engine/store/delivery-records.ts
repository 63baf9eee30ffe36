/**
 * The embedded store's webhook delivery bodies: each delivery's record is a row in store.db
 * without its body, and the body is `<dir>/<deliveryId>.json`, written once, before the record
 * is first stored, and never changed (every attempt sends the same body). A body holds the
 * run's view (its summary up to 16 KB): kept out of the database as patches and summaries are.
 */
import fs from "node:fs";
import path from "node:path";
import type * as z from "zod";
import { EngineError } from "../errors.ts";
import { DeliveryRecord } from "../webhooks/schema.ts";
import { assertSafeRunId } from "./event-log.ts";
import { readIfExists, writePrivateFile } from "./private-file.ts";

/** A delivery as the database (and store.json before it) holds it. */
export const StoredDelivery = DeliveryRecord.omit({ body: true });
export type StoredDelivery = z.infer<typeof StoredDelivery>;

export interface DeliveryBodies {
  /** Write the body of a new delivery. */
  put(id: string, body: string): Promise<void>;
  /** The record with its body; internal when the body is missing (it is written first, so it never is). */
  withBody(d: StoredDelivery): Promise<DeliveryRecord>;
  remove(id: string): void;
}

/** Delivery bodies in `dir`, which must exist. */
export function createDeliveryBodies(dir: string): DeliveryBodies {
  // Delivery ids are made like run ids: the same check keeps them inside `dir`.
  const file = (id: string) => (assertSafeRunId(id), path.join(dir, `${id}.json`));
  return {
    put: (id, body) => writePrivateFile(file(id), body),
    async withBody(d) {
      const body = await readIfExists(file(d.id));
      if (body === undefined) throw new EngineError("internal", `the body of webhook delivery ${d.id} is missing`);
      return { ...d, body };
    },
    remove: (id) => fs.rmSync(file(id), { force: true }),
  };
}
