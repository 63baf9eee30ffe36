/**
 * Bearer-key authentication and scope checks. Every route in the app carries one middleware
 * made by `requireScope`, tagged with its scope, so the route inventory can prove that no
 * route is reachable without a declared scope. A request without `Authorization` may instead
 * carry a dashboard session cookie: it acts with its key's scopes, and a write (any method but
 * GET/HEAD) only with the session's CSRF token in `X-CSRF-Token`.
 */
import type { Request, RequestHandler, Response } from "express";
import type { KeyService } from "../engine/index.ts";
import type { ApiKeyRecord, Scope } from "../engine/store/store.ts";
import { CSRF_HEADER, sessionCookie, type DashboardSessions } from "./dashboard/sessions.ts";
import { HttpError } from "./errors.ts";

/** A route's access rule: a key scope, or `public` for health, readiness and the API description. */
export type RouteScope = Scope | "public";

/** The caller a request was authenticated as (set on `res.locals.caller`). */
export interface Caller {
  keyId: string;
  ownerId: string;
  scopes: readonly Scope[];
  /** The key's repository allow-list; absent: any repository. */
  repos?: readonly string[];
}

/** A middleware tagged with the scope it enforces (read by the route inventory). */
export type ScopedMiddleware = RequestHandler & { readonly scope: RouteScope };

/**
 * Makes the middleware that admits a request only with a valid key holding `scope`.
 * Given to the MCP mount so `/mcp` is guarded the same way.
 */
export type AuthMiddlewareFactory = (scope: RouteScope) => ScopedMiddleware;

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

/** Create the factory over a key service (and the dashboard's sessions, when it is served). */
export function createAuth(keys: KeyService, sessions?: DashboardSessions): AuthMiddlewareFactory {
  return (scope) => {
    const mw: RequestHandler = (req, res, next) => {
      if (scope === "public") return next();
      authenticate(keys, req, sessions)
        .then((record) => {
          if (!record.scopes.includes(scope)) {
            throw new HttpError("forbidden", `this API key lacks the ${scope} scope`, { required: scope });
          }
          res.locals.caller = {
            keyId: record.id,
            ownerId: record.ownerId,
            scopes: record.scopes,
            ...(record.repos ? { repos: record.repos } : {}),
          } satisfies Caller;
          next();
        })
        .catch(next);
    };
    return Object.assign(mw, { scope });
  };
}

const SAFE_METHODS = new Set(["GET", "HEAD"]);

async function authenticate(keys: KeyService, req: Request, sessions?: DashboardSessions): Promise<ApiKeyRecord> {
  const header = req.get("authorization");
  const cookie = header || !sessions ? undefined : sessionCookie(req);
  if (cookie !== undefined && sessions) return sessionKey(keys, sessions, cookie, req);
  if (!header) throw new HttpError("unauthorized", "missing API key: send Authorization: Bearer <key>");
  const match = BEARER.exec(header);
  // One message for malformed, unknown and revoked keys: which one it was is nobody's business.
  const record = match ? await keys.verify(match[1]!) : undefined;
  if (!record) throw new HttpError("unauthorized", "invalid or revoked API key");
  return record;
}

/** The key behind a dashboard session cookie; writes must echo the session's CSRF token. */
async function sessionKey(
  keys: KeyService,
  sessions: DashboardSessions,
  cookie: string,
  req: Request,
): Promise<ApiKeyRecord> {
  const session = sessions.get(cookie);
  if (!session) throw new HttpError("unauthorized", "the dashboard session ended: sign in again");
  if (!SAFE_METHODS.has(req.method) && !sessions.csrfMatches(session, req.get(CSRF_HEADER))) {
    throw new HttpError("csrf_failed", "a write from a dashboard session must carry its X-CSRF-Token");
  }
  const record = await keys.verifyHash(session.keyHash);
  if (!record) {
    sessions.close(cookie);
    throw new HttpError("unauthorized", "the dashboard session's API key was revoked: sign in again");
  }
  return record;
}

/** The authenticated caller of a request that passed a non-public `requireScope`. */
export function callerOf(res: Response): Caller {
  const caller = res.locals.caller as Caller | undefined;
  if (!caller) throw new HttpError("unauthorized", "missing API key: send Authorization: Bearer <key>");
  return caller;
}
