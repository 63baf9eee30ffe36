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
  /** Told each attempt's outcome once it is stored (metrics). */
  onAttempt?: (outcome: "delivered" | "failed" | "retry") => void;
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
/** How long a lane the store failed under waits before it looks again. */
const LANE_RETRY_MS = 5_000;

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
    // A webhook that is gone, or whose secret no longer opens (another secrets key), will not
    // come back by waiting: the delivery fails now, with the reason in its log.
    let target: { url: string; secret: string } | undefined;
    let unusable = "the webhook was deleted";
    try {
      target = await deps.target(d);
    } catch (e) {
      unusable = `the webhook cannot be used: ${e instanceof Error ? e.message : String(e)}`;
    }
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
      : { ok: false, statusCode: null, latencyMs: 0, error: unusable };
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
    deps.onAttempt?.(settled.status === "pending" ? "retry" : settled.status);
  }

  function kick({ runId, webhookId }: Pick<DeliveryRecord, "runId" | "webhookId">): void {
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
      if (closed) return;
      // The store refused a read or write (disk full, gone): the delivery is still pending; look again later.
      log.warn("a webhook delivery lane stopped; retrying", { runId, webhookId, error: e });
      setTimeout(() => kick({ runId, webhookId }), LANE_RETRY_MS).unref();
    });
  }

  return {
    kick,
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
