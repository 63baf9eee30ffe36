/**
 * The live sessions: the one owner of what the engine holds for runs in this process — each
 * run's sandbox and agent, its gateway token, the turn in flight, its expiry timer, and
 * whether a transition (a turn from start to idle, a session ending) holds it. Every change
 * to that state goes through these methods.
 */
import { EngineError } from "../errors.ts";
import type { ModelGateway } from "../gateway/gateway.ts";
import type { Logger } from "../log.ts";
import type { RunSession } from "../session/host.ts";

/** A turn in flight: how to stop it and when it has unwound. */
export interface TurnHandle {
  abort: AbortController;
  done: Promise<void>;
}

/** A run held by one transition; `release` lets go only if this hold is still the run's. */
export interface Hold {
  readonly runId: string;
  release(): void;
}

interface Slot {
  /** The sandbox and agent, once the run's first turn opened them. */
  session: RunSession | null;
  token: string | null;
  turn: TurnHandle | null;
  expiry: NodeJS.Timeout | null;
  /** The transition holding the run: messages and endSession are refused meanwhile. */
  held: Hold | null;
}

export interface LiveSessions {
  /** Hold a run for a transition; throws session_busy when something else holds it. */
  acquire(runId: string): Hold;
  isHeld(runId: string): boolean;
  /** The run's open session, if any. */
  get(runId: string): RunSession | undefined;
  /** Record the session (and the token it calls the gateway with) a turn opened or a restart took back. */
  bind(runId: string, session: RunSession, token: string): void;
  /** Record the token issued for a session being opened, so an ending revokes it. */
  bindToken(runId: string, token: string): void;
  /** Record the turn in flight; forgotten once it has unwound. */
  startTurn(runId: string, turn: TurnHandle): void;
  turn(runId: string): TurnHandle | undefined;
  /** Every turn in flight (drain, close). */
  turns(): TurnHandle[];
  /** Call `onExpire` after `delayMs` (replacing an earlier timer); a timer never holds the process open. */
  armExpiry(runId: string, delayMs: number, onExpire: () => void): void;
  disarmExpiry(runId: string): void;
  /** Forget the run and stop its session: the token is revoked, the agent and sandbox closed. */
  end(runId: string): Promise<void>;
  /**
   * Forget the run and leave its session running for a later process (sessions that can
   * detach); ends it instead when it cannot be handed over.
   */
  handOver(runId: string): Promise<void>;
  /** Runs this process holds anything for. */
  runIds(): string[];
  /** Track a session ending (endSession, cancel, expiry) so `settled()` waits for it. */
  track<T>(p: Promise<T>): Promise<T>;
  /** Resolves when every tracked ending has settled. */
  settled(): Promise<void>;
}

export function createLiveSessions(deps: { gateway: Pick<ModelGateway, "revokeToken">; log: Logger }): LiveSessions {
  const { gateway, log } = deps;
  const slots = new Map<string, Slot>();
  const endings = new Set<Promise<unknown>>();

  const slot = (runId: string): Slot => {
    let s = slots.get(runId);
    if (!s) slots.set(runId, (s = { session: null, token: null, turn: null, expiry: null, held: null }));
    return s;
  };

  const forget = (runId: string): Slot | undefined => {
    const s = slots.get(runId);
    if (!s) return undefined;
    slots.delete(runId);
    if (s.expiry) clearTimeout(s.expiry);
    return s;
  };

  return {
    acquire(runId) {
      const s = slot(runId);
      if (s.held) {
        throw new EngineError("session_busy", "the run is busy with a turn; retry when it is idle", {
          retryAfterSeconds: 5,
        });
      }
      const hold: Hold = {
        runId,
        release() {
          const current = slots.get(runId);
          if (current?.held === hold) current.held = null;
        },
      };
      s.held = hold;
      return hold;
    },
    isHeld: (runId) => !!slots.get(runId)?.held,
    get: (runId) => slots.get(runId)?.session ?? undefined,
    bind(runId, session, token) {
      const s = slot(runId);
      s.session = session;
      s.token = token;
    },
    bindToken(runId, token) {
      slot(runId).token = token;
    },
    startTurn(runId, turn) {
      const s = slot(runId);
      s.turn = turn;
      void turn.done.finally(() => {
        if (slots.get(runId)?.turn === turn) slots.get(runId)!.turn = null;
      });
    },
    turn: (runId) => slots.get(runId)?.turn ?? undefined,
    turns: () => [...slots.values()].flatMap((s) => (s.turn ? [s.turn] : [])),
    armExpiry(runId, delayMs, onExpire) {
      const s = slots.get(runId);
      if (!s) return;
      if (s.expiry) clearTimeout(s.expiry);
      s.expiry = setTimeout(onExpire, Math.max(0, delayMs));
      s.expiry.unref();
    },
    disarmExpiry(runId) {
      const s = slots.get(runId);
      if (s?.expiry) clearTimeout(s.expiry);
      if (s) s.expiry = null;
    },
    async end(runId) {
      const s = forget(runId);
      if (!s) return;
      if (s.token) gateway.revokeToken(s.token);
      try {
        await s.session?.close();
      } catch (e) {
        log.warn("session did not close cleanly", { runId, error: e });
      }
    },
    async handOver(runId) {
      const s = slots.get(runId);
      if (!s?.session?.detach || !s.session.resume || s.held) return this.end(runId);
      forget(runId);
      try {
        await s.session.detach();
        log.info("left an idle run's sandbox running for the next start", { runId });
      } catch (e) {
        log.warn("could not hand an idle run over; it ends at the next start", { runId, error: e });
      }
    },
    runIds: () => [...slots.keys()],
    track(p) {
      endings.add(p);
      const drop = () => endings.delete(p);
      void p.then(drop, drop);
      return p;
    },
    async settled() {
      await Promise.allSettled([...endings]);
    },
  };
}
