/**
 * The owner's stored secrets (`/api/v1/secrets`): stored once, named by runs in
 * `environment.secretNames`. A value goes in and never comes out: every answer holds names and
 * times only.
 */
import * as z from "zod";
import type { Engine } from "../engine/index.ts";
import { OwnerSecretInput, OwnerSecretView } from "../engine/environment/secrets.ts";
import { SecretName } from "../engine/environment/schema.ts";
import { callerOf } from "./auth.ts";
import { HttpError } from "./errors.ts";
import { errorResponse, JSON_BODY_ERRORS, routeGroup, type RouteSpec } from "./routes.ts";

export const SecretList = z.object({ secrets: z.array(OwnerSecretView) });
export const SecretNameParams = z.object({ name: SecretName.meta({ description: "The secret's name" }) }).strict();

export function secretRoutes({ engine }: { engine: Engine }): RouteSpec[] {
  return routeGroup({ tag: "secrets", denied: "The key lacks the scope" }, [
    {
      method: "post",
      path: "/api/v1/secrets",
      scope: "write:builder",
      summary: "Store a secret",
      description:
        "Stores (or replaces) a secret of the key's owner under `name`, sealed at rest. Runs name it in `environment.secretNames`; " +
        "their commands (setup, the agent's shell, validation) see it as an environment variable, and every text Patchbay shows has its value masked as `[secret:NAME]`. " +
        "The value is never returned.",
      body: OwnerSecretInput,
      bodyRequired: true,
      responses: {
        201: { description: "The secret's name and times", schema: OwnerSecretView },
        ...JSON_BODY_ERRORS,
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        res.status(201).json(await engine.secrets.put(ownerId, req.body));
      },
    },
    {
      method: "get",
      path: "/api/v1/secrets",
      scope: "read:builder",
      summary: "List secrets",
      description: "The owner's stored secrets by name, with when each was created and last replaced; never a value.",
      responses: { 200: { description: "The secrets", schema: SecretList } },
      async handler(_req, res) {
        const { ownerId } = callerOf(res);
        res.json({ secrets: await engine.secrets.list(ownerId) } satisfies z.infer<typeof SecretList>);
      },
    },
    {
      method: "delete",
      path: "/api/v1/secrets/:name",
      scope: "write:builder",
      summary: "Delete a secret",
      description:
        "Deletes the stored secret. Runs that named it keep their own copy until their session ends; new runs naming it are refused with `secret_not_found`.",
      params: SecretNameParams,
      responses: {
        204: { description: "Deleted" },
        404: errorResponse("No stored secret of that name"),
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        const name = String(req.params.name);
        if (!(await engine.secrets.remove(ownerId, name)))
          throw new HttpError("not_found", `no stored secret named ${name}`, { name });
        res.status(204).end();
      },
    },
  ]);
}
