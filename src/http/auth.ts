/**
 * Bearer-key authentication and scope checks. Every route in the app carries one middleware
 * made by `requireScope`, tagged with its scope, so the route inventory can prove that no
 * route is reachable without a declared scope.
 */
import type { Request, RequestHandler, Response } from "express";
import type { KeyService } from "../engine/index.ts";
import type { ApiKeyRecord, Scope } from "../engine/store/store.ts";
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

/** Create the factory over a key service. */
export function createAuth(keys: KeyService): AuthMiddlewareFactory {
  return (scope) => {
    const mw: RequestHandler = (req, res, next) => {
      if (scope === "public") return next();
      authenticate(keys, req)
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

async function authenticate(keys: KeyService, req: Request): Promise<ApiKeyRecord> {
  const header = req.get("authorization");
  if (!header) throw new HttpError("unauthorized", "missing API key: send Authorization: Bearer <key>");
  const match = BEARER.exec(header);
  // One message for malformed, unknown and revoked keys: which one it was is nobody's business.
  const record = match ? await keys.verify(match[1]!) : undefined;
  if (!record) throw new HttpError("unauthorized", "invalid or revoked API key");
  return record;
}

/** The authenticated caller of a request that passed a non-public `requireScope`. */
export function callerOf(res: Response): Caller {
  const caller = res.locals.caller as Caller | undefined;
  if (!caller) throw new HttpError("unauthorized", "missing API key: send Authorization: Bearer <key>");
  return caller;
}
