/**
 * How the engine records what happens to a run: an event appended to its log, or a status
 * stored together with its `run.status` event (one store operation, so no reader sees the
 * one without the other), each published on the bus once stored. Everything it writes is
 * masked first (the run's secret values become `[secret:NAME]`): events and run fields are
 * what every front shows. Every event's text is then held to MAX_EVENT_TEXT_BYTES, whichever
 * part of the engine wrote it (masked before it is cut, so a cut never keeps half a secret).
 */
import { boundEvent } from "../events/bound.ts";
import type { EventBus } from "../events/bus.ts";
import type { BuilderEventData, NewRunEvent, RunEvent } from "../events/schema.ts";
import { isEngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { RunStore } from "../store/store.ts";
import { isTerminal, type RunRecord, type RunStatus } from "./schema.ts";

export interface RunWriter {
  emit(runId: string, event: NewRunEvent): Promise<RunEvent>;
  /** A `builder.event` of the run's current turn, appended in call order without waiting (agent callbacks). */
  note(run: Pick<RunRecord, "id" | "turnCount">, data: BuilderEventData): void;
  /** Store a new status (with `fields`) and its `run.status` event. */
  setStatus(run: RunRecord, status: RunStatus, fields?: Partial<RunRecord>): Promise<RunRecord>;
}

export interface RunWriterDeps {
  store: RunStore;
  bus: EventBus;
  log: Logger;
  now: () => Date;
  /** Masks the run's secrets in a value (synchronous: appends keep call order). Default: none. */
  mask?: <T>(runId: string, value: T) => T;
}

export function createRunWriter(deps: RunWriterDeps): RunWriter {
  const { store, bus, log, now } = deps;
  const mask = deps.mask ?? (<T>(_runId: string, value: T): T => value);
  const writer: RunWriter = {
    async emit(runId, event) {
      const stored = await store.appendEvent(runId, boundEvent(mask(runId, event)));
      bus.publish(stored);
      return stored;
    },
    note(run, data) {
      writer.emit(run.id, { type: "builder.event", turn: run.turnCount, data }).catch((e: unknown) => {
        // Another replica took the run over: logged once where its session is stopped. The
        // database is gone: logged once by the store, not once per event of every run.
        if (!(isEngineError(e) && (e.code === "lease_lost" || e.code === "storage_failed")))
          log.warn("could not record an event", { runId: run.id, error: e });
      });
    },
    async setStatus(run, status, fields = {}) {
      const t = now().toISOString();
      const patch: Partial<RunRecord> = {
        ...mask(run.id, fields),
        status,
        updatedAt: t,
        ...(isTerminal(status) ? { finishedAt: t, sessionExpiresAt: null } : {}),
      };
      const { run: updated, event } = await store.transition(run.id, patch, (u) => ({
        type: "run.status",
        turn: u.turnCount,
        data: {
          status,
          turn: u.turnCount,
          ...(u.error && status === "failed" ? { error: u.error } : {}),
          ...(status === "idle" ? { sessionExpiresAt: u.sessionExpiresAt } : {}),
        },
      }));
      bus.publish(event, updated);
      return updated;
    },
  };
  return writer;
}
