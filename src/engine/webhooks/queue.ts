/**
 * The delivery queues: one lane per run and endpoint, which sends that pair's pending
 * deliveries one at a time in `seq` order, so a receiver hears of a run's changes in order
 * and never has two of them in flight. A failed attempt is retried after the next delay of
 * the schedule (with jitter); when the tries run out the delivery is `failed` and the lane
 * moves on. Every outcome is stored before the next attempt, so a restart (kill -9
 * included) resumes from the store: at worst the attempt in flight at the crash is sent again
 * with the same `webhook-id`, which receivers deduplicate by.
 */
import type { Logger } from "../log.ts";
import type { RunStore } from "../store/store.ts";
import type { DeliveryRecord } from "./schema.ts";
import { sendWebhook, type SendResult } from "./send.ts";
import type { TargetPolicy } from "./target.ts";

export interface DeliveryQueuesDeps {
  store: RunStore;
  log: Logger;
  now: () => Date;
  /** Delays before each retry (ms): tries = delays + 1. */
  retryMs: readonly number[];
  timeoutMs: number;
  policy: TargetPolicy;
  /** The endpoint's URL and opened secret; undefined once the webhook is gone. */
  target(delivery: DeliveryRecord): Promise<{ url: string; secret: string } | undefined>;
  /** Replace the sender (tests of the schedule). */
  send?: typeof sendWebhook;
}

export interface DeliveryQueues {
  /** A delivery of this run and endpoint is pending (new, redelivered, found at start): make sure its lane runs. */
  kick(d: Pick<DeliveryRecord, "runId" | "webhookId">): void;
  /** Stop: abort attempts in flight (they stay pending, for the next start) and wait for the lanes to stop. */
  close(): Promise<void>;
}

/** One run-and-endpoint pair's sender. Only the queues touch it. */
interface Lane {
  /** A kick came since the lane last looked at the store. */
  dirty: boolean;
  wake?: () => void;
  abort: AbortController;
  done: Promise<void>;
}

const JITTER = 0.2;

export function createDeliveryQueues(deps: DeliveryQueuesDeps): DeliveryQueues {
  const { store, log, now } = deps;
  const send = deps.send ?? sendWebhook;
  const lanes = new Map<string, Lane>();
  let closed = false;

  async function drain(key: string, lane: Lane, runId: string, webhookId: string): Promise<void> {
    for (;;) {
      lane.dirty = false;
      if (closed) return;
      const next = (await store.listDeliveries(runId)).find((d) => d.webhookId === webhookId && d.status === "pending");
      if (!next) {
        if (lane.dirty) continue;
        lanes.delete(key);
        return;
      }
      const wait = next.nextAttemptAt ? Date.parse(next.nextAttemptAt) - now().getTime() : 0;
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          lane.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        lane.wake = undefined;
        continue;
      }
      await attempt(next, lane.abort.signal);
    }
  }

  async function attempt(d: DeliveryRecord, signal: AbortSignal): Promise<void> {
    const at = now().toISOString();
    const target = await deps.target(d);
    const result: SendResult = target
      ? await send({
          url: target.url,
          secret: target.secret,
          messageId: d.id,
          body: d.body,
          timeoutMs: deps.timeoutMs,
          policy: deps.policy,
          signal,
          now,
        })
      : { ok: false, statusCode: null, latencyMs: 0, error: "the webhook was deleted" };
    // Cut short by shutdown: not an attempt of the receiver's; the next start sends it.
    if (closed && signal.aborted) return;
    const attempts = [
      ...d.attempts,
      {
        attempt: d.attempts.length + 1,
        at,
        statusCode: result.statusCode,
        latencyMs: result.latencyMs,
        ...(result.error !== undefined ? { error: result.error } : {}),
      },
    ];
    const tries = attempts.length - (d.roundStart ?? 0);
    const delay = deps.retryMs[tries - 1];
    const settled: DeliveryRecord = result.ok
      ? { ...d, attempts, status: "delivered", nextAttemptAt: null }
      : !target || delay === undefined
        ? { ...d, attempts, status: "failed", nextAttemptAt: null }
        : { ...d, attempts, nextAttemptAt: new Date(now().getTime() + jittered(delay)).toISOString() };
    if (!result.ok)
      log.info("webhook delivery failed", {
        runId: d.runId,
        deliveryId: d.id,
        attempt: attempts.length,
        statusCode: result.statusCode,
        error: result.error,
        willRetry: settled.status === "pending",
      });
    await store.putDelivery(settled);
  }

  return {
    kick({ runId, webhookId }) {
      if (closed) return;
      const key = `${runId}\n${webhookId}`;
      const lane = lanes.get(key);
      if (lane) {
        lane.dirty = true;
        lane.wake?.();
        return;
      }
      const fresh: Lane = { dirty: false, abort: new AbortController(), done: Promise.resolve() };
      lanes.set(key, fresh);
      fresh.done = drain(key, fresh, runId, webhookId).catch((e: unknown) => {
        lanes.delete(key);
        // The store refused a write (closing, disk): the delivery stays pending for the next start.
        if (!closed) log.warn("a webhook delivery lane stopped", { runId, webhookId, error: e });
      });
    },
    async close() {
      closed = true;
      const all = [...lanes.values()];
      for (const lane of all) {
        lane.abort.abort();
        lane.wake?.();
      }
      await Promise.allSettled(all.map((l) => l.done));
    },
  };
}

function jittered(ms: number): number {
  return Math.round(ms * (1 - JITTER + Math.random() * 2 * JITTER));
}
