/**
 * A run's environment at run time: the variables its commands (setup, validation, the agent's
 * shell) see, and the masking applied to every text Patchbay shows from them. The engine's
 * run parts take a {@link RunEnvironmentRuntime}; secrets (environment/secrets.ts) supply the
 * real one, `plainEnvironment` is the one with no secrets.
 */
import type { RunRecord } from "../run/schema.ts";

export interface RunEnvironmentRuntime {
  /** Variables added to the run's setup and validation commands (its secrets, by name). */
  env(run: RunRecord): Promise<Record<string, string>>;
  /** `text` with every secret value of the run replaced (`[secret:NAME]`). */
  mask(text: string, run: RunRecord): string;
}

/** No variables, nothing to mask: a run without secrets. */
export const plainEnvironment: RunEnvironmentRuntime = {
  env: async () => ({}),
  mask: (text) => text,
};
