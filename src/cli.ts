/**
 * The `patchbay` command line: `serve`, `mcp`, `keys create|list|revoke`, `owners limits`, `run`.
 * The only place that reads argv, binds ports or stdio, and calls process.exit.
 */
import { parseArgs } from "node:util";
import { ConfigError, loadConfig, type Config } from "./config.ts";
import { createLogger, describeEvent, isEngineError, openPatchbay, type Patchbay } from "./engine/index.ts";
import { createHttpApp, createHttpServer } from "./http/app.ts";
import { createMcpMount } from "./http/mcp-mount.ts";

const USAGE = `Usage: patchbay <command> [options]

Commands:
  serve                                  REST API, /mcp and health routes on PATCHBAY_HOST:PORT
  mcp                                    MCP over stdio (engine in-process)
  keys create --name NAME [--scopes read:builder,write:builder] [--owner NAME] [--repos owner/*,org/name]
                                         create an API key; prints the key alone on stdout
                                         (--owner: the user it acts as, default PATCHBAY_LOCAL_OWNER;
                                         keys of one owner see the same runs)
                                         (--repos: the only repositories it may start runs on)
  keys list                              list keys (never the keys themselves)
  keys revoke ID                         revoke a key
  owners limits OWNER [--daily-cost-usd USD|none]
                                         show an owner's daily cost cap and today's spend;
                                         with --daily-cost-usd, set it (none: remove it)
  run --repo owner/name --prompt TEXT [--model ID] [--ref REF] [--plan] [--keep]
                                         run one turn in-process; prints summary and patch

Configuration comes from environment variables (see README).`;

class UsageError extends Error {}

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve":
        return await serve(loadConfig());
      case "mcp": {
        const { runStdio } = await import("./mcp/stdio.ts");
        return await runStdio(loadConfig());
      }
      case "keys":
        return await keys(loadConfig(), rest);
      case "owners":
        return await owners(loadConfig(), rest);
      case "run":
        return await runOnce(loadConfig(), rest);
      case undefined:
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(USAGE + "\n");
        return;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof ConfigError) fail(`patchbay: ${e.message}`, 2);
    if (e instanceof UsageError) fail(`patchbay: ${e.message}\n\n${USAGE}`, 2);
    if (isEngineError(e)) fail(`patchbay: ${e.message} (${e.code})`, 1);
    if (e instanceof Error && "code" in e && typeof e.code === "string" && e.code.startsWith("ERR_PARSE_ARGS"))
      fail(`patchbay: ${e.message}`, 2);
    throw e;
  }
}

function fail(message: string, code: number): never {
  process.stderr.write(message + "\n");
  process.exit(code);
}

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

async function serve(config: Config): Promise<void> {
  // A long-running server keeps one sandbox warm (~600 MB) to cut a run's start-up by about a
  // second; E2B sandboxes cost money while they wait, so none there unless asked for.
  const pb = await openPatchbay(config, { defaultWarmPoolSize: config.sandbox === "e2b" ? 0 : 1 });
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
  });
  let stopping = false;
  const app = createHttpApp({
    engine: pb.engine,
    keys: pb.keys,
    log: pb.log,
    config,
    mountMcp: mcp.mount,
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
    await mcp.close();
    await pb.close();
    pb.log.info("stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

async function keys(config: Config, args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const pb = await openPatchbay(config, { log: createLogger({ level: config.logLevel ?? "warn" }) });
  try {
    if (sub === "create") {
      const { values } = parseArgs({
        args: rest,
        options: {
          name: { type: "string" },
          scopes: { type: "string" },
          owner: { type: "string" },
          repos: { type: "string" },
        },
      });
      if (!values.name) throw new UsageError("keys create needs --name");
      const scopes = (values.scopes ?? "read:builder,write:builder").split(",").map((s) => s.trim());
      for (const s of scopes)
        if (!["read:builder", "write:builder", "admin"].includes(s)) throw new UsageError(`unknown scope "${s}"`);
      const { key } = await pb.keys.create({
        name: values.name,
        scopes: scopes as ("read:builder" | "write:builder" | "admin")[],
        ...(values.owner ? { ownerId: values.owner } : {}),
        ...(values.repos !== undefined
          ? {
              repos: values.repos
                .split(",")
                .map((r) => r.trim())
                .filter(Boolean),
            }
          : {}),
      });
      process.stdout.write(key + "\n");
    } else if (sub === "list") {
      for (const k of await pb.keys.list()) {
        process.stdout.write(
          `${k.id}\t${k.name}\t${k.prefix}…\t${k.scopes.join(",")}\towner=${k.ownerId}\trepos=${k.repos?.join(",") ?? "*"}\t${k.revokedAt ? `revoked ${k.revokedAt}` : "active"}\n`,
        );
      }
    } else if (sub === "revoke") {
      const id = rest[0];
      if (!id) throw new UsageError("keys revoke needs an ID");
      await pb.keys.revoke(id);
      process.stderr.write(`revoked ${id}\n`);
    } else {
      throw new UsageError(`unknown keys command "${sub ?? ""}"`);
    }
  } finally {
    await pb.close();
  }
}

async function owners(config: Config, args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub !== "limits") throw new UsageError(`unknown owners command "${sub ?? ""}"`);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { "daily-cost-usd": { type: "string" } },
  });
  const [owner] = positionals;
  if (!owner || positionals.length > 1) throw new UsageError("owners limits needs one OWNER");
  const cap = values["daily-cost-usd"];
  const dailyCostUsd = cap === undefined ? undefined : cap === "none" ? null : Number(cap);
  if (typeof dailyCostUsd === "number" && !Number.isFinite(dailyCostUsd))
    throw new UsageError(`--daily-cost-usd must be a number of US dollars or none, not "${cap}"`);
  const pb = await openPatchbay(config, { log: createLogger({ level: config.logLevel ?? "warn" }) });
  try {
    const limits =
      dailyCostUsd === undefined
        ? await pb.engine.ownerLimits(owner)
        : await pb.engine.setOwnerLimits(owner, { dailyCostUsd });
    process.stdout.write(
      `owner=${limits.ownerId}\tdailyCostUsd=${limits.dailyCostUsd ?? "none"}\tspent ${limits.day}=${limits.spentTodayUsd}\n`,
    );
  } finally {
    await pb.close();
  }
}

async function runOnce(config: Config, args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      repo: { type: "string" },
      prompt: { type: "string" },
      model: { type: "string" },
      ref: { type: "string" },
      plan: { type: "boolean" },
    },
  });
  if (!values.repo || !values.prompt) throw new UsageError("run needs --repo owner/name and --prompt TEXT");
  // Progress lines go to stderr; JSON log lines would drown them unless asked for.
  const pb = await openPatchbay(config, { log: createLogger({ level: config.logLevel ?? "warn" }) });
  const owner = config.localOwner;
  try {
    const run = await pb.engine.startRun(owner, {
      repository: values.repo,
      prompt: values.prompt,
      ...(values.model ? { modelId: values.model } : {}),
      ...(values.ref ? { baseRef: values.ref } : {}),
      ...(values.plan ? { taskKind: "plan" } : {}),
    });
    process.stderr.write(`run ${run.id} on ${run.repository.fullName} with ${run.modelId}\n`);
    // The whole turn, from its first event: what was logged before this line is replayed.
    for await (const ev of await pb.engine.follow(owner, run.id, { until: "turn" }))
      process.stderr.write(`  · ${describeEvent(ev)}\n`);
    const done = await pb.engine.getRun(owner, run.id, { fullSummary: true });
    const { patch } = await pb.engine.getPatch(owner, run.id);
    if (done.status === "failed") {
      process.stderr.write(`run failed: ${done.error?.code}: ${done.error?.message}\n`);
      process.exitCode = 1;
    }
    process.stdout.write(`# Summary\n\n${done.summary ?? "(none)"}\n\n`);
    if (done.diffStats) {
      process.stdout.write(
        `# Changes: ${done.diffStats.files} files, +${done.diffStats.additions} -${done.diffStats.deletions}\n\n`,
      );
    }
    process.stdout.write(patch ? patch : "(no changes)\n");
    if (done.status === "idle") await pb.engine.endSession(owner, run.id);
  } finally {
    await pb.close();
  }
}
