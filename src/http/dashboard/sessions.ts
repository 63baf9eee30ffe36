/**
 * Dashboard sessions: an API key exchanged at sign-in for a random session id, sent back as an
 * HttpOnly, SameSite=Strict cookie. Held in this process only (a restart signs everyone out),
 * keyed by the id's sha256, so what sits in memory cannot be replayed as a cookie. A session
 * keeps its key's hash (never the key) and a CSRF token that every write must echo.
 */
import crypto from "node:crypto";
import type { Request } from "express";

/** The cookie's name. `__Host-` (Secure, Path=/, no Domain) when the request came over HTTPS. */
export const SESSION_COOKIE = "patchbay_session";
export const SECURE_SESSION_COOKIE = `__Host-${SESSION_COOKIE}`;
/** The header a cookie-authenticated write carries its CSRF token in. */
export const CSRF_HEADER = "x-csrf-token";

export interface DashboardSession {
  /** sha256 (hex) of the API key signed in with: re-verified on every request, so revoking the key ends it. */
  readonly keyHash: string;
  readonly csrfToken: string;
  readonly createdAt: number;
  lastSeenAt: number;
}

export interface DashboardSessionsOptions {
  /** A session unused this long ends. Default 8 hours. */
  idleMs?: number;
  /** A session ends this long after sign-in, used or not. Default 24 hours. */
  maxAgeMs?: number;
  /** Most sessions held at once; the least recently used goes first. Default 10 000. */
  max?: number;
  /** Default: `Date.now`. */
  now?: () => number;
}

export interface DashboardSessions {
  /** Start a session for a verified key; the id goes in the cookie, the token to the page. */
  open(keyHash: string): { id: string; csrfToken: string; maxAgeMs: number };
  /** The live session of a cookie value (its last use moves forward), or undefined. */
  get(id: string): DashboardSession | undefined;
  /** End a session; true if it was live. */
  close(id: string): boolean;
  /** Whether `token` is the session's CSRF token (constant time). */
  csrfMatches(session: DashboardSession, token: string | undefined): boolean;
  readonly size: number;
}

const sha256 = (s: string) => crypto.createHash("sha256").update(s).digest("hex");
const ID_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export function createDashboardSessions(opts: DashboardSessionsOptions = {}): DashboardSessions {
  const idleMs = opts.idleMs ?? 8 * 3600_000;
  const maxAgeMs = opts.maxAgeMs ?? 24 * 3600_000;
  const max = opts.max ?? 10_000;
  const now = opts.now ?? Date.now;
  // Insertion order is use order: `get` re-inserts, so the first entry is the least recently used.
  const byHash = new Map<string, DashboardSession>();

  const expired = (s: DashboardSession, t: number) => t - s.lastSeenAt >= idleMs || t - s.createdAt >= maxAgeMs;

  return {
    open(keyHash) {
      const t = now();
      for (const [h, s] of byHash) if (expired(s, t)) byHash.delete(h);
      while (byHash.size >= max) byHash.delete(byHash.keys().next().value as string);
      const id = crypto.randomBytes(32).toString("base64url");
      const csrfToken = crypto.randomBytes(32).toString("base64url");
      byHash.set(sha256(id), { keyHash, csrfToken, createdAt: t, lastSeenAt: t });
      return { id, csrfToken, maxAgeMs };
    },
    get(id) {
      if (!ID_PATTERN.test(id)) return undefined;
      const h = sha256(id);
      const s = byHash.get(h);
      if (!s) return undefined;
      const t = now();
      byHash.delete(h);
      if (expired(s, t)) return undefined;
      s.lastSeenAt = t;
      byHash.set(h, s);
      return s;
    },
    close(id) {
      return ID_PATTERN.test(id) && byHash.delete(sha256(id));
    },
    csrfMatches(session, token) {
      if (typeof token !== "string") return false;
      const a = Buffer.from(sha256(token));
      const b = Buffer.from(sha256(session.csrfToken));
      return crypto.timingSafeEqual(a, b);
    },
    get size() {
      return byHash.size;
    },
  };
}

/** The session cookie's value on a request, if it sent one. */
export function sessionCookie(req: Request): string | undefined {
  const header = req.get("cookie");
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const i = part.indexOf("=");
    if (i < 0) continue;
    const name = part.slice(0, i).trim();
    if (name === SESSION_COOKIE || name === SECURE_SESSION_COOKIE) return part.slice(i + 1).trim();
  }
  return undefined;
}
