/**
 * `/metrics` in the Prometheus text format: on the API behind an admin key, and, when
 * PATCHBAY_METRICS_ADDR is set, on a listener of its own without a key (for a scraper on a
 * private network; bind it where only the scraper reaches).
 */
import http from "node:http";
import * as z from "zod";
import type { PatchbayMetrics } from "../engine/index.ts";
import { routeGroup, type RouteSpec } from "./routes.ts";

/** What the HTTP front needs of the metrics: the text, and the SSE subscriber count. */
export type HttpMetrics = Pick<PatchbayMetrics, "render" | "contentType" | "sseSubscriber">;

/** `GET /metrics` (admin), when the app has metrics. */
export function metricsRoutes(metrics: HttpMetrics | undefined): RouteSpec[] {
  if (!metrics) return [];
  return routeGroup({ tag: "meta", scope: "admin", denied: "The key lacks the admin scope" }, [
    {
      method: "get",
      path: "/metrics",
      summary: "Prometheus metrics",
      description:
        "Runs by status, turn and start-up durations, model tokens and cost by model, gateway upstream errors, sessions, the warm pool, SSE subscribers, webhook deliveries.",
      responses: { 200: { description: "The Prometheus text format", contentType: "text/plain", schema: z.string() } },
      async handler(_req, res) {
        res.type(metrics.contentType).send(await metrics.render());
      },
    },
  ]);
}

/** A request listener serving only `GET /metrics`, unauthenticated (PATCHBAY_METRICS_ADDR). */
export function metricsListener(metrics: Pick<PatchbayMetrics, "render" | "contentType">): http.RequestListener {
  return (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" || path !== "/metrics") {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "not_found", message: "only GET /metrics is served here" } }));
      return;
    }
    metrics.render().then(
      (text) => {
        res.writeHead(200, { "content-type": metrics.contentType });
        res.end(text);
      },
      (e: unknown) => {
        res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { code: "internal", message: String((e as Error).message) } }));
      },
    );
  };
}
