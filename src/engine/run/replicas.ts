/**
 * Replicas sharing one database (PATCHBAY_DATABASE_URL): this part keeps the replica's leases
 * alive, places queued runs on it while it has room (PATCHBAY_MAX_ACTIVE_RUNS), takes over
 * the runs of replicas that died, and hands a request about a run whose session another
 * replica holds (a message, a cancel, an endSession) to that replica, answering with what it
 * answered (the same view, or the same error code). When this replica stalled past its lease
 * and another took one of its runs (a write refused, or the heartbeat found it), it stops that
 * run's session here without writing anything more for it: the new owner has settled it.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { EngineError, type ErrorCode } from "../errors.ts";
import type { Logger } from "../log.ts";
import { leaseLost } from "../store/pg/leases.ts";
import type { Peer, ReplicaRegistry } from "../store/pg/replicas.ts";
import type { LiveSessions } from "./sessions.ts";
import type { RunView } from "./view.ts";

/** A request handed to the replica that holds the run's session. */
export interface HandoffRequest {
  op: "message" | "cancel" | "end";
  ownerId: string;
  runId: string;
  input?: unknown;
}

export interface Replicas {
  readonly replicaId: string;
  /** Start the heartbeat, placement and takeover loops (after recovery). */
  start(): void;
  /** Tell the other replicas where this one is reached (`serve`, once it listens). */
  advertise(url: string): Promise<void>;
  /** Run `local` here, or hand the request to the replica holding the run's session. */
  route(req: HandoffRequest, local: () => Promise<RunView>): Promise<RunView>;
  /** Whether this replica may start another run now. */
  hasRoom(): boolean;
  /** Queue a created run's first turn for the first replica with room. */
  enqueue(runId: string, input: unknown): Promise<void>;
  /** Whether a handoff request carries the replicas' shared token. */
  verify(token: string | undefined): boolean;
  /** Stop the loops and leave the registry. */
  close(): Promise<void>;
}

export interface ReplicasDeps {
  registry: ReplicaRegistry;
  sessions: LiveSessions;
  log: Logger;
  /** Runs this replica may hold at once (running or idle); undefined: no bound. */
  maxActiveRuns: number | undefined;
  /** Key the handoff token is derived from (PATCHBAY_SECRET_KEY, which every replica shares). */
  secretKey: string;
  /** Start a queued run's first turn here. */
  begin(runId: string, input: unknown): Promise<void>;
  /** Settle runs taken over from a dead replica (reattach, or end them as a restart does). */
  takeOver(runIds: string[]): Promise<void>;
  /** Whether the engine still takes work (not draining or closing). */
  accepting(): boolean;
  /** How often queued runs are looked for (default 500 ms). */
  placementMs?: number;
}

export const HANDOFF_PATH = "/internal/v1/handoff";
export const HANDOFF_HEADER = "x-patchbay-replica-token";
const LOST_MESSAGE =
  "another replica took over a run while this one did not answer; stopping its session here, writing nothing more for it";
/** Longest a handoff may take: a cancel waits for its turn to unwind. */
const HANDOFF_TIMEOUT_MS = 60_000;

export function createReplicas(deps: ReplicasDeps): Replicas {
  const { registry, sessions, log } = deps;
  const token = createHmac("sha256", Buffer.from(deps.secretKey, "base64"))
    .update("patchbay replica handoff v1")
    .digest("hex");
  const timers: NodeJS.Timeout[] = [];
  let placing = false;
  let closed = false;
  const starting = new Set<string>();

  const held = () => [...new Set([...sessions.runIds(), ...starting])];

  const stopLost = registry.onLeaseLost((runId) => {
    log.warn(LOST_MESSAGE, { runId });
    void sessions
      .abandon(runId, leaseLost(runId))
      .catch((e: unknown) =>
        log.warn("could not stop the session of a run another replica took over", { runId, error: e }),
      )
      .then(() => registry.letGo(runId));
  });
  const hasRoom = () => deps.maxActiveRuns === undefined || held().length < deps.maxActiveRuns;

  async function place(): Promise<void> {
    if (placing || closed || !deps.accepting()) return;
    placing = true;
    try {
      const room = deps.maxActiveRuns === undefined ? 8 : deps.maxActiveRuns - held().length;
      for (const { runId, input } of await registry.claimQueued(room)) {
        starting.add(runId);
        void deps
          .begin(runId, input)
          .catch((e: unknown) => {
            // Taken over meanwhile: already logged once, and its session stopped.
            if (!(e instanceof EngineError && e.code === "lease_lost"))
              log.warn("could not start a queued run", { runId, error: e });
          })
          .finally(() => starting.delete(runId));
      }
    } finally {
      placing = false;
    }
  }

  function every(ms: number, work: () => Promise<void>, what: string): void {
    let busy = false;
    const t = setInterval(() => {
      if (busy || closed) return;
      busy = true;
      void work()
        .catch((e: unknown) => {
          // A lost database is logged once by the store; each try that finds it still gone is not news.
          if (!(e instanceof EngineError && e.code === "storage_failed"))
            log.warn(`replica ${what} failed; retrying`, { error: e });
        })
        .finally(() => (busy = false));
    }, ms);
    t.unref();
    timers.push(t);
  }

  async function forward(peer: Peer, req: HandoffRequest): Promise<RunView> {
    let res: Response;
    try {
      res = await fetch(new URL(HANDOFF_PATH, peer.url), {
        method: "POST",
        headers: { "content-type": "application/json", [HANDOFF_HEADER]: token },
        body: JSON.stringify(req),
        signal: AbortSignal.timeout(HANDOFF_TIMEOUT_MS),
      });
    } catch (e) {
      throw new EngineError(
        "session_busy",
        `the replica running this run's session did not answer (${e instanceof Error ? e.message : String(e)}); retry shortly`,
        { retryAfterSeconds: 5 },
      );
    }
    const body = (await res.json()) as {
      view?: RunView;
      error?: { code: ErrorCode; message: string; details?: Record<string, unknown> };
    };
    if (body.error) throw new EngineError(body.error.code, body.error.message, body.error.details);
    return body.view!;
  }

  return {
    replicaId: registry.replicaId,
    advertise: (url) => registry.register(url),
    start() {
      // Five beats a lease: a replica whose event loop or database stalls for a few seconds
      // misses one or two, never the lease.
      every(
        Math.max(200, Math.floor(registry.leaseMs / 5)),
        async () => void (await registry.heartbeat()),
        "heartbeat",
      );
      every(deps.placementMs ?? 500, place, "placement");
      every(
        Math.max(500, Math.floor(registry.leaseMs / 2)),
        async () => {
          if (!deps.accepting()) return;
          const orphans = await registry.takeOrphans();
          if (orphans.length) {
            log.info("taking over runs of a replica that stopped answering", { runs: orphans.length });
            await deps.takeOver(orphans);
          }
        },
        "takeover",
      );
    },
    async route(req, local) {
      if (sessions.get(req.runId) || sessions.isHeld(req.runId)) return local();
      const peer = await registry.ownerElsewhere(req.runId);
      if (peer === "stale") {
        // Served here now, a session still held by a dead replica would be lost (ended, and a
        // message chained); the takeover loop reattaches it within half a lease.
        throw new EngineError(
          "session_busy",
          "the replica running this run's session stopped answering; another is taking it over, retry shortly",
          { retryAfterSeconds: Math.ceil(registry.leaseMs / 2000) + 1 },
        );
      }
      return peer ? forward(peer, req) : local();
    },
    hasRoom,
    enqueue: (runId, input) => registry.enqueue(runId, input),
    verify(given) {
      if (typeof given !== "string" || given.length !== token.length) return false;
      return timingSafeEqual(Buffer.from(given), Buffer.from(token));
    },
    async close() {
      closed = true;
      for (const t of timers) clearInterval(t);
      stopLost();
      await registry.leave().catch((e: unknown) => log.warn("could not leave the replica registry", { error: e }));
    },
  };
}
