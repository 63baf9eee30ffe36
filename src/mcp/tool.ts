/**
 * What an MCP tool is in Patchbay: a name, a model-facing description, a shared input
 * schema, an output schema, annotations, the scope it needs, and a handler that only calls
 * the engine. `server.ts` registers every tool through one wrapper, which checks the scope
 * and maps every failure to one kind of tool error (`toolError`).
 */
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import type { ServerNotification, ServerRequest, ToolAnnotations } from "@modelcontextprotocol/sdk/types.js";
import * as z from "zod";
import type { Engine, Logger } from "../engine/index.ts";
import { RunView } from "../engine/run/view.ts";
import { describeRun } from "./describe.ts";
import { RunIdField } from "./fields.ts";

/** A scope an API key may carry (the same ones REST checks). */
export type McpScope = "read:builder" | "write:builder";

/** Who is calling: the owner whose runs the tools see, and what the caller may do. */
export interface McpCaller {
  ownerId: string;
  scopes: readonly string[];
  /** The key's repository allow-list (`owner/name`, `owner/*`); absent: any repository. */
  allowedRepositories?: readonly string[];
}

/** The `extra` the SDK hands to request handlers (signal, progress token, notifications). */
export type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** Tool calls a transport can answer after a restart (HTTP: `session-records.ts`). */
export interface CallTracker {
  /** The call `extra` names now waits on `runId`'s turn; resolves once that is durable. */
  waiting(extra: ToolExtra, runId: string): Promise<void>;
}

/** What a tool handler gets besides its arguments. */
export interface ToolContext {
  engine: Engine;
  caller: McpCaller;
  extra: ToolExtra;
  log: Logger;
  calls?: CallTracker;
}

/** What a tool handler returns: the structured result and a short text for people and models. */
export interface ToolOutput<O> {
  structured: O;
  text: string;
}

/** One MCP tool, bound to the engine only through `run`. */
export interface PatchbayTool<I extends z.ZodObject = z.ZodObject, O extends z.ZodObject = z.ZodObject> {
  name: string;
  title: string;
  description: string;
  input: I;
  output: O;
  annotations: ToolAnnotations;
  /** The scope a key needs to call the tool. */
  scope: McpScope;
  run(args: z.output<I>, ctx: ToolContext): Promise<ToolOutput<z.output<O>>>;
}

/** Identity helper that keeps the schema types of a tool definition. */
export function defineTool<I extends z.ZodObject, O extends z.ZodObject>(tool: PatchbayTool<I, O>): PatchbayTool<I, O> {
  return tool;
}

/** The input of the tools that act on one run and answer with it (cancel_run, end_session). */
export const RunIdArgs = z.object({ runId: RunIdField }).strict();

/** A tool that calls one engine method on a run and answers with the run. */
export function defineRunTool(
  tool: Omit<PatchbayTool<typeof RunIdArgs, typeof RunView>, "input" | "output" | "run"> & {
    call(engine: Engine, ownerId: string, runId: string): Promise<RunView>;
  },
): PatchbayTool<typeof RunIdArgs, typeof RunView> {
  const { call, ...rest } = tool;
  return defineTool({
    ...rest,
    input: RunIdArgs,
    output: RunView,
    async run({ runId }, ctx) {
      const run = await call(ctx.engine, ctx.caller.ownerId, runId);
      return { structured: run, text: describeRun(run) };
    },
  });
}
