/**
 * `npm run bench [-- name...]`: run the benchmark modules (all, or those named), print a
 * table for each, and write bench/results/<name>.json and .md.
 */
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { apiLoad } from "./api-load.ts";
import { concurrency } from "./concurrency.ts";
import { followUp } from "./follow-up.ts";
import { gatewayAbuse } from "./gateway-abuse.ts";
import { hibernate } from "./hibernate.ts";
import { sseFanout } from "./sse-fanout.ts";
import { sharedAgent } from "./shared-agent.ts";
import { eventAppend } from "./event-append.ts";
import { environment } from "./environment.ts";
import { storeGrowth } from "./store-growth.ts";
import { machineSpeed, toTable, writeResult, type BenchModule } from "./harness.ts";
import { replicas } from "./replicas.ts";
import { replicasHttp } from "./replicas-http.ts";
import { startup } from "./startup.ts";
import { streamMemory } from "./stream-memory.ts";

/** Add new modules here. */
const MODULES: BenchModule[] = [
  eventAppend,
  storeGrowth,
  apiLoad,
  followUp,
  sseFanout,
  concurrency,
  startup,
  sharedAgent,
  gatewayAbuse,
  streamMemory,
  environment,
  hibernate,
  replicas,
  replicasHttp,
];

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const unknown = wanted.filter((w) => !MODULES.some((m) => m.name === w));
  if (unknown.length) {
    process.stderr.write(
      `unknown benchmark(s): ${unknown.join(", ")}; known: ${MODULES.map((m) => m.name).join(", ")}\n`,
    );
    process.exit(2);
  }
  const resultsDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "results");
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    cpu: os.cpus()[0]?.model ?? "unknown",
  };
  const failed: string[] = [];
  for (const m of MODULES.filter((m) => !wanted.length || wanted.includes(m.name))) {
    // Measured before each module: the load other processes put on the machine changes.
    const speed = machineSpeed();
    const started = Date.now();
    try {
      const result = await m.run();
      const took = ((Date.now() - started) / 1000).toFixed(1);
      process.stdout.write(`${toTable(result)}\nmachine: ${speed}\n(${took} s)\n\n`);
      writeResult(resultsDir, result, { ...meta, machine: speed });
    } catch (e) {
      // The other modules still run; the exit code says one failed.
      process.stderr.write(`${m.name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n\n`);
      failed.push(m.name);
    }
  }
  if (failed.length) {
    process.stderr.write(`failed: ${failed.join(", ")}\n`);
    process.exitCode = 1;
  }
}

await main();
