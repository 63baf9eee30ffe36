/**
 * Admin routes for API keys (`/api/v1/keys`), for automation; `patchbay keys …` does the same
 * from a shell. A key's hash never leaves the server; the key itself is shown once, on create.
 */
import * as z from "zod";
import type { KeyService } from "../engine/index.ts";
import { CreateKeyInput } from "../engine/keys/keys.ts";
import { parseInput } from "../engine/parse.ts";
import { ApiKeyRecord } from "../engine/store/store.ts";
import { callerOf } from "./auth.ts";
import { errorResponse, JSON_BODY_ERRORS, routeGroup, type RouteSpec } from "./routes.ts";

/** A key as listed: the record without its hash. */
export const ApiKeyView = ApiKeyRecord.omit({ hash: true });
export type ApiKeyView = z.infer<typeof ApiKeyView>;

export const CreatedKeyView = z.object({
  /** The key itself. Shown once: it is not stored and cannot be recovered. */
  key: z.string(),
  apiKey: ApiKeyView,
});

export const KeyList = z.object({ keys: z.array(ApiKeyView) });

export const KeyIdParams = z.object({ id: z.string().meta({ description: "Key id (`key_…`)" }) }).strict();

function toView(record: ApiKeyRecord): ApiKeyView {
  const { hash: _hash, ...view } = record;
  return view;
}

export function keyRoutes({ keys }: { keys: KeyService }): RouteSpec[] {
  return routeGroup({ tag: "keys", scope: "admin", denied: "The key lacks the admin scope" }, [
    {
      method: "post",
      path: "/api/v1/keys",
      summary: "Create an API key",
      description:
        "Creates a key with `scopes` (default `read:builder`, `write:builder`). A key acts as its owner: keys of one owner see the same runs. " +
        "Without `ownerId` the key belongs to the instance's owner (`PATCHBAY_LOCAL_OWNER`, default `local`); give another `ownerId` for another tenant, " +
        "whose keys see only that tenant's runs. The key is in the answer once and is stored only as a hash.",
      body: CreateKeyInput,
      bodyRequired: true,
      responses: {
        201: { description: "The new key", schema: CreatedKeyView },
        ...JSON_BODY_ERRORS,
      },
      async handler(req, res) {
        callerOf(res);
        const body = parseInput(CreateKeyInput, req.body, "body");
        const { key, record } = await keys.create(body);
        res.status(201).json({ key, apiKey: toView(record) } satisfies z.infer<typeof CreatedKeyView>);
      },
    },
    {
      method: "get",
      path: "/api/v1/keys",
      summary: "List API keys",
      description: "Every key, revoked ones included, without the keys themselves.",
      responses: { 200: { description: "The keys", schema: KeyList } },
      async handler(req, res) {
        parseInput(z.object({}).strict(), req.query, "query");
        res.json({ keys: (await keys.list()).map(toView) } satisfies z.infer<typeof KeyList>);
      },
    },
    {
      method: "delete",
      path: "/api/v1/keys/:id",
      summary: "Revoke an API key",
      description:
        "Revokes the key at once; requests with it answer 401 from then on. Revoking twice keeps the first time.",
      params: KeyIdParams,
      responses: {
        200: { description: "The revoked key", schema: ApiKeyView },
        404: errorResponse("No such key"),
      },
      async handler(req, res) {
        res.json(toView(await keys.revoke(String(req.params.id))));
      },
    },
  ]);
}
