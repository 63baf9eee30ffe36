/**
 * The engine's event bus: live events of one run (followers), and every status change of
 * every run (webhooks, metrics). Events are published after the store holds them, so a
 * listener can always read back what it was told about.
 */
import { EventEmitter } from "node:events";
import type { RunRecord } from "../run/schema.ts";
import type { RunEvent } from "./schema.ts";

/** A stored status change: the run as updated and the `run.status` event appended with it. */
export interface StatusChange {
  run: RunRecord;
  event: Extract<RunEvent, { type: "run.status" }>;
}

export interface EventBus {
  /** Publish a stored event; with `run`, a `run.status` event also reaches `onStatus` listeners. */
  publish(event: RunEvent, run?: RunRecord): void;
  /** Live events of one run, in the order they were published. Returns the unsubscribe function. */
  subscribe(runId: string, listener: (event: RunEvent) => void): () => void;
  /** Every status change of every run. Returns the unsubscribe function. */
  onStatus(listener: (change: StatusChange) => void): () => void;
  /** Runs with at least one live subscriber (what a relay of other replicas' events feeds). */
  followed(): string[];
}

const STATUS = Symbol("status");

/** Options for {@link createEventBus}. */
export interface EventBusOptions {
  /** Told about a listener that threw; the other listeners and the publisher go on. Default: ignore. */
  onListenerError?: (error: unknown) => void;
}

export function createEventBus(opts: EventBusOptions = {}): EventBus {
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  // A listener (a webhook queue, a slow front) must never break the turn that published.
  const guard =
    <T>(listener: (value: T) => void) =>
    (value: T) => {
      try {
        listener(value);
      } catch (e) {
        opts.onListenerError?.(e);
      }
    };
  return {
    publish(event, run) {
      emitter.emit(event.runId, event);
      if (run && event.type === "run.status") emitter.emit(STATUS, { run, event } satisfies StatusChange);
    },
    subscribe(runId, listener) {
      const guarded = guard(listener);
      emitter.on(runId, guarded);
      return () => emitter.off(runId, guarded);
    },
    onStatus(listener) {
      const guarded = guard(listener);
      emitter.on(STATUS, guarded);
      return () => emitter.off(STATUS, guarded);
    },
    followed: () => emitter.eventNames().filter((n): n is string => typeof n === "string"),
  };
}
