/**
 * A run's environment as the rest of the engine sees it. The seam between setup (which runs
 * commands with the run's variables and records their output) and secrets (which hold the
 * values and mask them): `env` for every command of the run that may see its secrets (setup,
 * validation, the agent's shell), `mask` for every text recorded about the run.
 */
import type { RunRecord } from "../run/schema.ts";

export interface RunEnvironmentRuntime {
  /** The run's secrets as environment variables (empty when it has none or its session ended). */
  env(run: RunRecord): Promise<Record<string, string>>;
  /** `text` with every value of the run's secrets replaced by `[secret:NAME]`. */
  mask(text: string, run: RunRecord): string;
}
