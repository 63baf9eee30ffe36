/**
 * The live sessions: the one owner of what the engine holds for runs in this process — each
 * run's sandbox and agent, its gateway token, the turn in flight, its expiry timer, and
 * whether a transition (a turn from start to idle, a session ending) holds it. Every change
 * to that state goes through these methods.
 */
import { EngineError } from "../errors.ts";
import type { ModelGateway } from "../gateway/gateway.ts";
import type { Logger } from "../log.ts";
import type { HibernatedSession, RunSession, SessionHost } from "../session/host.ts";

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
  /** What a hibernated session kept (then `session` is null): a message wakes it. */
  hibernated: HibernatedSession | null;
  /** A hibernation attempt in progress: endings and messages wait for it. */
  hibernating: Promise<void> | null;
  token: string | null;
  turn: TurnHandle | null;
  expiry: NodeJS.Timeout | null;
  nap: NodeJS.Timeout | null;
  /** The transition holding the run: messages and endSession are refused meanwhile. */
  held: Hold | null;
}

export interface LiveSessions {
  /** Hold a run for a transition; throws session_busy when something else holds it. */
  acquire(runId: string): Hold;
  isHeld(runId: string): boolean;
  /** The run's open session, if any. */
  get(runId: string): RunSession | undefined;
  /** Record the session (and the token it calls the gateway with) a turn opened or woke, or a restart took back. */
  bind(runId: string, session: RunSession, token: string): void;
  /** What the run's hibernated session kept, if it is hibernated. */
  hibernated(runId: string): HibernatedSession | undefined;
  /** Record that the run's session hibernated (or was hibernated when this process started). */
  keepHibernated(runId: string, hibernated: HibernatedSession, token: string): void;
  /** Record a hibernation attempt in progress (it holds the run) until `attempt` settles. */
  hibernating(runId: string, attempt: Promise<void>): void;
  /** Resolves once no hibernation of the run is in progress (an ending or message then acquires at once). */
  settle(runId: string): Promise<void>;
  /** Record the token issued for a session being opened, so an ending revokes it. */
  bindToken(runId: string, token: string): void;
  /** Record the turn in flight; forgotten once it has unwound. */
  startTurn(runId: string, turn: TurnHandle): void;
  turn(runId: string): TurnHandle | undefined;
  /** Every turn in flight (drain, close). */
  turns(): TurnHandle[];
  /** Call `onExpire` after `delayMs` (replacing an earlier timer); a timer never holds the process open. */
  armExpiry(runId: string, delayMs: number, onExpire: () => void): void;
  /** Call `onIdle` after `delayMs` of idleness (replacing an earlier timer); never holds the process open. */
  armHibernation(runId: string, delayMs: number, onIdle: () => void): void;
  /** A turn starts: neither expiry nor hibernation fires meanwhile. */
  disarmTimers(runId: string): void;
  /**
   * Forget the run and stop its session: the token is revoked, the agent and sandbox closed
   * (a hibernated one's kept sandbox deleted), after any hibernation in progress.
   */
  end(runId: string): Promise<void>;
  /**
   * Forget the run and leave its session running for a later process (sessions that can
   * detach; a hibernated one as it is); ends it instead when it cannot be handed over.
   */
  handOver(runId: string): Promise<void>;
  /**
   * Another replica took the run over: stop the turn in flight (aborted with `reason`), then
   * forget the run and let go of its session without ending the run — a sandbox that outlives
   * this process (e2b) is left to the new owner, a local one closed, a hibernated one kept.
   */
  abandon(runId: string, reason: Error): Promise<void>;
  /** Runs this process holds anything for. */
  runIds(): string[];
  /** Track a session ending (endSession, cancel, expiry) so `settled()` waits for it. */
  track<T>(p: Promise<T>): Promise<T>;
  /** Resolves when every tracked ending has settled. */
  settled(): Promise<void>;
}

export function createLiveSessions(deps: {
  gateway: Pick<ModelGateway, "revokeToken">;
  host: Pick<SessionHost, "discard">;
  log: Logger;
}): LiveSessions {
  const { gateway, host, log } = deps;
  const slots = new Map<string, Slot>();
  const endings = new Set<Promise<unknown>>();

  const slot = (runId: string): Slot => {
    let s = slots.get(runId);
    if (!s)
      slots.set(
        runId,
        (s = {
          session: null,
          hibernated: null,
          hibernating: null,
          token: null,
          turn: null,
          expiry: null,
          nap: null,
          held: null,
        }),
      );
    return s;
  };

  const forget = (runId: string): Slot | undefined => {
    const s = slots.get(runId);
    if (!s) return undefined;
    slots.delete(runId);
    if (s.expiry) clearTimeout(s.expiry);
    if (s.nap) clearTimeout(s.nap);
    return s;
  };

  /** A run holds a running session or a hibernated one, never both. */
  const place = (runId: string, session: RunSession | null, hibernated: HibernatedSession | null, token: string) => {
    const s = slot(runId);
    s.session = session;
    s.hibernated = hibernated;
    s.token = token;
  };

  const settle = async (runId: string): Promise<void> => {
    for (let p = slots.get(runId)?.hibernating; p; p = slots.get(runId)?.hibernating) await p;
  };

  const timer = (delayMs: number, fire: () => void): NodeJS.Timeout => {
    const t = setTimeout(fire, Math.max(0, delayMs));
    t.unref();
    return t;
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
    bind: (runId, session, token) => place(runId, session, null, token),
    hibernated: (runId) => slots.get(runId)?.hibernated ?? undefined,
    keepHibernated: (runId, hibernated, token) => place(runId, null, hibernated, token),
    hibernating(runId, attempt) {
      const s = slot(runId);
      const p = attempt.then(
        () => undefined,
        () => undefined,
      );
      s.hibernating = p;
      void p.then(() => {
        if (slots.get(runId)?.hibernating === p) slots.get(runId)!.hibernating = null;
      });
    },
    settle,
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
      s.expiry = timer(delayMs, onExpire);
    },
    armHibernation(runId, delayMs, onIdle) {
      const s = slots.get(runId);
      if (!s) return;
      if (s.nap) clearTimeout(s.nap);
      s.nap = timer(delayMs, onIdle);
    },
    disarmTimers(runId) {
      const s = slots.get(runId);
      if (!s) return;
      for (const t of [s.expiry, s.nap]) if (t) clearTimeout(t);
      s.expiry = s.nap = null;
    },
    async end(runId) {
      await settle(runId);
      const s = forget(runId);
      if (!s) return;
      if (s.token) gateway.revokeToken(s.token);
      try {
        await s.session?.close();
        if (s.hibernated) await host.discard?.(runId, s.hibernated);
      } catch (e) {
        log.warn("session did not close cleanly", { runId, error: e });
      }
    },
    async handOver(runId) {
      await settle(runId);
      // Nothing of a hibernated session runs: the next start keeps it as it is.
      if (slots.get(runId)?.hibernated) return void forget(runId);
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
    async abandon(runId, reason) {
      const turn = slots.get(runId)?.turn;
      if (turn) {
        turn.abort.abort(reason);
        await turn.done;
      }
      await settle(runId);
      const s = forget(runId);
      if (!s) return;
      if (s.token) gateway.revokeToken(s.token);
      try {
        if (s.session?.detach) await s.session.detach();
        else await s.session?.close();
      } catch (e) {
        log.warn("the session of a run another replica took over did not close cleanly", { runId, error: e });
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
