/**
 * Usage metering: the tokens and cost an upstream reports, read from the response as it
 * streams past (SSE) or from the whole body (JSON), and handed to the run's grant.
 */
import { StringDecoder } from "node:string_decoder";
import type { Logger } from "../log.ts";
import type { Usage } from "../run/schema.ts";
import type { GatewayGrant } from "./gateway.ts";

/** Non-streaming JSON bodies are kept (up to this size) only to read `usage` at the end. */
const MAX_USAGE_BODY = 16 * 1024 * 1024;
/** A line longer than this is no usage chunk we can use; dropping it bounds memory on a hostile stream. */
const MAX_SSE_LINE = 4 * 1024 * 1024;

/**
 * Scans an SSE stream, chunk by chunk, for the `usage` object OpenAI-compatible servers send
 * in the final chunk (chat/completions with `include_usage`) or in `response.completed`
 * (Responses API). Lines may be split anywhere across chunks, including inside a UTF-8 sequence.
 */
export interface SseUsageScanner {
  /** Feed the next chunk of the stream as received. */
  push(chunk: Buffer): void;
  /** Flush a final unterminated line and return the last usage seen, if any. */
  end(): Usage | undefined;
  /** True once a `data:` line was neither JSON nor `[DONE]`: the stream is garbage. */
  readonly malformed: boolean;
}

/** Create an {@link SseUsageScanner}. Malformed lines are skipped: metering must never break the stream. */
export function createSseUsageScanner(): SseUsageScanner {
  const decoder = new StringDecoder("utf8");
  let carry = "";
  let overlong = false;
  let usage: Usage | undefined;
  let malformed = false;

  const line = (raw: string) => {
    if (!raw.startsWith("data:")) return;
    const data = raw.slice(5).trim();
    if (data === "[DONE]" || data === "" || malformed) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
      // OpenCode skips a chunk it cannot parse and takes the rest as a complete (empty)
      // answer, so a garbage stream would end the turn "successfully" with nothing done.
      malformed = true;
      return;
    }
    const found = usageOf(parsed);
    if (found) usage = found;
  };
  const feed = (text: string) => {
    let start = 0;
    for (let nl = text.indexOf("\n", start); nl !== -1; nl = text.indexOf("\n", start)) {
      const piece = text.slice(start, nl);
      start = nl + 1;
      if (overlong) {
        // The tail of a line already dropped as too long.
        overlong = false;
        carry = "";
        continue;
      }
      line((carry + piece).replace(/\r$/, ""));
      carry = "";
    }
    if (overlong) return;
    carry += text.slice(start);
    if (carry.length > MAX_SSE_LINE) {
      carry = "";
      overlong = true;
    }
  };
  return {
    push: (chunk) => feed(decoder.write(chunk)),
    end() {
      feed(decoder.end());
      if (carry && !overlong) line(carry.replace(/\r$/, ""));
      carry = "";
      return usage;
    },
    get malformed() {
      return malformed;
    },
  };
}

/**
 * Meters one successful response body, fed chunk by chunk as it is passed on: an SSE stream
 * is scanned as it goes, a JSON body kept (bounded) and read at the end.
 */
export interface UsageMeter {
  push(chunk: Buffer): void;
  /** True once an event stream turned out garbage (see {@link SseUsageScanner.malformed}). */
  readonly malformed: boolean;
  end(): Usage | undefined;
}

/** A meter for a response of this content type, or undefined when it cannot carry usage. */
export function meterFor(contentType: string): UsageMeter | undefined {
  if (contentType.includes("text/event-stream")) return createSseUsageScanner();
  if (!contentType.includes("json")) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  return {
    push(c) {
      size += c.length;
      if (size <= MAX_USAGE_BODY) chunks.push(c);
    },
    malformed: false,
    end: () => (size <= MAX_USAGE_BODY ? usageFromJson(Buffer.concat(chunks).toString("utf8")) : undefined),
  };
}

/** Hand usage to the run's grant; a metering bug must not turn a good model answer into a failure. */
export function reportUsage(grant: GatewayGrant, usage: Usage, log: Logger): void {
  try {
    grant.onUsage(usage);
  } catch (e) {
    log.error("gateway onUsage callback threw", { err: e });
  }
}

/** Read `usage` from a chat/completions, completions or Responses JSON payload (stream chunk or whole body). */
function usageFromJson(text: string): Usage | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON (a malformed chunk or a truncated body): there is simply no usage to meter.
    return undefined;
  }
  return usageOf(parsed);
}

/** `usage` of a parsed chat/completions, completions or Responses payload. */
function usageOf(parsed: unknown): Usage | undefined {
  if (!parsed || typeof parsed !== "object") return undefined;
  const obj = parsed as { usage?: unknown; response?: { usage?: unknown } };
  const raw = obj.usage ?? obj.response?.usage;
  if (!raw || typeof raw !== "object") return undefined;
  const u = raw as Record<string, unknown>;
  const input = num(u.prompt_tokens) ?? num(u.input_tokens);
  const output = num(u.completion_tokens) ?? num(u.output_tokens);
  if (input === undefined && output === undefined) return undefined;
  const cost = num(u.cost);
  return {
    inputTokens: Math.round(input ?? 0),
    outputTokens: Math.round(output ?? 0),
    ...(cost !== undefined ? { costUsd: cost } : {}),
  };
}

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}
