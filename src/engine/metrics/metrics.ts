/**
 * Prometheus metrics of one Patchbay instance, on a registry of its own (never prom-client's
 * global one: tests open several instances in one process, and two engines must not count
 * into each other). The parts that do the work only call the small hooks below; what is read
 * at scrape time (runs by status, sessions, the warm pool) comes from sources set once.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Usage } from "../run/schema.ts";

/** What the model gateway tells the metrics about each upstream call. */
export interface GatewayObserver {
  /** An upstream answer (or failure to reach it: status 502) for a model. */
  upstream(model: string | undefined, status: number): void;
  /** Usage an upstream reported for a model. */
  usage(model: string | undefined, usage: Usage): void;
}

/** Values read when the metrics are scraped. Each defaults to nothing (absent or 0). */
export interface MetricSources {
  /** Runs currently queued, running or idle, by status (store-wide). */
  activeRuns?: () => Promise<Partial<Record<string, number>>>;
  /** Sessions this process holds open (a sandbox and agent per run). */
  liveSessions?: () => number;
  /**
   * Sessions hibernated (sandbox paused, run idle). The seam hibernation feeds; until it lands
   * it reads 0.
   */
  hibernatedSessions?: () => number;
  /** Warm pool entries ready to hand out. */
  warmPool?: () => number;
}

export interface PatchbayMetrics {
  readonly registry: Registry;
  /** The Prometheus text format, and its content type. */
  render(): Promise<string>;
  readonly contentType: string;
  readonly gateway: GatewayObserver;
  /** Set (or add to) the scrape-time sources. */
  setSources(sources: MetricSources): void;
  /** A run changed status (every change, from the bus). */
  statusChanged(status: string): void;
  /** A turn ran from `running` to where it ended, in seconds. */
  turnEnded(outcome: string, seconds: number): void;
  /** A turn's start-up: from `running` to the agent's first step, in seconds. */
  startedUp(seconds: number): void;
  /** A webhook delivery attempt's outcome: `delivered`, `failed` (for good) or `retry`. */
  webhookAttempt(outcome: "delivered" | "failed" | "retry"): void;
  /** Count an SSE subscriber while it is open; returns the function that stops counting it. */
  sseSubscriber(): () => void;
}

const TURN_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600];
const STARTUP_BUCKETS = [0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120];

export function createMetrics(): PatchbayMetrics {
  const registry = new Registry();
  const registers = [registry];
  let sources: MetricSources = {};

  const statusChanges = new Counter({
    name: "patchbay_run_status_changes_total",
    help: "Run status changes, by the status entered (queued, running, idle, completed, failed, cancelled)",
    labelNames: ["status"],
    registers,
  });
  new Gauge({
    name: "patchbay_runs",
    help: "Runs currently queued, running or idle, by status",
    labelNames: ["status"],
    registers,
    async collect() {
      const counts = (await sources.activeRuns?.()) ?? {};
      for (const status of ["queued", "running", "idle"] as const) this.set({ status }, counts[status] ?? 0);
    },
  });
  const turnSeconds = new Histogram({
    name: "patchbay_turn_duration_seconds",
    help: "How long turns ran, from running to their end, by outcome (idle, completed, failed, cancelled)",
    labelNames: ["outcome"],
    buckets: TURN_BUCKETS,
    registers,
  });
  const startupSeconds = new Histogram({
    name: "patchbay_turn_startup_seconds",
    help: "Start-up latency: from a turn's running status to the agent's first step (sandbox, agent, first model answer)",
    buckets: STARTUP_BUCKETS,
    registers,
  });
  const tokens = new Counter({
    name: "patchbay_model_tokens_total",
    help: "Model tokens the upstream reported, by model and direction (input, output)",
    labelNames: ["model", "direction"],
    registers,
  });
  const cost = new Counter({
    name: "patchbay_model_cost_usd_total",
    help: "Model cost the upstream reported, in US dollars, by model",
    labelNames: ["model"],
    registers,
  });
  const upstreamErrors = new Counter({
    name: "patchbay_gateway_upstream_errors_total",
    help: "Model calls the upstream answered with an error (or could not be reached: 502), by status",
    labelNames: ["status"],
    registers,
  });
  const sessionGauge = (name: string, help: string, read: () => number | undefined) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read() ?? 0);
      },
    });
  sessionGauge("patchbay_sessions_active", "Sessions this process holds open", () => sources.liveSessions?.());
  sessionGauge(
    "patchbay_sessions_hibernated",
    "Sessions hibernated (0 until hibernation reports them)",
    () => sources.hibernatedSessions?.() ?? 0,
  );
  sessionGauge("patchbay_warm_pool_size", "Warm pool entries ready to hand out", () => sources.warmPool?.());
  const sse = new Gauge({ name: "patchbay_sse_subscribers", help: "Open SSE event streams", registers });
  const webhooks = new Counter({
    name: "patchbay_webhook_deliveries_total",
    help: "Webhook delivery attempts by outcome: delivered, retry (will be tried again), failed (tries used up)",
    labelNames: ["outcome"],
    registers,
  });

  const modelLabel = (model: string | undefined) => model ?? "unknown";
  return {
    registry,
    contentType: registry.contentType,
    render: () => registry.metrics(),
    gateway: {
      upstream(_model, status) {
        if (status >= 400) upstreamErrors.inc({ status: String(status) });
      },
      usage(model, usage) {
        const m = modelLabel(model);
        if (usage.inputTokens) tokens.inc({ model: m, direction: "input" }, usage.inputTokens);
        if (usage.outputTokens) tokens.inc({ model: m, direction: "output" }, usage.outputTokens);
        if (usage.costUsd) cost.inc({ model: m }, usage.costUsd);
      },
    },
    setSources(more) {
      sources = { ...sources, ...more };
    },
    statusChanged: (status) => statusChanges.inc({ status }),
    turnEnded: (outcome, seconds) => turnSeconds.observe({ outcome }, seconds),
    startedUp: (seconds) => startupSeconds.observe(seconds),
    webhookAttempt: (outcome) => webhooks.inc({ outcome }),
    sseSubscriber() {
      sse.inc();
      let open = true;
      return () => {
        if (open) sse.dec();
        open = false;
      };
    },
  };
}
