/**
 * A run's network policy: `open` (what the host reaches) or `model-only` (the model gateway
 * and nothing else). Which one a run gets is decided here, once, at creation; how a sandbox
 * enforces it is the provider's (bwrap: a network namespace of its own with the gateway
 * bridged in through a Unix socket; e2b: E2B's egress rules). `local` has no isolation to
 * enforce it with, so it refuses `model-only` rather than pretend.
 */
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import type { NetworkPolicy } from "./schema.ts";

type NetworkConfig = Pick<Config, "network" | "networkForce" | "sandbox">;

/** Providers that can hold a run to `model-only`. */
const ENFORCING: readonly Config["sandbox"][] = ["bwrap", "e2b"];

/**
 * Refuse a server configured to a policy its sandbox cannot enforce (PATCHBAY_NETWORK=model-only
 * with PATCHBAY_SANDBOX=local): every run would fail, so it fails once, at start.
 */
export function assertNetworkConfig(config: NetworkConfig): void {
  if (config.network === "model-only" && !ENFORCING.includes(config.sandbox))
    throw new EngineError(
      "unsupported_network_policy",
      `PATCHBAY_NETWORK=model-only needs PATCHBAY_SANDBOX=bwrap or e2b (${config.sandbox} has no network isolation)`,
    );
}

/**
 * The policy a new run gets: the one it asks for, else the server's default; with
 * PATCHBAY_NETWORK_FORCE the server's, and a run asking for another is refused. Throws
 * unsupported_network_policy.
 */
export function runNetworkPolicy(config: NetworkConfig, asked: NetworkPolicy | undefined): NetworkPolicy {
  if (config.networkForce && asked !== undefined && asked !== config.network)
    throw new EngineError(
      "unsupported_network_policy",
      `this server runs every run with network ${config.network} (PATCHBAY_NETWORK_FORCE)`,
      { network: asked, allowed: [config.network] },
    );
  const policy = asked ?? config.network;
  if (policy === "model-only" && !ENFORCING.includes(config.sandbox))
    throw new EngineError(
      "unsupported_network_policy",
      `network model-only needs a sandbox that can isolate the agent (bwrap or e2b); this server runs ${config.sandbox}, which has none`,
      { network: policy, sandbox: config.sandbox },
    );
  return policy;
}
