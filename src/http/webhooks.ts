/**
 * Webhooks (`/api/v1/webhooks`): an owner's signed endpoints for every run, and each run's
 * delivery log with redelivery on request. A secret goes in (or is generated and shown once)
 * and never comes out again.
 */
import * as z from "zod";
import type { Engine } from "../engine/index.ts";
import { parseInput } from "../engine/parse.ts";
import { DeliveryView, WebhookInput, WebhookView } from "../engine/webhooks/schema.ts";
import { callerOf } from "./auth.ts";
import { errorResponse, JSON_BODY_ERRORS, routeGroup, type RouteSpec } from "./routes.ts";
import { API_BASE, RunIdParams } from "./runs.ts";

export const WebhookList = z.object({ webhooks: z.array(WebhookView) });
export const DeliveryList = z.object({ deliveries: z.array(DeliveryView) });
export const WebhookIdParams = z
  .object({ id: z.string().max(100).meta({ description: "Webhook id (`wh_…`)" }) })
  .strict();
export const DeliveryParams = RunIdParams.extend({
  deliveryId: z.string().max(100).meta({ description: "Delivery id (`msg_…`), the `webhook-id` header" }),
}).strict();
/** `POST …/redeliver` takes no fields. */
export const RedeliverInput = z.object({}).strict();

const DELIVERY =
  "Each delivery is a POST of `{type, id, at, data}` signed per the Standard Webhooks specification " +
  "(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`); `type` is `run.status` " +
  "(`data.run`: the run without patch or events, on every status change) or `turn.finished` (`data.run`, `turn`, `changedPaths`, `diffStats`). " +
  "A receiver answers 2xx; anything else, or no answer within the timeout, is retried with backoff (in order per run, one at a time per endpoint).";

export function webhookRoutes({ engine }: { engine: Engine }): RouteSpec[] {
  return [
    ...routeGroup({ tag: "webhooks", denied: "The key lacks the scope" }, [
      {
        method: "post",
        path: "/api/v1/webhooks",
        scope: "write:builder",
        summary: "Register a webhook",
        description:
          "Registers an endpoint for every run of the key's owner. The URL must be `https://` (unless the server sets PATCHBAY_WEBHOOK_ALLOW_HTTP) and must not name a private, " +
          "loopback or link-local address (unless PATCHBAY_WEBHOOK_ALLOW_PRIVATE); the resolved address is checked again at every delivery. " +
          "Without `secret` one is generated and returned in this answer only. " +
          DELIVERY,
        body: WebhookInput,
        bodyRequired: true,
        responses: {
          201: { description: "The webhook; `secret` when it was generated", schema: WebhookView },
          ...JSON_BODY_ERRORS,
          400: errorResponse("Invalid body, or a URL that may not be a webhook (`invalid_webhook_url`)"),
        },
        async handler(req, res) {
          const { ownerId } = callerOf(res);
          res.status(201).json(await engine.webhooks.create(ownerId, req.body));
        },
      },
      {
        method: "get",
        path: "/api/v1/webhooks",
        scope: "read:builder",
        summary: "List webhooks",
        description:
          "The owner's webhooks; never a secret. Runs' own webhooks (`webhook` on a run) are shown on the run.",
        responses: { 200: { description: "The webhooks", schema: WebhookList } },
        async handler(_req, res) {
          const { ownerId } = callerOf(res);
          res.json({ webhooks: await engine.webhooks.list(ownerId) } satisfies z.infer<typeof WebhookList>);
        },
      },
      {
        method: "delete",
        path: "/api/v1/webhooks/:id",
        scope: "write:builder",
        summary: "Delete a webhook",
        description: "Deletes the webhook and its secret; deliveries still pending for it fail at their next attempt.",
        params: WebhookIdParams,
        responses: {
          204: { description: "Deleted" },
          404: errorResponse("No webhook of this owner with that id"),
        },
        async handler(req, res) {
          const { ownerId } = callerOf(res);
          await engine.webhooks.remove(ownerId, String(req.params.id));
          res.status(204).end();
        },
      },
    ]),
    ...routeGroup({ tag: "runs", denied: "The key lacks the scope" }, [
      {
        method: "get",
        path: `${API_BASE}/runs/:id/deliveries`,
        scope: "read:builder",
        summary: "Webhook deliveries of a run",
        description:
          "Every webhook message of the run (to the run's own webhook and the owner's), oldest first, with each attempt: when, the status code, latency and error. " +
          DELIVERY,
        params: RunIdParams,
        responses: {
          200: { description: "The delivery log", schema: DeliveryList },
          404: errorResponse("No such run for this key"),
        },
        async handler(req, res) {
          const { ownerId } = callerOf(res);
          const deliveries = await engine.webhooks.deliveries(ownerId, String(req.params.id));
          res.json({ deliveries } satisfies z.infer<typeof DeliveryList>);
        },
      },
      {
        method: "post",
        path: `${API_BASE}/runs/:id/deliveries/:deliveryId/redeliver`,
        scope: "write:builder",
        summary: "Redeliver a webhook message",
        description:
          "Sends a delivered or failed message again, with the same `webhook-id` and body (a new signature and timestamp) and a new round of tries; " +
          "a message still pending is answered as it is.",
        params: DeliveryParams,
        body: RedeliverInput,
        responses: {
          202: { description: "The delivery, pending again", schema: DeliveryView },
          400: errorResponse("A body with fields"),
          404: errorResponse("No such run for this key, or no such delivery of the run"),
        },
        async handler(req, res) {
          const { ownerId } = callerOf(res);
          if (req.body !== undefined) parseInput(RedeliverInput, req.body, "body");
          res
            .status(202)
            .json(await engine.webhooks.redeliver(ownerId, String(req.params.id), String(req.params.deliveryId)));
        },
      },
    ]),
  ];
}
