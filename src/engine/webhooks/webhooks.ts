/**
 * Webhooks: an owner's endpoints (`/api/v1/webhooks`, every run of the owner) and a run's own
 * (`webhook` on the run), their secrets sealed in the store, and the messages they get. It
 * listens to `bus.onStatus` (every status change, once stored): each change becomes a
 * `run.status` message, and the end of a turn also a `turn.finished` one, stored as pending
 * deliveries (in the order the changes happened) before the queues (queue.ts) send them. A
 * receiver, however slow, never holds up a run: the listener only stores and kicks.
 */
import { randomBytes } from "node:crypto";
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import type { EventBus, StatusChange } from "../events/bus.ts";
import type { Logger } from "../log.ts";
import { parseInput } from "../parse.ts";
import type { RunRecord } from "../run/schema.ts";
import { toRunView } from "../run/view.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { RunStore } from "../store/store.ts";
import { createDeliveryQueues, type DeliveryQueuesDeps } from "./queue.ts";
import {
  WebhookEventType,
  WebhookInput,
  type DeliveryRecord,
  type DeliveryView,
  type RunWebhookInput,
  type WebhookRecord,
  type WebhookView,
} from "./schema.ts";
import { checkWebhookUrl, type TargetPolicy } from "./target.ts";

/** How far back a restart looks for a status change whose messages a crash kept from being stored. */
const RECONCILE_WINDOW_MS = 24 * 3600_000;

/** Most webhooks one owner may register (its runs' own do not count). */
export const MAX_OWNER_WEBHOOKS = 20;

export interface Webhooks {
  /** Register an endpoint for every run of the owner. Throws invalid_request, invalid_webhook_url. */
  create(ownerId: string, input: unknown): Promise<WebhookView>;
  list(ownerId: string): Promise<WebhookView[]>;
  /** Throws webhook_not_found. Its pending deliveries fail at their next attempt. */
  remove(ownerId: string, id: string): Promise<void>;
  /** The run's deliveries, oldest first. Throws run_not_found for another owner's run. */
  deliveries(ownerId: string, runId: string): Promise<DeliveryView[]>;
  /** Send a delivery again (same `webhook-id`, a new round of tries). Throws run_not_found, delivery_not_found. */
  redeliver(ownerId: string, runId: string, deliveryId: string): Promise<DeliveryView>;
}

/** What run creation uses: a run's own webhook, stored (sealed) before the run is. */
export interface RunWebhooks {
  /** Check a run's webhook URL (invalid_webhook_url) before anything slower runs. */
  check(input: RunWebhookInput): void;
  /** Check and store a new run's webhook; `secret` is the client's or one {@link newWebhookSecret} made. */
  attach(ownerId: string, runId: string, input: RunWebhookInput, secret: string): Promise<{ id: string; url: string }>;
  /** A chained run keeps its prior run's webhook (a copy under its own id). */
  copy(prior: RunRecord, runId: string): Promise<{ id: string; url: string } | undefined>;
}

export interface WebhooksPart extends Webhooks, RunWebhooks {
  /** Resume the deliveries a previous process left pending. */
  start(): Promise<void>;
  /** Stop listening and sending; pending deliveries stay stored for the next start. */
  close(): Promise<void>;
}

export interface WebhooksDeps {
  config: Pick<Config, "webhookAllowHttp" | "webhookAllowPrivate" | "webhookRetryMs" | "webhookTimeoutMs">;
  store: RunStore;
  bus: Pick<EventBus, "onStatus">;
  box: SecretBox;
  log: Logger;
  now: () => Date;
  /** Replace the sender (tests). */
  send?: DeliveryQueuesDeps["send"];
  onAttempt?: DeliveryQueuesDeps["onAttempt"];
}

/** A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}

const newId = (prefix: string) =>
  `${prefix}_${Date.now().toString(36)}${randomBytes(9).toString("base64url").replace(/[-_]/g, "x")}`;

/** The secret is sealed under the webhook's id, with the owner as the name: it opens for that pair only. */
const sealScope = (hook: Pick<WebhookRecord, "id">) => `webhook:${hook.id}`;

export function createWebhooks(deps: WebhooksDeps): WebhooksPart {
  const { store, box, log, now, config } = deps;
  const policy: TargetPolicy = { allowHttp: config.webhookAllowHttp, allowPrivate: config.webhookAllowPrivate };
  const queues = createDeliveryQueues({
    store,
    log,
    now,
    retryMs: config.webhookRetryMs,
    timeoutMs: config.webhookTimeoutMs,
    policy,
    ...(deps.send ? { send: deps.send } : {}),
    ...(deps.onAttempt ? { onAttempt: deps.onAttempt } : {}),
    async target(d) {
      const hook = await store.getWebhook(d.webhookId);
      if (!hook) return undefined;
      return { url: hook.url, secret: box.open({ runId: sealScope(hook), name: hook.ownerId, ...hook.secret }) };
    },
  });

  async function storeHook(hook: Omit<WebhookRecord, "secret">, secret: string): Promise<void> {
    const { iv, tag, data } = box.seal(sealScope(hook), hook.ownerId, secret);
    await store.putWebhook({ ...hook, secret: { iv, tag, data } });
  }

  // Changes are stored one after another, in the order the bus told of them: `seq` follows that order.
  let enqueueing: Promise<void> = Promise.resolve();
  let closed = false;
  const unsubscribe = deps.bus.onStatus((change) => {
    enqueueing = enqueueing
      .then(() => enqueue(change))
      .catch((e: unknown) => log.warn("could not queue a webhook delivery", { runId: change.run.id, error: e }));
  });

  async function enqueue({ run, event }: StatusChange): Promise<void> {
    if (closed) return;
    // A webhook registered after the change never hears of it (also when a restart finds the change unsent).
    const hooks = (await store.listWebhooks(run.ownerId)).filter(
      (h) => (h.runId === undefined || h.runId === run.id) && h.createdAt <= event.at,
    );
    if (hooks.length === 0) return;
    const existing = await store.listDeliveries(run.id);
    let seq = existing.reduce((m, d) => Math.max(m, d.seq), 0);
    const turn = event.data.turn;
    // A turn ends idle, failed or cancelled; `completed` only ever follows an idle run's ended session.
    const turnOver =
      turn > 0 &&
      ["idle", "failed", "cancelled"].includes(run.status) &&
      !existing.some((d) => d.type === "turn.finished" && d.turn === turn);
    const view = toRunView(run, now());
    const messages: { type: WebhookEventType; data: Record<string, unknown>; turn?: number }[] = [
      { type: "run.status", data: { run: view } },
      ...(turnOver
        ? [
            {
              type: "turn.finished" as const,
              turn,
              data: { run: view, turn, changedPaths: run.changedPaths, diffStats: run.diffStats },
            },
          ]
        : []),
    ];
    const created: DeliveryRecord[] = [];
    for (const m of messages) {
      seq++;
      for (const hook of hooks) {
        if (!hook.events.includes(m.type)) continue;
        const id = newId("msg");
        created.push({
          id,
          runId: run.id,
          ownerId: run.ownerId,
          webhookId: hook.id,
          url: hook.url,
          seq,
          type: m.type,
          eventId: event.id,
          ...(m.turn !== undefined ? { turn: m.turn } : {}),
          body: JSON.stringify({ type: m.type, id, at: event.at, data: m.data }),
          status: "pending",
          attempts: [],
          nextAttemptAt: null,
          createdAt: now().toISOString(),
        });
      }
    }
    // Durable before the first attempt: a crash after this line loses no message.
    await Promise.all(created.map((d) => store.putDelivery(d)));
    for (const d of created) queues.kick(d);
  }

  /**
   * After a crash: a status change stored just before it, whose messages were not yet stored,
   * is queued now (before recovery's own changes). Only a run's last event is looked at, and
   * only for runs changed within RECONCILE_WINDOW_MS: a change the crash caught is the last.
   */
  async function reconcile(): Promise<void> {
    const since = new Date(now().getTime() - RECONCILE_WINDOW_MS).toISOString();
    // Only the runs changed in the window: a store of 100,000 runs is not read at every start.
    const runs = await store.runsUpdatedSince(since);
    for (const run of runs) {
      const lastId = await store.lastEventId(run.id);
      const [last] = lastId > 0 ? await store.readEvents(run.id, lastId - 1, 1) : [];
      if (last?.type !== "run.status" || last.data.status === "queued") continue;
      if ((await store.listDeliveries(run.id)).some((d) => d.eventId === last.id)) continue;
      enqueueing = enqueueing
        .then(() => enqueue({ run, event: last }))
        .catch((e: unknown) => log.warn("could not queue a webhook delivery", { runId: run.id, error: e }));
    }
    await enqueueing;
  }

  async function ownedRun(ownerId: string, runId: string): Promise<RunRecord> {
    const run = /^[A-Za-z0-9_-]{1,64}$/.test(runId) ? await store.getRun(runId) : undefined;
    if (!run || run.ownerId !== ownerId) throw new EngineError("run_not_found", `run ${runId} not found`);
    return run;
  }

  const show = (hook: Omit<WebhookRecord, "secret">, secret?: string): WebhookView => ({
    id: hook.id,
    url: hook.url,
    events: hook.events,
    createdAt: hook.createdAt,
    ...(secret !== undefined ? { secret } : {}),
  });
  const showDelivery = ({ ownerId: _o, body: _b, turn: _t, roundStart: _r, ...d }: DeliveryRecord): DeliveryView => d;

  return {
    async create(ownerId, raw) {
      const input = parseInput(WebhookInput, raw);
      const url = checkWebhookUrl(input.url, policy).href;
      const own = (await store.listWebhooks(ownerId)).filter((h) => h.runId === undefined);
      if (own.length >= MAX_OWNER_WEBHOOKS)
        throw new EngineError("invalid_request", `an owner may register at most ${MAX_OWNER_WEBHOOKS} webhooks`);
      const secret = input.secret ?? newWebhookSecret();
      const hook = {
        id: newId("wh"),
        ownerId,
        url,
        events: input.events ? [...new Set(input.events)] : [...WebhookEventType.options],
        createdAt: now().toISOString(),
      };
      await storeHook(hook, secret);
      return show(hook, input.secret ? undefined : secret);
    },
    async list(ownerId) {
      return (await store.listWebhooks(ownerId)).filter((h) => h.runId === undefined).map((h) => show(h));
    },
    async remove(ownerId, id) {
      const hook = await store.getWebhook(id);
      if (!hook || hook.ownerId !== ownerId || hook.runId !== undefined)
        throw new EngineError("webhook_not_found", `no webhook ${id}`);
      await store.deleteWebhook(id);
    },
    async deliveries(ownerId, runId) {
      await ownedRun(ownerId, runId);
      return (await store.listDeliveries(runId)).map(showDelivery);
    },
    async redeliver(ownerId, runId, deliveryId) {
      await ownedRun(ownerId, runId);
      const d = await store.getDelivery(deliveryId);
      if (!d || d.runId !== runId)
        throw new EngineError("delivery_not_found", `run ${runId} has no delivery ${deliveryId}`);
      if (d.status === "pending") return showDelivery(d);
      const again: DeliveryRecord = { ...d, status: "pending", roundStart: d.attempts.length, nextAttemptAt: null };
      await store.putDelivery(again);
      queues.kick(again);
      return showDelivery(again);
    },
    check(input) {
      checkWebhookUrl(input.url, policy);
    },
    async attach(ownerId, runId, input, secret) {
      const url = checkWebhookUrl(input.url, policy).href;
      const hook = {
        id: newId("wh"),
        ownerId,
        runId,
        url,
        events: [...WebhookEventType.options],
        createdAt: now().toISOString(),
      };
      await storeHook(hook, secret);
      return { id: hook.id, url };
    },
    async copy(prior, runId) {
      if (!prior.webhook) return undefined;
      const old = await store.getWebhook(prior.webhook.id);
      if (!old) return undefined;
      const secret = box.open({ runId: sealScope(old), name: old.ownerId, ...old.secret });
      const hook = { ...old, id: newId("wh"), runId, createdAt: now().toISOString() };
      await storeHook(hook, secret);
      return { id: hook.id, url: hook.url };
    },
    async start() {
      for (const d of await store.pendingDeliveries()) queues.kick(d);
      await reconcile();
    },
    async close() {
      unsubscribe();
      await enqueueing;
      closed = true;
      await queues.close();
    },
  };
}
