/**
 * Network policy under bwrap: with `model-only`, an agent `bash` call that connects to a
 * server on the host's 127.0.0.1 (and to Patchbay's own port) fails, while the turn itself
 * completes through the model gateway. The same call in an `open` run connects, so the probe
 * is a real one.
 */
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bwrapWorks } from "../../helpers.ts";
import { LOADED } from "../../support/harness.ts";
import { API, serveHarness, type HttpHarness } from "../../support/http.ts";

/** A node one-liner the agent runs: tries each port on 127.0.0.1 and prints what happened. */
function probe(ports: number[]): string {
  const js = `for (const p of [${ports.join(",")}]) { const s = require("net").connect(p, "127.0.0.1"); s.setTimeout(5000); s.on("connect", () => { console.log("port " + p + ": connected"); s.destroy(); }); s.on("timeout", () => { console.log("port " + p + ": timeout"); s.destroy(); }); s.on("error", (e) => console.log("port " + p + ": " + e.code)); }`;
  return `node -e '${js}'`;
}

const available = bwrapWorks();
let h: HttpHarness;
let target: net.Server;
let targetPort: number;
let connections = 0;

beforeAll(async () => {
  if (!available) return;
  target = net.createServer((s) => {
    connections++;
    // The probe hangs up at once: a reset here is expected, not a failure.
    s.on("error", () => undefined);
    s.end("hello\n");
  });
  await new Promise<void>((r) => target.listen(0, "127.0.0.1", r));
  targetPort = (target.address() as net.AddressInfo).port;
  h = await serveHarness({ env: { PATCHBAY_SANDBOX: "bwrap" } });
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
  await new Promise((r) => target?.close(r));
}, LOADED.hookMs);

async function runProbe(model: string, network: "open" | "model-only") {
  const patchbayPort = Number(new URL(h.base).port);
  h.model.script(model, [
    [
      { toolCalls: [{ name: "bash", args: { command: probe([targetPort, patchbayPort]), description: "probe" } }] },
      { text: "Probed." },
    ],
  ]);
  const created = await h.api("POST", `${API}/runs`, {
    body: {
      repository: "acme/web",
      prompt: "probe the network",
      modelId: model,
      validationMode: "minimal",
      environment: { network },
    },
  });
  expect(created.status).toBe(201);
  const run = await h.turnOver(created.json.id, { query: "?events=1" });
  const output = (run.events as { type: string; data: { kind?: string; tool?: string; output?: string } }[])
    .filter((e) => e.type === "builder.event" && e.data.kind === "tool" && e.data.tool === "bash" && e.data.output)
    .map((e) => e.data.output!)
    .join("\n");
  await h.api("POST", `${API}/runs/${created.json.id}/messages`, { body: { endSession: true } });
  return { run, output, patchbayPort };
}

describe.skipIf(!available)("network policy under bwrap", { timeout: LOADED.testMs }, () => {
  it("model-only: the agent's bash reaches nothing on the host's loopback, and the turn completes through the gateway", async () => {
    const { run, output, patchbayPort } = await runProbe("test/net-closed", "model-only");
    expect(run.status).toBe("idle");
    expect(run.summary).toBe("Probed.");
    expect(run.environment?.network ?? "model-only").toBe("model-only");
    expect(output).toContain(`port ${targetPort}: ECONNREFUSED`);
    expect(output).toContain(`port ${patchbayPort}: ECONNREFUSED`);
    expect(output).not.toContain("connected");
    expect(connections).toBe(0);
    // The gateway answered every request of the turn through the bridge.
    expect(h.model.agentRequests("test/net-closed").length).toBeGreaterThan(0);
  });

  it("open: the same probe connects (control)", async () => {
    const { run, output, patchbayPort } = await runProbe("test/net-open", "open");
    expect(run.status).toBe("idle");
    expect(output).toContain(`port ${targetPort}: connected`);
    expect(output).toContain(`port ${patchbayPort}: connected`);
    expect(connections).toBeGreaterThan(0);
  });
});
