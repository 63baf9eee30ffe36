/**
 * The server side of the gateway-abuse benchmark, run as its own process so its RSS is the
 * gateway's: a model gateway (the module named by argv[3], by default Patchbay's) in front
 * of the upstream at argv[2], and a `/healthz` on the same event loop, standing for the API
 * other owners call. Limits come from argv[4] (JSON options). Prints
 * `listening <healthUrl> <gatewayUrl> <attackerToken> <otherToken>`.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import type { GatewayGrant, ModelGateway } from "../src/engine/gateway/gateway.ts";

const [upstreamBaseUrl, modulePath, limits] = process.argv.slice(2) as [string, string, string];
const mod = (await import(pathToFileURL(modulePath).href)) as {
  createModelGateway(o: Record<string, unknown>): Promise<ModelGateway>;
};
const gw = await mod.createModelGateway({ upstreamBaseUrl, ...(JSON.parse(limits) as Record<string, unknown>) });
const grant = (runId: string): GatewayGrant => ({
  runId,
  upstreamKey: async () => "sk-bench-upstream-key",
  allowedModels: [],
  onUsage: () => {},
});
const attacker = gw.issueToken(grant("run_attacker"));
const other = gw.issueToken(grant("run_other"));
const health = http.createServer((_req, res) => {
  res.writeHead(200, { "content-type": "application/json" });
  res.end('{"ok":true}');
});
await new Promise<void>((r) => health.listen(0, "127.0.0.1", r));
const port = (health.address() as AddressInfo).port;
process.stdout.write(`listening http://127.0.0.1:${port}/healthz ${gw.url} ${attacker} ${other}\n`);
process.on("SIGTERM", () => {
  void gw.close().finally(() => process.exit(0));
});
