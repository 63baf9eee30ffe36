/**
 * The route table: every route of the REST API is one `RouteSpec`, declaring its method,
 * path, scope, the zod schemas it validates with and its answers. The app registers routes
 * from the table only, and the OpenAPI document is generated from the same table, so a
 * route cannot exist without a scope or be missing from the document.
 */
import type { Request, RequestHandler, Response } from "express";
import * as z from "zod";
import type { RouteScope } from "./auth.ts";
import { ErrorBody, HttpError } from "./errors.ts";

export type Method = "get" | "post" | "put" | "delete";

/** One answer of a route, for the OpenAPI document. */
export interface ResponseSpec {
  description: string;
  schema?: z.ZodType;
  /** Default `application/json` when a schema is given. */
  contentType?: string;
  /** Response headers worth documenting (name -> description). */
  headers?: Record<string, string>;
}

/** An error answer of a route: the shared error body. */
export const errorResponse = (description: string): ResponseSpec => ({ description, schema: ErrorBody });

/** The answers every authenticated route may give before its handler runs. */
export function authErrors(missingScope: string): Record<401 | 403 | 429, ResponseSpec> {
  return {
    401: errorResponse("Missing, invalid or revoked API key"),
    403: errorResponse(missingScope),
    429: errorResponse("Rate limit reached"),
  };
}

/**
 * Largest body of the routes that take `images` (a run, a message): five images of 10 MB are
 * about 70 MB of base64, plus a prompt and a 64 KB output schema. Every other route: 1 MB.
 */
export const IMAGE_BODY_LIMIT = "72mb";

export interface RouteSpec {
  method: Method;
  /** Express path, with `:name` parameters. */
  path: string;
  scope: RouteScope;
  summary: string;
  description?: string;
  tag: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** Request headers the route reads (name -> schema). */
  headers?: Record<string, z.ZodType>;
  body?: z.ZodType;
  /** Whether a body is required (documented; the engine's schema decides what is valid). */
  bodyRequired?: boolean;
  /** Largest body the route accepts (express `limit`); default BODY_LIMIT (1 MB). */
  bodyLimit?: string;
  responses: Record<number, ResponseSpec>;
  handler: (req: Request, res: Response) => Promise<void> | void;
}

/** The answers of a route that reads a JSON body, before its handler runs. */
export const JSON_BODY_ERRORS: Record<400 | 413 | 415, ResponseSpec> = {
  400: errorResponse("Invalid body"),
  413: errorResponse("Body too large"),
  415: errorResponse("Body is not application/json"),
};

/**
 * Routes of one tag (one section of the document), with a scope unless each names its own;
 * each documents the answers of authentication ({@link authErrors}, `denied` for the 403).
 */
export function routeGroup(
  group: { tag: string; scope?: RouteScope; denied: string },
  routes: (Omit<RouteSpec, "tag" | "scope"> & { scope?: RouteScope })[],
): RouteSpec[] {
  return routes.map((r) => {
    const scope = r.scope ?? group.scope;
    if (!scope) throw new Error(`route ${r.method} ${r.path} has no scope`);
    return { ...r, tag: group.tag, scope, responses: { ...authErrors(group.denied), ...r.responses } };
  });
}

/** `1`/`true` or `0`/`false`, as query flags are written. */
export const QueryFlag = z
  .enum(["1", "0", "true", "false"])
  .transform((v) => v === "1" || v === "true")
  .meta({ description: "1/true or 0/false" });

/** A non-negative integer written in a query string or header. */
export const DecimalId = z
  .string()
  .regex(/^\d{1,15}$/, "must be a non-negative integer")
  .transform(Number)
  .pipe(z.number().int().min(0));

/** Express path `/a/:id` as OpenAPI `/a/{id}`. */
export function openApiPath(path: string): string {
  return path.replace(/:([A-Za-z_]\w*)/g, "{$1}");
}

/** A matcher for a route path, used to answer 405 for a known path with a wrong method. */
export function pathMatcher(path: string): RegExp {
  const src = path
    .split("/")
    .map((seg) => (seg.startsWith(":") ? "[^/]+" : seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${src}/?$`);
}

/** Refuse a body that is not JSON before anything reads it. */
export const requireJsonBody: RequestHandler = (req, _res, next) => {
  const hasBody = Number(req.get("content-length") ?? 0) > 0 || req.get("transfer-encoding") !== undefined;
  if (hasBody && !req.is("application/json")) {
    next(new HttpError("unsupported_media_type", "send the body as application/json"));
    return;
  }
  next();
};
