/**
 * Admin routes for setup's cache (`/api/v1/environments`): the cached layers, and dropping
 * one (the next run with its key runs setup again). Handlers only call the engine.
 */
import * as z from "zod";
import type { Engine } from "../engine/index.ts";
import { errorResponse, routeGroup, type RouteSpec } from "./routes.ts";

export const EnvironmentLayer = z.object({
  key: z.string().meta({ description: "The cache key (`setup.key` on the runs that used it)" }),
  bytes: z
    .number()
    .int()
    .nullable()
    .meta({ description: "Size of an archive layer; null for a snapshot (the sandbox provider keeps it)" }),
  lastUsedAt: z.string().meta({ description: "When a run last saved or restored it" }),
  storage: z.enum(["archive", "snapshot"]).meta({
    description:
      "`archive`: a tar in the data dir (local, bwrap); `snapshot`: an E2B snapshot later VMs start from (e2b)",
  }),
});
export const EnvironmentList = z.object({ environments: z.array(EnvironmentLayer) });
export const EnvironmentKeyParams = z.object({ key: z.string().meta({ description: "Cache key" }) }).strict();

export function environmentRoutes({ engine }: { engine: Engine }): RouteSpec[] {
  return routeGroup({ tag: "environments", scope: "admin", denied: "The key lacks the admin scope" }, [
    {
      method: "get",
      path: "/api/v1/environments",
      summary: "List cached setup layers",
      description:
        "Every layer the setup cache holds, least recently used first (the first to go when PATCHBAY_ENV_CACHE_MAX_BYTES is reached).",
      responses: { 200: { description: "The layers", schema: EnvironmentList } },
      async handler(req, res) {
        res.json({ environments: await engine.listEnvironments() } satisfies z.infer<typeof EnvironmentList>);
      },
    },
    {
      method: "delete",
      path: "/api/v1/environments/:key",
      summary: "Drop a cached setup layer",
      description: "The next run with this key runs its setup again. A run restoring it at this moment keeps its copy.",
      params: EnvironmentKeyParams,
      responses: { 204: { description: "Dropped" }, 404: errorResponse("No such layer") },
      async handler(req, res) {
        await engine.dropEnvironment(String(req.params.key));
        res.status(204).end();
      },
    },
  ]);
}
