/**
 * Webhook delivery bodies: `<dir>/<deliveryId>.json`, written once, before the delivery's
 * record is stored, and never changed (every attempt sends the same body). Kept out of
 * store.json for the reason patches are: a body holds the run's view (its summary up to
 * 16 KB), and lowdb rewrites that whole file on every write, so store.json keeps only each
 * delivery's small record.
 */
import path from "node:path";
import { EngineError } from "../errors.ts";
import { assertSafeRunId } from "./event-log.ts";
import { readIfExists, writePrivateFile } from "./private-file.ts";

export interface DeliveryBodies {
  put(deliveryId: string, body: string): Promise<void>;
  /** Throws internal when the body is missing (it is written before its record, so it never is). */
  get(deliveryId: string): Promise<string>;
}

/** Body files in `dir`, which must exist. */
export function createDeliveryBodies(dir: string): DeliveryBodies {
  const file = (id: string) => {
    // Delivery ids are made like run ids: the same check keeps them inside `dir`.
    assertSafeRunId(id);
    return path.join(dir, `${id}.json`);
  };
  return {
    put: (id, body) => writePrivateFile(file(id), body),
    async get(id) {
      const body = await readIfExists(file(id));
      if (body === undefined) throw new EngineError("internal", `the body of webhook delivery ${id} is missing`);
      return body;
    },
  };
}
