/**
 * What a run's gateway token may do: call the run's model, with the run's upstream key
 * (the server's managed key, or the run's own sealed one), its usage metered to the run.
 */
import type { Config } from "../../config.ts";
import type { GatewayGrant } from "../gateway/gateway.ts";
import type { Logger } from "../log.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { RunStore } from "../store/store.ts";
import type { RunRecord, Usage } from "./schema.ts";

/** The name a run's own OpenRouter key is sealed under. */
export const MODEL_KEY_SECRET = "openRouterApiKey";

export interface Grants {
  /** The key the run's model calls go upstream with (undefined: none to be had). */
  upstreamKey(run: RunRecord): Promise<string | undefined>;
  grantFor(run: RunRecord): GatewayGrant;
}

export function createGrants(deps: {
  config: Pick<Config, "openrouterApiKey">;
  store: RunStore;
  secrets: SecretBox;
  log: Logger;
}): Grants {
  const { config, store, secrets, log } = deps;

  async function upstreamKey(run: RunRecord): Promise<string | undefined> {
    if (run.billingMode === "managed") return config.openrouterApiKey;
    const sealed = await store.getSecret(run.id, MODEL_KEY_SECRET);
    return sealed ? secrets.open(sealed) : undefined;
  }

  function addUsage(runId: string, delta: Usage): void {
    void (async () => {
      const run = await store.getRun(runId);
      if (!run) return;
      const usage: Usage = {
        inputTokens: run.usage.inputTokens + delta.inputTokens,
        outputTokens: run.usage.outputTokens + delta.outputTokens,
        ...(run.usage.costUsd !== undefined || delta.costUsd !== undefined
          ? { costUsd: (run.usage.costUsd ?? 0) + (delta.costUsd ?? 0) }
          : {}),
      };
      await store.updateRun(runId, { usage });
    })().catch((e: unknown) => log.warn("could not record usage", { runId, error: e }));
  }

  return {
    upstreamKey,
    grantFor: (run) => ({
      runId: run.id,
      upstreamKey: () => upstreamKey(run),
      allowedModels: [run.modelId],
      onUsage: (u) => addUsage(run.id, u),
    }),
  };
}
