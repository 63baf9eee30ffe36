/**
 * Admin routes for owners' budgets (`/api/v1/owners/{owner}/limits`): the daily cost cap every
 * run of the owner counts against, and what they spent today. Handlers only call the engine.
 */
import * as z from "zod";
import type { Engine } from "../engine/index.ts";
import { OwnerLimits, OwnerLimitsInput } from "../engine/run/budget.ts";
import { errorResponse, JSON_BODY_ERRORS, routeGroup, type RouteSpec } from "./routes.ts";

export const OwnerParams = z
  .object({ owner: z.string().meta({ description: "Owner id (a key's `ownerId`)" }) })
  .strict();

export function ownerRoutes({ engine }: { engine: Engine }): RouteSpec[] {
  return routeGroup({ tag: "owners", scope: "admin", denied: "The key lacks the admin scope" }, [
    {
      method: "get",
      path: "/api/v1/owners/:owner/limits",
      summary: "Read an owner's daily cost cap",
      description: "The owner's daily cost cap (null: none) and what its runs spent on models today (UTC).",
      params: OwnerParams,
      responses: {
        200: { description: "The cap and today's spend", schema: OwnerLimits },
        400: errorResponse("Invalid owner id"),
      },
      async handler(req, res) {
        res.json((await engine.ownerLimits(String(req.params.owner))) satisfies OwnerLimits);
      },
    },
    {
      method: "put",
      path: "/api/v1/owners/:owner/limits",
      summary: "Set an owner's daily cost cap",
      description:
        "Sets (or, with `dailyCostUsd: null`, removes) the most the owner's runs may spend on models per UTC day. " +
        "Once today's spend reaches it, the gateway refuses the model calls of the owner's runs (they end `budget_exceeded` as their `limits.onExceeded` says) " +
        "and new runs and messages are refused with 402 `budget_exceeded` until the next day or a higher cap.",
      params: OwnerParams,
      body: OwnerLimitsInput,
      bodyRequired: true,
      responses: {
        200: { description: "The cap and today's spend", schema: OwnerLimits },
        ...JSON_BODY_ERRORS,
      },
      async handler(req, res) {
        res.json((await engine.setOwnerLimits(String(req.params.owner), req.body)) satisfies OwnerLimits);
      },
    },
  ]);
}
