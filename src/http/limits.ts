/**
 * The per-key request rate of the HTTP API, REST and /mcp alike (express-rate-limit, keyed by
 * API key id): 429 with `Retry-After`. The active-run cap is the engine's (run/admission.ts).
 */
import type { RequestHandler } from "express";
import { rateLimit, type Store } from "express-rate-limit";
import type { WindowCounters } from "../engine/index.ts";
import { callerOf } from "./auth.ts";
import { sendError } from "./errors.ts";

export interface RateLimitOptions {
  /** Requests per window per key. */
  limit: number;
  /** Default 60 000 (the limit is configured per minute). */
  windowMs?: number;
  /** Counters shared by replicas (Postgres); default: this process's memory. */
  counters?: WindowCounters;
}

/** express-rate-limit's Store over counters every replica shares. */
function sharedStore(counters: WindowCounters, windowMs: number): Store {
  return {
    localKeys: false,
    prefix: "http:",
    async increment(key) {
      const c = await counters.increment(`http:${key}`, windowMs);
      return { totalHits: c.hits, resetTime: c.resetAt };
    },
    async get(key) {
      const c = await counters.get(`http:${key}`);
      return c && { totalHits: c.hits, resetTime: c.resetAt };
    },
    decrement: (key) => counters.decrement(`http:${key}`),
    resetKey: (key) => counters.reset(`http:${key}`),
  };
}

/** Counts requests per API key. Must run after authentication; public routes are not counted. */
export function createRateLimit({ limit, windowMs = 60_000, counters }: RateLimitOptions): RequestHandler {
  return rateLimit({
    windowMs,
    ...(counters ? { store: sharedStore(counters, windowMs) } : {}),
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
