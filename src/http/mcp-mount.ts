/**
 * Plugs MCP over Streamable HTTP into the serve app at `/mcp`, through the app's
 * `mountMcp` hook: the route is guarded by the REST auth middleware (the same Bearer keys,
 * 401/403 bodies and route inventory as every REST route), after the Host/Origin check.
 *
 * The HTTP layer asks for `read:builder` (every MCP use reads); each tool then checks its
 * own scope, so a read-only key can list and read but gets a `forbidden` tool error from
 * `start_run`.
 */
import path from "node:path";
import type express from "express";
import type { Engine, Logger, SharedDocuments, SharedMcpEvents } from "../engine/index.ts";
import { createMcpHttpHandler, type McpHttpOptions } from "../mcp/http.ts";
import type { AuthMiddlewareFactory } from "./auth.ts";

export interface McpMountDeps {
  engine: Engine;
  log: Logger;
  /** The data dir: MCP sessions and their event log live in `<dataDir>/mcp`. */
  dataDir: string;
  /** MCP session records shared by replicas (Patchbay.mcpSessions); default: files in the data dir. */
  sharedRecords?: SharedDocuments;
  /** The MCP event log shared by replicas (Patchbay.mcpEvents); default: files in the data dir. */
  sharedEvents?: SharedMcpEvents;
  /** The address the app binds to (`config.host`); picks the Host allow-list. */
  host?: string;
  /** Further handler options (allowed hosts/origins, idle timeout, event log bounds, retry). */
  options?: Partial<Pick<McpHttpOptions, "allowedHosts" | "allowedOrigins" | "sessionIdleMs" | "eventLog" | "retryMs">>;
}

export interface McpMount {
  /** Pass as `createHttpApp({ mountMcp })`. */
  mount(app: express.Express, auth: AuthMiddlewareFactory): void;
  /** Close every MCP session (shutdown). */
  close(): Promise<void>;
}

/** Prepare the `/mcp` mount for `createHttpApp`'s `mountMcp` hook. */
export function createMcpMount(deps: McpMountDeps): McpMount {
  let close: () => Promise<void> = async () => undefined;
  return {
    mount(app, auth) {
      const handler = createMcpHttpHandler({
        engine: deps.engine,
        log: deps.log,
        stateDir: path.join(deps.dataDir, "mcp"),
        authenticate: auth("read:builder"),
        ...(deps.host ? { host: deps.host } : {}),
        ...(deps.sharedRecords ? { sharedRecords: deps.sharedRecords } : {}),
        ...(deps.sharedEvents ? { sharedEvents: deps.sharedEvents } : {}),
        ...deps.options,
      });
      close = () => handler.close();
      app.all("/mcp", ...handler.chain);
    },
    close: () => close(),
  };
}
