/**
 * Shapes of webhooks and their deliveries, shared by the engine, the store, REST and MCP:
 * what a client sends (a run's `webhook`, an owner's `POST /api/v1/webhooks`), what is
 * stored (the secret sealed, never plain), and what is shown (never the secret, except once
 * in the answer that generated it).
 */
import * as z from "zod";

/** The event types a webhook can receive. */
export const WebhookEventType = z.enum(["run.status", "turn.finished"]);
export type WebhookEventType = z.infer<typeof WebhookEventType>;

/** A Standard Webhooks secret: `whsec_` + base64 of 24 to 64 random bytes. */
export const WebhookSecret = z
  .string()
  .max(200)
  .regex(/^whsec_[A-Za-z0-9+/]+={0,2}$/, "must be a Standard Webhooks secret: whsec_ followed by base64")
  .refine((s) => {
    const n = Buffer.from(s.slice("whsec_".length), "base64").length;
    return n >= 24 && n <= 64;
  }, "must encode 24 to 64 bytes")
  .meta({ description: "`whsec_` + base64 of 24–64 bytes; generated (and returned once) when absent" });

/** Syntax only; what a URL may target is checked by `target.ts` (invalid_webhook_url). */
export const WebhookUrl = z.string().min(1).max(2048).meta({
  description: "Absolute `https://` URL (`http://` only when the server allows it); private addresses are refused",
});

/** A run's own webhook: `webhook` in `POST /runs` and `start_run`. */
export const RunWebhookInput = z.object({ url: WebhookUrl, secret: WebhookSecret.optional() }).strict();
export type RunWebhookInput = z.infer<typeof RunWebhookInput>;

/** Body of `POST /api/v1/webhooks`: an endpoint for every run of the key's owner. */
export const WebhookInput = RunWebhookInput.extend({
  events: z
    .array(WebhookEventType)
    .min(1)
    .max(WebhookEventType.options.length)
    .optional()
    .meta({ description: "Event types to receive; default all (`run.status`, `turn.finished`)" }),
}).strict();
export type WebhookInput = z.infer<typeof WebhookInput>;

/** A value sealed with the secret box (see secrets/secrets.ts); opened only to sign. */
const Sealed = z.object({ iv: z.string(), tag: z.string(), data: z.string() });

/** A webhook as stored: an owner's (every run) or one run's (`runId`). */
export const WebhookRecord = z.object({
  id: z.string(),
  ownerId: z.string(),
  /** Set for a run's own webhook; absent for an owner's. */
  runId: z.string().optional(),
  url: z.string(),
  events: z.array(WebhookEventType),
  secret: Sealed,
  createdAt: z.string(),
});
export type WebhookRecord = z.infer<typeof WebhookRecord>;

/** An owner's webhook as shown; `secret` only in the answer that generated it. */
export const WebhookView = z.object({
  id: z.string().describe("Webhook id (`wh_…`)"),
  url: z.string(),
  events: z.array(WebhookEventType),
  createdAt: z.string(),
  secret: z
    .string()
    .optional()
    .describe("The signing secret, only in the answer that created the webhook and only when Patchbay generated it"),
});
export type WebhookView = z.infer<typeof WebhookView>;

/** A run's webhook as the run shows it. */
export const RunWebhookView = WebhookView.pick({ id: true, url: true, secret: true });

export const DeliveryAttempt = z.object({
  attempt: z.number().int().describe("1 for the first try"),
  at: z.string().describe("When the attempt started (ISO 8601)"),
  statusCode: z.number().int().nullable().describe("The receiver's HTTP status; null when none came"),
  latencyMs: z.number().int(),
  error: z.string().optional().describe("Why the attempt failed when there was no 2xx answer"),
});
export type DeliveryAttempt = z.infer<typeof DeliveryAttempt>;

export const DeliveryStatus = z.enum(["pending", "delivered", "failed"]);

/** One message to one endpoint: its body is fixed when the change happens; every attempt is signed anew. */
export const DeliveryRecord = z.object({
  /** Also the `webhook-id` header: the same on every attempt, so receivers deduplicate by it. */
  id: z.string(),
  runId: z.string(),
  ownerId: z.string(),
  webhookId: z.string(),
  /** The endpoint when the message was made (shown in the log; attempts go to the webhook's URL). */
  url: z.string(),
  /** Order within the run (all endpoints): each endpoint gets the run's messages in this order. */
  seq: z.number().int(),
  type: WebhookEventType,
  /** The `run.status` event the message is about (a restart checks that the run's last one has its messages). */
  eventId: z.number().int().optional(),
  /** The turn a `turn.finished` is about (one message per turn). */
  turn: z.number().int().optional(),
  /** The JSON body, exactly as signed and sent. */
  body: z.string(),
  status: DeliveryStatus,
  attempts: z.array(DeliveryAttempt),
  /** Attempts before this index belong to earlier rounds (a redelivery starts a new round of tries). */
  roundStart: z.number().int().optional(),
  nextAttemptAt: z.string().nullable(),
  createdAt: z.string(),
});
export type DeliveryRecord = z.infer<typeof DeliveryRecord>;

/** A delivery as the log shows it (`GET /runs/{id}/deliveries`). */
export const DeliveryView = DeliveryRecord.pick({
  id: true,
  runId: true,
  webhookId: true,
  url: true,
  seq: true,
  type: true,
  status: true,
  attempts: true,
  nextAttemptAt: true,
  createdAt: true,
}).extend({
  id: z.string().describe("Delivery id, also the `webhook-id` header of every attempt"),
  status: DeliveryStatus.describe("`pending` (tries left), `delivered` (a 2xx came) or `failed` (tries exhausted)"),
  nextAttemptAt: z.string().nullable().describe("When the next try is due; null once settled"),
});
export type DeliveryView = z.infer<typeof DeliveryView>;
