/**
 * The request the gateway forwards: only the fields of an allow-list, one occurrence each,
 * with `n` forced to 1 and the output-token fields clamped. Anything else an agent adds
 * (OpenRouter's `models`/`route` fallbacks, `provider`, `plugins`, `transforms`, unknown
 * fields) never reaches the upstream, so a token cannot buy more than its grant.
 *
 * The body is not re-serialised: a scan finds the top-level members' byte ranges, small
 * values are parsed to be checked, and the kept members are re-joined from slices of the
 * original buffer. A 30 MB `messages` array is never parsed or copied into a string.
 */

/** Fields forwarded per route; everything else is dropped. */
const ALLOWED: Record<string, ReadonlySet<string>> = {
  "/chat/completions": new Set([
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "reasoning",
    "reasoning_effort",
    "usage",
    "user",
    "n",
  ]),
  "/completions": new Set([
    "model",
    "prompt",
    "suffix",
    "max_tokens",
    "temperature",
    "top_p",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "echo",
    "user",
    "n",
  ]),
  "/responses": new Set([
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "temperature",
    "top_p",
    "max_output_tokens",
    "stream",
    "reasoning",
    "text",
    "truncation",
    "include",
    "previous_response_id",
    "user",
  ]),
};
/** Fields that hold a number of output tokens the operator pays for. */
const TOKEN_FIELDS = ["max_tokens", "max_completion_tokens", "max_output_tokens"] as const;
/** Endpoints whose streaming form accepts `stream_options.include_usage` (Responses reports usage by itself). */
const STREAM_OPTIONS_PATHS = new Set(["/chat/completions", "/completions"]);
/** Values up to this size are parsed and checked; larger ones (messages, tools) are only scanned. */
const PARSE_LIMIT = 256 * 1024;

/** Thrown when a body is not a JSON object the gateway can forward; the message is for the agent. */
export class InvalidRequest extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidRequest";
  }
}

/** What the gateway needs to know of a request, and the body to send upstream. */
export interface ForwardBody {
  model: string | undefined;
  stream: boolean;
  /** The rewritten body as pieces (slices of the original where untouched); write them in order. */
  pieces: Buffer[];
  length: number;
  /** Top-level fields that were dropped, for the log. */
  dropped: string[];
}

/**
 * Rewrite a request body for `path`: keep allow-listed fields (the last occurrence of each, as
 * JSON.parse would), force `n` to 1, clamp token fields to `maxTokens`, and ask a streamed
 * completion to report usage. Throws {@link InvalidRequest} for a body that is not a JSON object.
 */
export function rewriteBody(body: Buffer, path: string, maxTokens: number): ForwardBody {
  const allowed = ALLOWED[path];
  if (!allowed) throw new InvalidRequest(`no forwarding rules for ${path}`);
  const members = scanObject(body);
  const kept = new Map<string, Buffer>();
  const dropped: string[] = [];
  for (const m of members) {
    if (!allowed.has(m.key)) {
      dropped.push(m.key);
      continue;
    }
    const raw = body.subarray(m.start, m.end);
    if (raw.length <= PARSE_LIMIT) {
      try {
        JSON.parse(raw.toString("utf8"));
      } catch {
        throw new InvalidRequest(`field ${JSON.stringify(m.key)} is not valid JSON`);
      }
    }
    kept.delete(m.key); // a repeated key keeps its place of last occurrence
    kept.set(m.key, raw);
  }

  const small = (key: string): unknown => {
    const raw = kept.get(key);
    return raw && raw.length <= PARSE_LIMIT ? JSON.parse(raw.toString("utf8")) : undefined;
  };
  const set = (key: string, value: unknown) => kept.set(key, Buffer.from(JSON.stringify(value), "utf8"));

  const model = small("model");
  if (kept.has("model") && typeof model !== "string") throw new InvalidRequest("model must be a string");
  const stream = small("stream") === true;
  if (kept.has("n")) set("n", 1);
  for (const field of TOKEN_FIELDS) {
    if (!kept.has(field)) continue;
    const v = small(field);
    if (typeof v !== "number" || !Number.isFinite(v) || v < 1)
      throw new InvalidRequest(`${field} must be a positive number`);
    if (v > maxTokens) set(field, maxTokens);
  }
  const reasoning = small("reasoning");
  if (reasoning && typeof reasoning === "object" && "max_tokens" in reasoning) {
    const v = (reasoning as { max_tokens: unknown }).max_tokens;
    if (typeof v !== "number" || v > maxTokens) set("reasoning", { ...reasoning, max_tokens: maxTokens });
  }
  if (kept.has("stream_options")) {
    // Only include_usage means anything to us; other options are dropped with the unknown fields.
    if (stream && STREAM_OPTIONS_PATHS.has(path)) set("stream_options", { include_usage: true });
    else kept.delete("stream_options");
  } else if (stream && STREAM_OPTIONS_PATHS.has(path)) {
    // Without it a streamed completion reports no tokens and the run goes unmetered.
    set("stream_options", { include_usage: true });
  }

  const pieces: Buffer[] = [OPEN];
  let first = true;
  for (const [key, raw] of kept) {
    pieces.push(Buffer.from(`${first ? "" : ","}${JSON.stringify(key)}:`, "utf8"), raw);
    first = false;
  }
  pieces.push(CLOSE);
  return {
    model: model as string | undefined,
    stream,
    pieces,
    length: pieces.reduce((n, p) => n + p.length, 0),
    dropped,
  };
}

const OPEN = Buffer.from("{");
const CLOSE = Buffer.from("}");

interface Member {
  key: string;
  /** Byte range of the value in the body. */
  start: number;
  end: number;
}

// Byte values of the JSON structure.
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;

/**
 * The top-level members of a JSON object, by byte range. Strings are skipped with
 * `indexOf` (native speed) and brackets are matched by kind, so a value's range is exactly
 * what a JSON parser would take; scalars and nested contents are checked only when parsed.
 */
function scanObject(buf: Buffer): Member[] {
  const fail = (why: string): never => {
    throw new InvalidRequest(`request body is not valid JSON (${why})`);
  };
  const ws = (i: number) => {
    while (i < buf.length && (buf[i] === 0x20 || buf[i] === 0x0a || buf[i] === 0x0d || buf[i] === 0x09)) i++;
    return i;
  };
  /** Index just past the string starting at `i` (a quote). */
  const skipString = (i: number): number => {
    let j = i + 1;
    for (;;) {
      const q = buf.indexOf(QUOTE, j);
      if (q === -1) return fail("unterminated string");
      let slashes = 0;
      for (let k = q - 1; k > i && buf[k] === BACKSLASH; k--) slashes++;
      if (slashes % 2 === 0) return q + 1;
      j = q + 1;
    }
  };
  /** Index just past the value starting at `i`. */
  const skipValue = (i: number): number => {
    const c = buf[i];
    if (c === QUOTE) return skipString(i);
    if (c !== LBRACE && c !== LBRACKET) {
      let j = i;
      while (j < buf.length) {
        const d = buf[j]!;
        if (d === COMMA || d === RBRACE || d === RBRACKET || d === 0x20 || d === 0x0a || d === 0x0d || d === 0x09)
          break;
        j++;
      }
      return j === i ? fail("missing value") : j;
    }
    const stack: number[] = [];
    let j = i;
    while (j < buf.length) {
      const d = buf[j]!;
      if (d === QUOTE) {
        j = skipString(j);
        continue;
      }
      if (d === LBRACE || d === LBRACKET) stack.push(d === LBRACE ? RBRACE : RBRACKET);
      else if (d === RBRACE || d === RBRACKET) {
        if (stack.pop() !== d) return fail("mismatched bracket");
        if (stack.length === 0) return j + 1;
      }
      j++;
    }
    return fail("unterminated value");
  };

  let i = ws(0);
  if (buf[i] !== LBRACE) throw new InvalidRequest("request body must be a JSON object");
  i = ws(i + 1);
  const members: Member[] = [];
  if (buf[i] === RBRACE) i++;
  else
    for (;;) {
      if (buf[i] !== QUOTE) fail("expected a key");
      const keyEnd = skipString(i);
      let key: string;
      try {
        key = JSON.parse(buf.toString("utf8", i, keyEnd)) as string;
      } catch {
        return fail("bad key");
      }
      i = ws(keyEnd);
      if (buf[i] !== COLON) fail("expected ':'");
      const start = ws(i + 1);
      const end = skipValue(start);
      members.push({ key, start, end });
      i = ws(end);
      if (buf[i] === COMMA) {
        i = ws(i + 1);
        continue;
      }
      if (buf[i] === RBRACE) {
        i++;
        break;
      }
      fail("expected ',' or '}'");
    }
  if (ws(i) !== buf.length) fail("trailing data");
  return members;
}
