/**
 * The MCP front: `createMcpServer(engine, opts)` builds an McpServer whose tools, resources,
 * prompts and completions call the engine facade only. It never connects: `stdio.ts` and `http.ts` bind it
 * to a transport (one server per connection or session, as the SDK requires).
 */
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { createLogger, EngineError, isEngineError, type Engine, type Logger } from "../engine/index.ts";
import { registerCompletions } from "./completions.ts";
import { bareMessage, toolError } from "./errors.ts";
import { guardTransport } from "./guard.ts";
import { registerPrompts } from "./prompts.ts";
import { isResourceUri, registerRunResources } from "./resources.ts";
import type { CallTracker, McpCaller, McpScope, PatchbayTool, ToolExtra } from "./tool.ts";
import { cancelRunTool } from "./tools/cancel_run.ts";
import { deleteRunTool } from "./tools/delete_run.ts";
import { endSessionTool } from "./tools/end_session.ts";
import { getGroupTool } from "./tools/get_group.ts";
import { getPatchTool } from "./tools/get_patch.ts";
import { getRunTool } from "./tools/get_run.ts";
import { listModelsTool } from "./tools/list_models.ts";
import { listRunsTool } from "./tools/list_runs.ts";
import { sendMessageTool } from "./tools/send_message.ts";
import { startRunTool } from "./tools/start_run.ts";
import { streamEventsTool } from "./tools/stream_events.ts";

/** Every tool, in the order `tools/list` shows them. */
export const TOOLS: readonly PatchbayTool[] = [
  startRunTool,
  sendMessageTool,
  getRunTool,
  streamEventsTool,
  getPatchTool,
  listRunsTool,
  endSessionTool,
  cancelRunTool,
  deleteRunTool,
  listModelsTool,
  getGroupTool,
] as unknown as readonly PatchbayTool[];

/** The server's name and version as announced in `initialize`. */
export const SERVER_INFO = { name: "patchbay", title: "Patchbay coding agent", version: "0.1.0" } as const;

const INSTRUCTIONS = `Patchbay runs coding agents (OpenCode) in sandboxes on GitHub repositories.
Typical flow: start_run (repository owner/name + prompt; wait: true to get the result in one call) -> get_patch to read the diff -> send_message for follow-ups on the same workspace -> end_session when done.
Follow a long run with stream_events (loop with nextCursor until done) or get_run. A tool that fails answers a result whose text starts with "Error <code>:" (the REST error code).`;

export interface McpServerOptions {
  /** Owner of every run the tools see, for a single-user transport (stdio: `config.localOwner`). */
  ownerId?: string;
  /** Scopes of `ownerId`. Default: read and write (the local user may do everything). */
  scopes?: readonly string[];
  /**
   * Resolve the caller per request instead (HTTP: from the verified key in `extra.authInfo`).
   * Return undefined when the request carries no identity; the call then fails `unauthorized`.
   */
  resolveCaller?: (extra: ToolExtra) => McpCaller | undefined;
  /** Where warnings go; default a logger on stderr (never stdout: it may be the stdio transport). */
  log?: Logger;
  /** Told of calls that wait on a turn, so they can be answered after a restart (HTTP). */
  calls?: CallTracker;
}

/** A created server and what must happen when its connection ends. */
export interface PatchbayMcpServer {
  server: McpServer;
  /**
   * Connect the server to `transport` through the protocol guard (`guard.ts`): the way every
   * front connects, so stdio and HTTP answer protocol errors alike.
   */
  connect(transport: Transport): Promise<void>;
  /** Drop live subscriptions (called by the transports when the connection closes). */
  dispose(): void;
}

/** Build the MCP server for one connection or session. Never connects. */
export function createMcpServer(engine: Engine, opts: McpServerOptions): PatchbayMcpServer {
  const log = opts.log ?? createLogger();
  if (!opts.ownerId && !opts.resolveCaller) throw new TypeError("createMcpServer needs ownerId or resolveCaller");
  const fixed: McpCaller | undefined = opts.ownerId
    ? { ownerId: opts.ownerId, scopes: opts.scopes ?? ["read:builder", "write:builder"] }
    : undefined;

  /** The caller of a request, checked for `scope`. Throws `unauthorized` / `forbidden`. */
  const caller = (extra: ToolExtra, scope: McpScope): McpCaller => {
    const who = opts.resolveCaller ? opts.resolveCaller(extra) : fixed;
    if (!who) throw new EngineError("unauthorized", "this request carries no API key");
    if (!who.scopes.includes(scope))
      throw new EngineError("forbidden", `this key lacks the ${scope} scope`, { requiredScope: scope });
    return who;
  };

  const server = new McpServer(SERVER_INFO, {
    capabilities: { tools: {}, resources: { subscribe: true, listChanged: true }, logging: {} },
    instructions: INSTRUCTIONS,
  });
  mapSdkToolErrors(server);

  for (const tool of TOOLS) {
    server.registerTool(
      tool.name,
      {
        title: tool.title,
        description: tool.description,
        inputSchema: tool.input,
        outputSchema: tool.output,
        annotations: { title: tool.title, ...tool.annotations },
      },
      async (args: unknown, extra: ToolExtra): Promise<CallToolResult> => {
        try {
          const ctx = {
            engine,
            caller: caller(extra, tool.scope),
            extra,
            log,
            ...(opts.calls ? { calls: opts.calls } : {}),
          };
          const { structured, text } = await tool.run(args as never, ctx);
          return { content: [{ type: "text", text }], structuredContent: structured as Record<string, unknown> };
        } catch (e) {
          if (!isEngineError(e)) {
            // Unexpected: log it in full here, show the caller only a code and a plain message.
            log.error("MCP tool crashed", { tool: tool.name, error: e });
            return toolError(new EngineError("internal", `internal error in ${tool.name}`));
          }
          return toolError(e);
        }
      },
    );
  }

  const dispose = registerRunResources(server, { engine, log, caller });
  registerPrompts(server, { engine, caller });
  registerCompletions(server, { engine, caller });
  const rules = { tools: new Set(TOOLS.map((t) => t.name)), isResourceUri };
  return { server, dispose, connect: (transport) => server.connect(guardTransport(transport, rules)) };
}

/**
 * The SDK answers arguments that fail a tool's input schema with a tool error of its own, text
 * only. Give those the code REST gives a bad body, `invalid_request`, in the same form as every
 * other Patchbay tool error (an unknown tool never gets here: `guard.ts` refuses it first).
 * `createToolError` is private in the SDK's types; the SDK version is pinned and the tests
 * check the mapping, so a change shows.
 */
function mapSdkToolErrors(server: McpServer): void {
  const target = server as unknown as { createToolError?: (message: string) => CallToolResult };
  if (typeof target.createToolError !== "function")
    throw new Error("@modelcontextprotocol/sdk changed: McpServer.createToolError is gone");
  target.createToolError = (message: string) => {
    const text = bareMessage(message);
    const code = /^Input validation error/.test(text) ? "invalid_request" : "internal";
    return toolError(new EngineError(code, text));
  };
}
