/**
 * `completion/complete` for prompt arguments and resource template variables, from what the
 * caller may see: repository names of the caller's runs, model ids from the catalog, the
 * caller's run ids. Never another owner's runs.
 *
 * McpServer's own completion support calls a completer without the request's `extra`, so it
 * cannot know the caller of an HTTP request; this handler is registered on the low-level
 * server instead, with the caller resolved per request like every tool's.
 */
import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { CompleteRequestSchema, McpError, type CompleteResult } from "@modelcontextprotocol/sdk/types.js";
import type { Engine } from "../engine/index.ts";
import { ProtocolCode } from "./errors.ts";
import { PROMPT_ARGUMENTS } from "./prompts.ts";
import type { McpCaller, McpScope, ToolExtra } from "./tool.ts";

/** The specification's cap on the values of one completion. */
const MAX_VALUES = 100;
/** How many of the caller's newest runs completions look through. */
const RUNS_SCANNED = 500;

/** The resource templates whose `runId` completes to the caller's run ids. */
const RUN_TEMPLATES = new Set(["patchbay://runs/{runId}", "patchbay://runs/{runId}/patch"]);

export interface CompletionDeps {
  engine: Engine;
  caller(extra: ToolExtra, scope: McpScope): McpCaller;
}

type Source = "repository" | "model" | "run";

/** Which suggestions an argument gets, by prompt and argument name. */
const PROMPT_SOURCES: Readonly<Record<string, Readonly<Record<string, Source>>>> = {
  delegate_task: { repository: "repository", modelId: "model" },
  review_run: { runId: "run" },
};

/** Register the `completion/complete` handler (and the `completions` capability) before connecting. */
export function registerCompletions(server: McpServer, deps: CompletionDeps): void {
  server.server.registerCapabilities({ completions: {} });
  server.server.setRequestHandler(CompleteRequestSchema, async (request, extra): Promise<CompleteResult> => {
    const { ref, argument } = request.params;
    let source: Source | undefined;
    if (ref.type === "ref/prompt") {
      if (!PROMPT_ARGUMENTS[ref.name])
        throw new McpError(ProtocolCode.InvalidParams, `Unknown prompt: ${ref.name}`, { prompt: ref.name });
      source = PROMPT_SOURCES[ref.name]?.[argument.name];
    } else {
      if (!RUN_TEMPLATES.has(ref.uri))
        throw new McpError(ProtocolCode.InvalidParams, `Unknown resource template: ${ref.uri}`, { uri: ref.uri });
      source = argument.name === "runId" ? "run" : undefined;
    }
    if (!source) return { completion: { values: [] } };
    const { ownerId } = deps.caller(extra, "read:builder");
    return complete(await candidates(deps.engine, ownerId, source), argument.value);
  });
}

/** Everything `source` could suggest to `ownerId`, most relevant first. */
async function candidates(engine: Engine, ownerId: string, source: Source): Promise<string[]> {
  if (source === "model") {
    const { defaultModel, models } = engine.models();
    return [...new Set([defaultModel, ...models])];
  }
  const seen = new Set<string>();
  let cursor: string | undefined;
  let scanned = 0;
  do {
    const page = await engine.listRuns(ownerId, { limit: 100, ...(cursor ? { cursor } : {}) });
    for (const run of page.runs) seen.add(source === "run" ? run.id : run.repository.fullName);
    scanned += page.runs.length;
    cursor = page.nextCursor ?? undefined;
  } while (cursor && scanned < RUNS_SCANNED);
  return [...seen];
}

/** The candidates that start with what was typed (case-insensitive), capped as the specification says. */
function complete(all: readonly string[], typed: string): CompleteResult {
  const prefix = typed.toLowerCase();
  const matches = all.filter((v) => v.toLowerCase().startsWith(prefix));
  return {
    completion: {
      values: matches.slice(0, MAX_VALUES),
      total: matches.length,
      hasMore: matches.length > MAX_VALUES,
    },
  };
}
