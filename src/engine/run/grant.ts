/**
 * What a run's gateway token may do: call the run's model, with the run's upstream key
 * (the server's managed key, or the run's own sealed one), its usage metered to the run and
 * each call admitted against the run's budget (budget.ts).
 */
import type { Config } from "../../config.ts";
import type { GatewayGrant } from "../gateway/gateway.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { RunStore } from "../store/store.ts";
import type { Budgets } from "./budget.ts";
import type { RunRecord } from "./schema.ts";

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
  /** Where usage is recorded and each model call is admitted against the run's limits. */
  budgets: Pick<Budgets, "record" | "admit">;
}): Grants {
  const { config, store, secrets, budgets } = deps;

  async function upstreamKey(run: RunRecord): Promise<string | undefined> {
    if (run.billingMode === "managed") return config.openrouterApiKey;
    const sealed = await store.getSecret(run.id, MODEL_KEY_SECRET);
    return sealed ? secrets.open(sealed) : undefined;
  }

  return {
    upstreamKey,
    grantFor: (run) => ({
      runId: run.id,
      upstreamKey: () => upstreamKey(run),
      allowedModels: [run.modelId],
      onUsage: (u) => budgets.record(run.id, u),
      admit: () => budgets.admit(run.id),
    }),
  };
}
