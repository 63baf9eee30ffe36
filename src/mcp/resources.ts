/**
 * Runs as MCP resources: `patchbay://runs/{runId}` (the run as JSON) and
 * `patchbay://runs/{runId}/patch` (its unified diff), with `resources/subscribe`: a
 * subscribed client gets `notifications/resources/updated` whenever the run changes status.
 *
 * McpServer serves reads but not subscriptions, so the Subscribe/Unsubscribe handlers are
 * registered here on the low-level server (see sdk-facts §3).
 */
import { ResourceTemplate, type McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import {
  ErrorCode,
  McpError,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { isEngineError, type Engine, type Logger } from "../engine/index.ts";
import type { McpCaller, McpScope, ToolExtra } from "./tool.ts";

/** The URI of a run resource. */
export const runUri = (runId: string): string => `patchbay://runs/${runId}`;
/** The URI of a run's patch resource. */
export const patchUri = (runId: string): string => `patchbay://runs/${runId}/patch`;

const URI = /^patchbay:\/\/runs\/([A-Za-z0-9_-]{1,64})(\/patch)?$/;

/** MCP's "resource not found" error code (spec: -32002). */
const RESOURCE_NOT_FOUND = -32002;

export interface ResourceDeps {
  engine: Engine;
  log: Logger;
  caller(extra: ToolExtra, scope: McpScope): McpCaller;
}

/** Map an engine failure inside a resource request to a JSON-RPC error (resources have no isError results). */
function resourceError(e: unknown, uri: string): McpError {
  if (e instanceof McpError) return e;
  if (isEngineError(e)) {
    if (e.code === "run_not_found")
      return new McpError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri, code: e.code });
    return new McpError(ErrorCode.InvalidRequest, `${e.code}: ${e.message}`, { uri, code: e.code });
  }
  return new McpError(ErrorCode.InternalError, "internal error", { uri, code: "internal" });
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

  const subscriptions = new Map<string, () => void>();

  server.server.setRequestHandler(SubscribeRequestSchema, async (request, extra) => {
    const uri = request.params.uri;
    const m = URI.exec(uri);
    if (!m) throw new McpError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri });
    if (subscriptions.has(uri)) return {};
    try {
      const { ownerId } = deps.caller(extra, "read:builder");
      const unsubscribe = await engine.subscribe(ownerId, m[1]!, (ev) => {
        if (ev.type !== "run.status") return;
        server.server
          .sendResourceUpdated({ uri })
          // The client may be gone; its subscription ends with the session.
          .catch((e: unknown) => log.debug("resource update not sent", { uri, error: e }));
      });
      subscriptions.set(uri, unsubscribe);
      return {};
    } catch (e) {
      throw resourceError(e, uri);
    }
  });

  server.server.setRequestHandler(UnsubscribeRequestSchema, async (request) => {
    const uri = request.params.uri;
    subscriptions.get(uri)?.();
    subscriptions.delete(uri);
    return {};
  });

  return () => {
    for (const unsubscribe of subscriptions.values()) unsubscribe();
    subscriptions.clear();
  };
}
