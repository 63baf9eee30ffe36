/**
 * Per-key limits of the REST API: a request rate (express-rate-limit, keyed by API key id)
 * and a cap on how many runs an owner may have active (queued, running or idle) at once.
 * Both answer 429 with `Retry-After`.
 */
import type { RequestHandler } from "express";
import { rateLimit } from "express-rate-limit";
import type { Engine } from "../engine/index.ts";
import { callerOf } from "./auth.ts";
import { HttpError, sendError } from "./errors.ts";

/** A run takes seconds to minutes; suggest a retry well before a session would expire. */
const ACTIVE_RETRY_AFTER_S = 30;

export interface RateLimitOptions {
  /** Requests per window per key. */
  limit: number;
  /** Default 60 000 (the limit is configured per minute). */
  windowMs?: number;
}

/** Counts requests per API key. Must run after authentication; public routes are not counted. */
export function createRateLimit({ limit, windowMs = 60_000 }: RateLimitOptions): RequestHandler {
  return rateLimit({
    windowMs,
    limit,
    standardHeaders: "draft-7",
    legacyHeaders: false,
    // Keyed by the authenticated key, never the IP: many clients share an egress address.
    keyGenerator: (_req, res) => callerOf(res).keyId,
    skip: (_req, res) => res.locals.caller === undefined,
    // The default key generator's IP checks do not apply to a key-id generator.
    validate: { keyGeneratorIpFallback: false, ip: false },
    handler: (req, res) => {
      const info = (req as unknown as { rateLimit?: { resetTime?: Date } }).rateLimit;
      const seconds = info?.resetTime ? (info.resetTime.getTime() - Date.now()) / 1000 : windowMs / 1000;
      sendError(
        res,
        "rate_limited",
        `too many requests for this API key: at most ${limit} per ${Math.round(windowMs / 1000)} s`,
        { limit },
        seconds,
      );
    },
  });
}

/**
 * Serialises run creation per owner and refuses it past the active-run cap. The check and
 * the start run under one lock, so two concurrent requests cannot both take the last slot
 * (and two requests with one Idempotency-Key cannot both create a run).
 */
export interface ActiveRunGate {
  /** Run `start` if the owner is below the cap, else throw a 429 (too_many_active_runs). */
  admit<T>(ownerId: string, start: () => Promise<T>, opts?: { counts?: boolean }): Promise<T>;
}

export function createActiveRunGate(engine: Engine, maxActive: number): ActiveRunGate {
  const tails = new Map<string, Promise<unknown>>();
  return {
    admit(ownerId, start, opts = {}) {
      const run = async () => {
        if (opts.counts !== false) {
          const active = await engine.activeRunCount(ownerId);
          if (active >= maxActive) {
            throw new HttpError(
              "too_many_active_runs",
              `this API key's owner already has ${active} active runs (at most ${maxActive}); end a session (endSession) or wait for a run to finish`,
              { active, limit: maxActive },
              ACTIVE_RETRY_AFTER_S,
            );
          }
        }
        return start();
      };
      // Each admission waits for the previous one of the same owner, whatever its outcome.
      const previous = tails.get(ownerId) ?? Promise.resolve();
      const result = previous.then(run, run);
      const tail = result.then(
        () => undefined,
        () => undefined,
      );
      tails.set(ownerId, tail);
      // Forget an owner once its last admission is done, so idle owners hold no memory.
      void tail.then(() => {
        if (tails.get(ownerId) === tail) tails.delete(ownerId);
      });
      return result;
    },
  };
}
