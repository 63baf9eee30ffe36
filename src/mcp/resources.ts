/**
 * Runs as MCP resources: `patchbay://runs/{runId}` (the run as JSON) and
 * `patchbay://runs/{runId}/patch` (its unified diff), with `resources/subscribe`: a
 * subscribed client gets `notifications/resources/updated` whenever the run changes status.
 *
 * McpServer serves reads but not subscriptions, so the Subscribe/Unsubscribe handlers are
 * registered here on the low-level server (see sdk-facts §3).
 */
import { ResourceTemplate, type McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { SubscribeRequestSchema, UnsubscribeRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import type { Engine, Logger, RunFollow } from "../engine/index.ts";
import { resourceError, resourceNotFound } from "./errors.ts";
import { followFromNow } from "./follow.ts";
import type { McpCaller, McpScope, ToolExtra } from "./tool.ts";

/** The URI of a run resource. */
export const runUri = (runId: string): string => `patchbay://runs/${runId}`;
/** The URI of a run's patch resource. */
export const patchUri = (runId: string): string => `patchbay://runs/${runId}/patch`;

const URI = /^patchbay:\/\/runs\/([A-Za-z0-9_-]{1,64})(\/patch)?$/;

/** Whether `uri` has the form of a run resource (a form only: the run may not exist). */
export const isResourceUri = (uri: string): boolean => URI.test(uri);

export interface ResourceDeps {
  engine: Engine;
  log: Logger;
  caller(extra: ToolExtra, scope: McpScope): McpCaller;
}

/**
 * Register the run resources and subscription handlers on `server`.
 * Returns `dispose`, which drops every live subscription (call it when the session closes).
 */
export function registerRunResources(server: McpServer, deps: ResourceDeps): () => void {
  const { engine, log } = deps;

  server.registerResource(
    "run",
    new ResourceTemplate("patchbay://runs/{runId}", {
      list: async (extra) => {
        const { ownerId } = deps.caller(extra, "read:builder");
        const { runs } = await engine.listRuns(ownerId, { limit: 50 });
        return {
          resources: runs.map((r) => ({
            uri: runUri(r.id),
            name: r.id,
            title: `${r.repository.fullName}: ${r.status}`,
            mimeType: "application/json",
          })),
        };
      },
    }),
    {
      title: "Run",
      description:
        "A Patchbay run as JSON: status, summary, changedPaths, diffStats, error. Subscribe to be told when its status changes.",
      mimeType: "application/json",
    },
    async (uri, { runId }, extra) => {
      try {
        const { ownerId } = deps.caller(extra, "read:builder");
        const run = await engine.getRun(ownerId, String(runId));
        return { contents: [{ uri: uri.href, mimeType: "application/json", text: JSON.stringify(run, null, 2) }] };
      } catch (e) {
        throw resourceError(e, uri.href);
      }
    },
  );

  server.registerResource(
    "run-patch",
    new ResourceTemplate("patchbay://runs/{runId}/patch", { list: undefined }),
    {
      title: "Run patch",
      description: "The unified diff of a run against its base commit (empty while there are no changes).",
      mimeType: "text/x-diff",
    },
    async (uri, { runId }, extra) => {
      try {
        const { ownerId } = deps.caller(extra, "read:builder");
        const { patch } = await engine.getPatch(ownerId, String(runId));
        return { contents: [{ uri: uri.href, mimeType: "text/x-diff", text: patch ?? "" }] };
      } catch (e) {
        throw resourceError(e, uri.href);
      }
    },
  );

  /** One follow per subscribed URI, from the subscription on, until the run's terminal status. */
  const subscriptions = new Map<string, RunFollow>();

  /** Tell the client about every status change the follow sees. */
  async function notifyStatusChanges(uri: string, follow: RunFollow): Promise<void> {
    for await (const ev of follow) {
      if (ev.type !== "run.status") continue;
      server.server
        .sendResourceUpdated({ uri })
        // The client may be gone; its subscription ends with the session.
        .catch((e: unknown) => log.debug("resource update not sent", { uri, error: e }));
    }
  }

  server.server.setRequestHandler(SubscribeRequestSchema, async (request, extra) => {
    const uri = request.params.uri;
    const m = URI.exec(uri);
    if (!m) throw resourceNotFound(uri);
    if (subscriptions.has(uri)) return {};
    let follow: RunFollow;
    try {
      const { ownerId } = deps.caller(extra, "read:builder");
      follow = await followFromNow(engine, ownerId, m[1]!);
    } catch (e) {
      throw resourceError(e, uri);
    }
    // A second subscribe to the same URI raced this one: one follow is enough.
    if (subscriptions.has(uri)) follow.close();
    else {
      subscriptions.set(uri, follow);
      notifyStatusChanges(uri, follow).catch((e: unknown) =>
        log.warn("resource subscription stopped", { uri, error: e }),
      );
    }
    return {};
  });

  server.server.setRequestHandler(UnsubscribeRequestSchema, async (request) => {
    const uri = request.params.uri;
    subscriptions.get(uri)?.close();
    subscriptions.delete(uri);
    return {};
  });

  return () => {
    for (const follow of subscriptions.values()) follow.close();
    subscriptions.clear();
  };
}
