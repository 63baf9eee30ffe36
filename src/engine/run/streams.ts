/**
 * Open follows per owner, held to PATCHBAY_MAX_STREAMS_PER_KEY. Every follow of a run's log
 * (an SSE stream, an MCP wait, stream_events or resource subscription) holds a slot until it
 * ends, so one key cannot pin the server's memory and sockets with streams it never reads.
 */
import { EngineError } from "../errors.ts";

/** A stream ends in seconds to minutes; a client at the cap retries soon. */
const RETRY_AFTER_S = 5;

export interface StreamSlots {
  /** Take one of the owner's slots; throws too_many_streams at the cap. Returns the release (idempotent). */
  acquire(ownerId: string): () => void;
  /** Slots the owner holds now. */
  open(ownerId: string): number;
}

export function createStreamSlots(deps: { max: number }): StreamSlots {
  const held = new Map<string, number>();
  return {
    acquire(ownerId) {
      const n = held.get(ownerId) ?? 0;
      if (n >= deps.max) {
        throw new EngineError(
          "too_many_streams",
          `this API key's owner already has ${n} open event streams (at most ${deps.max}); close one or retry later`,
          { open: n, limit: deps.max, retryAfterSeconds: RETRY_AFTER_S },
        );
      }
      held.set(ownerId, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (held.get(ownerId) ?? 1) - 1;
        if (left > 0) held.set(ownerId, left);
        else held.delete(ownerId);
      };
    },
    open: (ownerId) => held.get(ownerId) ?? 0,
  };
}
