/**
 * MCP's two kinds of error, in one place (the MCP side of "map errors once per front").
 *
 * - Tool errors: a tool that ran and failed answers a result with `isError: true` carrying the
 *   engine's code, the same code REST answers with (`toolError`). Arguments a tool rejects are
 *   tool errors too (spec 2025-11-25, SEP-1303), so a model reads them and corrects itself.
 * - Protocol errors: a request the server cannot take as asked (an unknown tool, a resource
 *   that does not exist, params that do not fit the method) is a JSON-RPC error with the
 *   specification's code (`ProtocolCode`). `guard.ts` refuses those before the SDK sees them.
 */
import { McpError } from "@modelcontextprotocol/sdk/types.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { isEngineError, toEngineError, type EngineError } from "../engine/errors.ts";

/** The JSON-RPC error codes Patchbay answers with, by the MCP specification (2025-11-25). */
export const ProtocolCode = {
  /** Not a valid request (a JSON-RPC batch where the protocol version removed them). */
  InvalidRequest: -32600,
  /** Params that do not fit the method, an unknown tool, prompt or completion reference. */
  InvalidParams: -32602,
  InternalError: -32603,
  /** A resource URI that names nothing (MCP's own code). */
  ResourceNotFound: -32002,
} as const;

/** Where the error of an `isError` result is, in structured form (`result._meta[ERROR_META]`). */
export const ERROR_META = "patchbay/error";

/**
 * A tool error result carrying the engine's error code, the same code REST answers with.
 *
 * The code travels in the text (what a model reads) and in `_meta` (what a program reads).
 * It is deliberately not in `structuredContent`: the SDK's client validates structured
 * content against the tool's output schema even on error results, so an error object there
 * would make a conforming client reject the whole response.
 */
export function toolError(e: unknown): CallToolResult {
  const err: EngineError = toEngineError(e);
  const error = err.toJSON();
  return {
    isError: true,
    content: [{ type: "text", text: `Error ${error.code}: ${error.message}` }],
    _meta: { [ERROR_META]: error },
  };
}

/** `resources/read` or `resources/subscribe` of a URI that names nothing the caller may see. */
export function resourceNotFound(uri: string, data: Record<string, unknown> = {}): McpError {
  return new McpError(ProtocolCode.ResourceNotFound, `Resource not found: ${uri}`, { uri, ...data });
}

/**
 * An engine failure inside a resource request as a protocol error (resources have no
 * `isError` results): another owner's or an unknown run is "not found", like REST's 404.
 */
export function resourceError(e: unknown, uri: string): McpError {
  if (e instanceof McpError) return e;
  if (isEngineError(e)) {
    if (e.code === "run_not_found") return resourceNotFound(uri, { code: e.code });
    return new McpError(ProtocolCode.InvalidParams, `${e.code}: ${e.message}`, { uri, code: e.code });
  }
  return new McpError(ProtocolCode.InternalError, "internal error", { uri, code: "internal" });
}

/**
 * The SDK's McpError puts "MCP error <code>: " in front of its message, and the SDK sends that
 * message as is, so a client's own McpError read it twice. The wire carries the bare message.
 */
export function bareMessage(message: string): string {
  return message.replace(/^(MCP error -?\d+: )+/, "");
}
