/** `patchbay serve`: REST, `/mcp`, health routes and `/metrics`, until a signal drains it. */
import http from "node:http";
import type { Config } from "../config.ts";
import { openPatchbay, type OpenOptions, type Patchbay } from "../engine/index.ts";
import { createHttpApp, createHttpServer } from "../http/app.ts";
import { createMcpMount } from "../http/mcp-mount.ts";
import { metricsListener } from "../http/metrics.ts";

/**
 * `local` isolates nothing: an agent can read Patchbay's environment, the data dir and other
 * runs. Serving keys of several owners that way is a trust decision the operator should see.
 */
async function warnIfLocalIsShared(pb: Patchbay, config: Config): Promise<void> {
  if (config.sandbox !== "local") return;
  const owners = new Set((await pb.keys.list()).filter((k) => !k.revokedAt).map((k) => k.ownerId));
  if (owners.size > 1) {
    pb.log.warn(
      "PATCHBAY_SANDBOX=local isolates nothing, and this server has keys of more than one owner: any owner's agent can read Patchbay's keys, the data dir and other owners' runs. Use PATCHBAY_SANDBOX=bwrap or e2b for several users.",
      { owners: owners.size },
    );
  }
}

/** Serve until a signal drains it. `parts` replaces engine parts (tests: the E2B stand-in). */
export async function serve(config: Config, parts: Pick<OpenOptions, "sandboxes"> = {}): Promise<void> {
  // A long-running server keeps one sandbox warm (~600 MB) to cut a run's start-up by about a
  // second; E2B sandboxes cost money while they wait, so none there unless asked for.
  const pb = await openPatchbay(config, { ...parts, defaultWarmPoolSize: config.sandbox === "e2b" ? 0 : 1 });
  if (!(await pb.keys.hasAnyKey())) {
    const { key } = await pb.keys.create({ name: "admin", scopes: ["read:builder", "write:builder", "admin"] });
    process.stderr.write(`\nCreated the first API key (admin). It is shown once; keep it:\n\n  ${key}\n\n`);
  }
  await warnIfLocalIsShared(pb, config);
  const mcp = createMcpMount({
    engine: pb.engine,
    log: pb.log,
    host: config.host,
    dataDir: config.dataDir,
    ...(pb.mcpSessions ? { sharedRecords: pb.mcpSessions } : {}),
    ...(pb.mcpEvents ? { sharedEvents: pb.mcpEvents } : {}),
  });
  let stopping = false;
  const app = createHttpApp({
    engine: pb.engine,
    keys: pb.keys,
    log: pb.log,
    config,
    mountMcp: mcp.mount,
    metrics: pb.metrics,
    // Load balancers stop sending traffic as soon as a drain starts.
    ...(pb.counters ? { rateCounters: pb.counters } : {}),
    // Load balancers stop sending traffic as soon as a drain starts, or the database is lost.
    isReady: async () => {
      if (stopping) return false;
      const store = await pb.storeReady();
      return store.ok || { reason: store.reason };
    },
  });
  const server = createHttpServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, resolve);
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : config.port;
  if (pb.engine.replicas) {
    const replicaUrl = config.replicaUrl ?? `http://${config.host}:${port}`;
    await pb.engine.replicas.advertise(replicaUrl);
    pb.log.info("replica registered", { replica: pb.engine.replicas.replicaId, url: replicaUrl });
  }
  const metricsServer = config.metricsAddr ? await listenMetrics(pb, config.metricsAddr) : undefined;
  pb.log.info("patchbay listening", {
    url: `http://${config.host}:${port}`,
    sandbox: config.sandbox,
    dataDir: config.dataDir,
  });
  let skipGrace: () => void = () => undefined;
  const graceSkipped = new Promise<void>((r) => (skipGrace = r));
  const stop = async (signal: string) => {
    if (stopping) {
      // A second signal skips what is left of the grace period.
      skipGrace();
      return;
    }
    stopping = true;
    pb.log.info("shutting down", { signal, graceMs: config.shutdownGraceMs });
    // Drain first, still serving: new runs get 503 shutting_down, streams follow the turns
    // in flight to their end. Whatever is still running at the deadline is stopped by close,
    // which keeps its patch and marks it failed (shutting_down).
    await Promise.race([pb.engine.drain(config.shutdownGraceMs), graceSkipped]);
    // Close may itself hang on a stuck process: never outlive the deadline by much.
    setTimeout(() => {
      pb.log.error("shutdown took too long; exiting");
      process.exit(1);
    }, 30_000).unref();
    server.close();
    server.closeAllConnections();
    metricsServer?.close();
    metricsServer?.closeAllConnections();
    await mcp.close();
    await pb.close();
    pb.log.info("stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

/** The unauthenticated `/metrics` listener PATCHBAY_METRICS_ADDR asks for. */
async function listenMetrics(pb: Patchbay, addr: { host: string; port: number }): Promise<http.Server> {
  const server = http.createServer(metricsListener(pb.metrics));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(addr.port, addr.host, resolve);
  });
  const bound = server.address();
  const port = typeof bound === "object" && bound ? bound.port : addr.port;
  pb.log.info("metrics listening", { url: `http://${addr.host}:${port}/metrics` });
  return server;
}
