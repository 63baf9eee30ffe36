/**
 * The HTTP front: an express app over the engine facade and the key service.
 * `createHttpApp` never listens; only the CLI binds ports.
 *
 * Every route comes from the route table (`runRoutes`, `keyRoutes`, `secretRoutes`, `webhookRoutes`, `metaRoutes`) and is
 * registered as: scope check -> per-key rate limit -> JSON-only body -> body parser (1 MB)
 * -> query validation -> handler. Unknown paths answer 404, known paths with another
 * method 405 (with `Allow`), and every error is JSON via the one error middleware. The
 * dashboard (`dashboard/router.ts`) is one router beside the table: a page, its assets and
 * the sign-in exchange, not API routes.
 */
import http from "node:http";
import express from "express";
import * as z from "zod";
import type { Config } from "../config.ts";
import type { Engine, KeyService, Logger, WindowCounters } from "../engine/index.ts";
import { parseInput } from "../engine/parse.ts";
import { createAuth, type AuthMiddlewareFactory, type ScopedMiddleware } from "./auth.ts";
import { dashboardRouter } from "./dashboard/router.ts";
import { createDashboardSessions, type DashboardSessionsOptions } from "./dashboard/sessions.ts";
import { environmentRoutes } from "./environments.ts";
import { groupRoutes } from "./groups.ts";
import { ErrorBody, errorHandler, sendError } from "./errors.ts";
import { keyRoutes } from "./keys.ts";
import { ownerRoutes } from "./owners.ts";
import { secretRoutes } from "./secrets.ts";
import { webhookRoutes } from "./webhooks.ts";
import { mountHandoff } from "./handoff.ts";
import { createRateLimit } from "./limits.ts";
import { buildOpenApi, renderDocsPage } from "./openapi.ts";
import { pathMatcher, requireJsonBody, type RouteSpec } from "./routes.ts";
export { IMAGE_BODY_LIMIT } from "./routes.ts";
import { metricsRoutes, type HttpMetrics } from "./metrics.ts";
import { runRoutes } from "./runs.ts";
import type { SseOptions } from "./sse.ts";

export type { AuthMiddlewareFactory, ScopedMiddleware } from "./auth.ts";
export type { RouteSpec } from "./routes.ts";

/** Largest JSON body accepted: a 120k-character prompt in 4-byte UTF-8 is under half of it. */
export const BODY_LIMIT = "1mb";

/**
 * The HTTP server for the app. Idle keep-alive connections are kept 65 s (Node's default is
 * 5 s): a client that reuses a connection just as the server drops it gets ECONNRESET on a
 * POST it cannot safely retry, and under load a client's idea of "recently used" lags. 65 s
 * is what load balancers in front expect (theirs is usually 60 s, and must be the shorter).
 */
export function createHttpServer(app: http.RequestListener): http.Server {
  const server = http.createServer(app);
  server.keepAliveTimeout = 65_000;
  // Must exceed keepAliveTimeout, or a request arriving late on a kept connection is cut.
  server.headersTimeout = 66_000;
  return server;
}

export interface HttpAppDeps {
  engine: Engine;
  keys: KeyService;
  log: Logger;
  config: Config;
  /**
   * Mount more routes on the app before the 404/405 fallback and the error middleware, e.g.
   * MCP over Streamable HTTP at `/mcp`. Guard each route with `auth(scope)`, which answers
   * 401/403 as JSON and sets `res.locals.caller` ({keyId, ownerId, scopes}); that middleware
   * also makes the route pass the route-inventory test. No body parser runs for these routes.
   */
  mountMcp?: (app: express.Express, auth: AuthMiddlewareFactory) => void;
  /** SSE heartbeat and retry hint (tests shorten the heartbeat). */
  sse?: SseOptions;
  /** Request-rate counters shared by replicas (Patchbay.counters); default: in memory. */
  rateCounters?: WindowCounters;
  /** Readiness for `/readyz`; default ready. */
  isReady?: () => Readiness | Promise<Readiness>;
  /** Version shown in the OpenAPI document. Default 0.1.0. */
  version?: string;
  /** Dashboard session lifetimes (tests shorten them). */
  dashboardSessions?: DashboardSessionsOptions;
  /** The instance's metrics: served at `/metrics` (admin), and counting SSE subscribers. */
  metrics?: HttpMetrics;
}

/** Ready, draining (false), or unable to work, and why (the database is gone). */
export type Readiness = boolean | { reason: string };

const EmptyQuery = z.object({}).strict();
/** Every route refuses query parameters it does not declare. */
const UNKNOWN_QUERY = { description: "Unknown query parameter", schema: ErrorBody };

/** The public routes: health, readiness, the OpenAPI document and its HTML rendering. */
export function metaRoutes(
  getDoc: () => Record<string, unknown>,
  isReady: () => Readiness | Promise<Readiness>,
): RouteSpec[] {
  const ok = z.object({ ok: z.literal(true) });
  return [
    {
      method: "get",
      path: "/healthz",
      scope: "public",
      tag: "meta",
      summary: "Liveness",
      description: "Answers 200 while the process serves HTTP.",
      responses: { 200: { description: "Alive", schema: ok }, 400: UNKNOWN_QUERY },
      handler(_req, res) {
        res.json({ ok: true });
      },
    },
    {
      method: "get",
      path: "/readyz",
      scope: "public",
      tag: "meta",
      summary: "Readiness",
      description:
        "Answers 200 when the engine accepts runs, 503 while starting or shutting down, or when the database (PATCHBAY_DATABASE_URL) does not answer (`storage_failed`, with the reason).",
      responses: {
        200: { description: "Ready", schema: z.object({ ready: z.literal(true) }) },
        400: UNKNOWN_QUERY,
        503: { description: "Not ready", schema: ErrorBody },
      },
      async handler(_req, res) {
        const ready = await isReady();
        if (ready === true) res.json({ ready: true });
        else if (ready === false) sendError(res, "shutting_down", "not ready");
        else sendError(res, "storage_failed", ready.reason);
      },
    },
    {
      method: "get",
      path: "/api/v1/openapi.json",
      scope: "public",
      tag: "meta",
      summary: "This API as OpenAPI 3.1",
      responses: {
        200: { description: "The OpenAPI document", schema: z.record(z.string(), z.unknown()) },
        400: UNKNOWN_QUERY,
      },
      handler(_req, res) {
        res.json(getDoc());
      },
    },
    {
      method: "get",
      path: "/api/v1/docs",
      scope: "public",
      tag: "meta",
      summary: "This API as an HTML page",
      description: "A self-contained page rendering the OpenAPI document (no scripts, works offline).",
      responses: { 200: { description: "HTML", contentType: "text/html", schema: z.string() }, 400: UNKNOWN_QUERY },
      handler(_req, res) {
        res.type("html").send(renderDocsPage(getDoc()));
      },
    },
  ];
}

/** Every route of the app, the OpenAPI document's among them (built from this same list). */
export function apiRoutes(
  deps: Pick<HttpAppDeps, "engine" | "keys" | "sse" | "isReady" | "version" | "metrics">,
): RouteSpec[] {
  const { engine, keys } = deps;
  let doc: Record<string, unknown> | undefined;
  const routes: RouteSpec[] = [
    ...runRoutes({
      engine,
      sse: { ...deps.sse, ...(deps.metrics ? { subscriber: deps.metrics.sseSubscriber } : {}) },
    }),
    ...groupRoutes({ engine }),
    ...keyRoutes({ keys }),
    ...secretRoutes({ engine }),
    ...webhookRoutes({ engine }),
    ...environmentRoutes({ engine }),
    ...ownerRoutes({ engine }),
    ...metricsRoutes(deps.metrics),
    ...metaRoutes(() => (doc ??= openApiDocument(routes, deps.version)), deps.isReady ?? (() => true)),
  ];
  return routes;
}

/** The OpenAPI document of a route list (the served one, and the typed client's source: client/api.ts). */
export function openApiDocument(routes: readonly RouteSpec[], version = "0.1.0"): Record<string, unknown> {
  return buildOpenApi(routes, { version });
}

/** Build the express app. */
export function createHttpApp(deps: HttpAppDeps): express.Express {
  const { keys, log, config } = deps;
  const app = express();
  app.disable("x-powered-by");
  // `simple` (node:querystring): flat string or string[] values, no nested objects to smuggle.
  app.set("query parser", "simple");

  app.use((req, res, next) => {
    const t0 = Date.now();
    // Path only: query strings and bodies are never logged.
    res.on("finish", () =>
      log.debug("http", { method: req.method, path: req.path, status: res.statusCode, ms: Date.now() - t0 }),
    );
    next();
  });

  // The dashboard (at `/`) signs in with a key for a session cookie, which the API routes accept too.
  const sessions = createDashboardSessions(deps.dashboardSessions);
  app.use(dashboardRouter({ keys, sessions }));
  const auth = createAuth(keys, sessions);
  const limiter = createRateLimit({
    limit: config.rateLimitPerMin,
    ...(deps.rateCounters ? { counters: deps.rateCounters } : {}),
  });
  const parsers = new Map<string, express.RequestHandler>();
  const jsonParser = (limit = BODY_LIMIT) => {
    let parser = parsers.get(limit);
    if (!parser) parsers.set(limit, (parser = express.json({ limit, strict: true, type: "application/json" })));
    return parser;
  };

  const routes = apiRoutes(deps);

  for (const spec of routes) {
    const validateQuery: express.RequestHandler = (req, _res, next) => {
      parseInput(spec.query ?? EmptyQuery, req.query, "query");
      next();
    };
    const json = jsonParser(spec.bodyLimit);
    app[spec.method](spec.path, auth(spec.scope), limiter, requireJsonBody, json, validateQuery, async (req, res) => {
      await spec.handler(req, res);
    });
  }

  // Replicas hand each other requests about the runs whose sessions they hold.
  mountHandoff(app, deps.engine, log);

  // /mcp is held to the same per-key request rate as every other authenticated route.
  deps.mountMcp?.(app, (scope) => {
    const authenticate = auth(scope);
    const limited: express.RequestHandler = (req, res, next) =>
      authenticate(req, res, (err?: unknown) => (err ? next(err) : limiter(req, res, next)));
    return Object.assign(limited, { scope });
  });

  const known = routes.map((r) => ({ re: pathMatcher(r.path), method: r.method.toUpperCase() }));
  app.use((req, res) => {
    const allowed = [...new Set(known.filter((k) => k.re.test(req.path)).map((k) => k.method))];
    if (allowed.length) {
      if (allowed.includes("GET")) allowed.push("HEAD");
      res.setHeader("Allow", allowed.join(", "));
      sendError(
        res,
        "method_not_allowed",
        `${req.method} is not allowed on ${req.path}; allowed: ${allowed.join(", ")}`,
      );
      return;
    }
    sendError(res, "not_found", `no route ${req.method} ${req.path}`);
  });
  app.use(errorHandler(log));
  return app;
}

/** The scope each route of an app declares, read from its router (route inventory, tests). */
export function declaredRoutes(app: express.Express): { method: string; path: string; scope: string | undefined }[] {
  const stack = (
    app as unknown as {
      router: { stack: { route?: { path: string; methods: Record<string, boolean>; stack: { handle: unknown }[] } }[] };
    }
  ).router.stack;
  const out: { method: string; path: string; scope: string | undefined }[] = [];
  for (const layer of stack) {
    if (!layer.route) continue;
    const scoped = layer.route.stack
      .map((l) => l.handle as Partial<ScopedMiddleware>)
      .find((h) => typeof h.scope === "string");
    for (const [method, on] of Object.entries(layer.route.methods)) {
      if (on && method !== "_all") out.push({ method, path: layer.route.path, scope: scoped?.scope });
    }
  }
  return out;
}
