/**
 * A transport wrapper that holds the SDK to the specification's protocol errors (2025-11-25)
 * where its server does not, using only the public Transport interface:
 *
 * - a request whose params do not fit its method is -32602 with a readable message (the SDK
 *   answers -32603 with a raw zod dump, e.g. for `logging/setLevel {level: "loud"}`);
 * - `tools/call` of an unknown tool is -32602 (the SDK answers an `isError` result);
 * - `resources/read` and `resources/subscribe` of a URI no template matches are -32002 (the
 *   SDK answers -32602);
 * - every error's message goes out without the SDK's "MCP error <code>: " prefix.
 *
 * Both fronts connect through it (`PatchbayMcpServer.connect`), so stdio and HTTP answer alike.
 */
import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import {
  ClientRequestSchema,
  isJSONRPCErrorResponse,
  isJSONRPCRequest,
  type JSONRPCErrorResponse,
  type JSONRPCMessage,
  type JSONRPCRequest,
  type MessageExtraInfo,
} from "@modelcontextprotocol/sdk/types.js";
import { bareMessage, ProtocolCode } from "./errors.ts";

/** What the guard must know about the server behind it. */
export interface GuardRules {
  /** The tools `tools/call` may name. */
  tools: ReadonlySet<string>;
  /** Whether a URI is one of the server's resources (its form, not whether the run exists). */
  isResourceUri(uri: string): boolean;
}

interface SchemaLike {
  safeParse(v: unknown): { success: true } | { success: false; error: { issues: readonly Issue[] } };
}
interface Issue {
  path: readonly PropertyKey[];
  message: string;
}

/** Each client request method's schema, from the SDK's own union (so a new method comes with it). */
const REQUEST_SCHEMAS: ReadonlyMap<string, SchemaLike> = new Map(
  (ClientRequestSchema as unknown as { options: { shape: { method: { value: string } } }[] }).options.map((s) => [
    s.shape.method.value,
    s as unknown as SchemaLike,
  ]),
);

/** Wrap `inner`; connect the server to the result, keep using `inner` for anything transport-specific. */
export function guardTransport(inner: Transport, rules: GuardRules): Transport {
  const guarded: Transport = {
    async start() {
      // Whoever set callbacks on `inner` before (http.ts sets onclose) keeps them.
      const previousClose = inner.onclose;
      const previousError = inner.onerror;
      inner.onclose = () => {
        previousClose?.();
        guarded.onclose?.();
      };
      inner.onerror = (e) => {
        previousError?.(e);
        guarded.onerror?.(e);
      };
      inner.onmessage = (message: JSONRPCMessage, extra?: MessageExtraInfo) => {
        const refused = isJSONRPCRequest(message) ? refusal(message, rules) : undefined;
        if (!refused) return guarded.onmessage?.(message, extra);
        inner.send(refused).catch((e: unknown) => guarded.onerror?.(e instanceof Error ? e : new Error(String(e))));
      };
      await inner.start();
    },
    send(message: JSONRPCMessage, options?: TransportSendOptions) {
      if (isJSONRPCErrorResponse(message)) {
        const error = { ...message.error, message: bareMessage(message.error.message) };
        return inner.send({ ...message, error }, options);
      }
      return inner.send(message, options);
    },
    close: () => inner.close(),
    setProtocolVersion: (version: string) => inner.setProtocolVersion?.(version),
  };
  Object.defineProperty(guarded, "sessionId", { get: () => inner.sessionId, enumerable: true });
  return guarded;
}

/** The protocol error a request gets before any handler runs, or undefined to let it through. */
function refusal(request: JSONRPCRequest, rules: GuardRules): JSONRPCErrorResponse | undefined {
  const error = (code: number, message: string, data?: Record<string, unknown>): JSONRPCErrorResponse => ({
    jsonrpc: "2.0",
    id: request.id,
    error: { code, message, ...(data ? { data } : {}) },
  });
  const schema = REQUEST_SCHEMAS.get(request.method);
  // An unknown method is the SDK's to answer (-32601).
  if (!schema) return undefined;
  const parsed = schema.safeParse({ method: request.method, params: request.params });
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.map(String).join(".") || "request"}: ${i.message}`);
    return error(ProtocolCode.InvalidParams, `Invalid params for ${request.method}: ${detail.join("; ")}`);
  }
  const params = (request.params ?? {}) as Record<string, unknown>;
  if (request.method === "tools/call" && !rules.tools.has(String(params["name"])))
    return error(ProtocolCode.InvalidParams, `Unknown tool: ${String(params["name"])}`, { tool: params["name"] });
  if (
    (request.method === "resources/read" || request.method === "resources/subscribe") &&
    !rules.isResourceUri(String(params["uri"]))
  )
    return error(ProtocolCode.ResourceNotFound, `Resource not found: ${String(params["uri"])}`, { uri: params["uri"] });
  return undefined;
}
