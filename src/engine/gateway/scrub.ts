/**
 * Scrubbing the upstream key out of a response as it streams: an upstream that echoes
 * `Authorization` (in an error or in a 200 answer, JSON or SSE) must not hand the managed key
 * to the agent, which would put it in the run's summary, events and store.
 */

const REDACTED = Buffer.from("[redacted]");

/** Replaces every occurrence of a secret in a byte stream, including one split across chunks. */
export interface KeyScrubber {
  /** The scrubbed bytes that can be passed on now (a possible start of the key is held back). */
  push(chunk: Buffer): Buffer;
  /** The bytes still held back, at the end of the stream. */
  end(): Buffer;
}

export function createKeyScrubber(key: string): KeyScrubber {
  const needle = Buffer.from(key, "utf8");
  let held = Buffer.alloc(0);
  return {
    push(chunk) {
      if (needle.length === 0) return chunk;
      const text = held.length ? Buffer.concat([held, chunk]) : chunk;
      const out: Buffer[] = [];
      let from = 0;
      for (let at = text.indexOf(needle, from); at !== -1; at = text.indexOf(needle, from)) {
        out.push(text.subarray(from, at), REDACTED);
        from = at + needle.length;
      }
      // Hold back the longest tail that could be the start of the key; usually nothing.
      const keep = pendingPrefix(text, from, needle);
      out.push(text.subarray(from, text.length - keep));
      held = Buffer.from(text.subarray(text.length - keep));
      return out.length === 1 ? out[0]! : Buffer.concat(out);
    },
    end() {
      const rest = held;
      held = Buffer.alloc(0);
      return rest;
    },
  };
}

/** Length of the longest suffix of `text[from..]` that is a proper prefix of `needle`. */
function pendingPrefix(text: Buffer, from: number, needle: Buffer): number {
  const max = Math.min(needle.length - 1, text.length - from);
  for (let n = max; n > 0; n--) if (text.compare(needle, 0, n, text.length - n, text.length) === 0) return n;
  return 0;
}
