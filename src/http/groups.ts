/**
 * The group route (`/api/v1/coding-agent/groups/{id}`): a group of sibling attempts started by
 * one `POST /runs` with `attempts` > 1, its runs with status and rank, and its best run.
 */
import * as z from "zod";
import type { Engine } from "../engine/index.ts";
import { GroupView } from "../engine/run/group-schema.ts";
import { callerOf } from "./auth.ts";
import { errorResponse, routeGroup, type RouteSpec } from "./routes.ts";
import { API_BASE } from "./runs.ts";

export const GroupIdParams = z.object({ id: z.string().meta({ description: "Group id (`grp_…`)" }) }).strict();

export function groupRoutes({ engine }: { engine: Engine }): RouteSpec[] {
  return routeGroup({ tag: "groups", scope: "read:builder", denied: "The key lacks read:builder" }, [
    {
      method: "get",
      path: `${API_BASE}/groups/:id`,
      summary: "Get a group of attempts",
      description:
        "The sibling runs one `POST /runs` with `attempts` started, with their current status. Once every sibling is idle or ended the group is `settled`; " +
        "with `validationMode` `basic` or `tests` it is then ranked (validation passed first, then the smaller diff) and `bestRunId` names the best run, the only one that publishes. Another owner's group answers 404.",
      params: GroupIdParams,
      responses: {
        200: { description: "The group", schema: GroupView },
        404: errorResponse("No such group for this key"),
      },
      async handler(req, res) {
        res.json(await engine.getGroup(callerOf(res).ownerId, String(req.params.id)));
      },
    },
  ]);
}
