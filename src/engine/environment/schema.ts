/**
 * Shapes of a run's environment: the setup that runs before the agent's first turn (and the
 * cache of what it installs), the secrets its commands see, and its network policy. Declared
 * by the repository in `.patchbay.json` (`setup`) or per run in `POST /runs` under
 * `environment` (the run's value wins). Secret values never appear on a run record: they are
 * sealed like the per-run model key and named here only.
 */
import * as z from "zod";

/** An environment variable name a secret is handed over as. */
export const SecretName = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Z_][A-Z0-9_]*$/, "must be an environment variable name ([A-Z_][A-Z0-9_]*)");
export type SecretName = z.infer<typeof SecretName>;

export const MAX_SECRETS = 50;
export const MAX_SECRET_BYTES = 16 * 1024;

export const SecretValue = z
  .string()
  .min(1)
  .refine((v) => Buffer.byteLength(v) <= MAX_SECRET_BYTES, `must be at most ${MAX_SECRET_BYTES} bytes`);

/** A path relative to the repository root, inside it. */
export const RepoPath = z
  .string()
  .min(1)
  .max(500)
  .refine(
    (p) => !p.startsWith("/") && !p.split(/[\\/]/).includes("..") && !p.includes("\0"),
    "must be a path inside the repository",
  );

export const SetupSpec = z
  .object({
    /** Shell command lines, run in order in the workspace; the first failure ends setup. */
    commands: z.array(z.string().min(1).max(4000)).min(1).max(20),
    cache: z
      .object({
        /** Files whose contents key the cache (lockfiles). */
        key: z.array(RepoPath).min(1).max(20),
        /** What setup produced that a later run restores instead of running setup. */
        paths: z.array(RepoPath).min(1).max(20),
      })
      .strict()
      .optional(),
    timeoutMs: z.number().int().positive().max(3_600_000).optional(),
  })
  .strict();
export type SetupSpec = z.infer<typeof SetupSpec>;

export const NetworkPolicy = z.enum(["open", "model-only"]);
export type NetworkPolicy = z.infer<typeof NetworkPolicy>;

/** `environment` in `POST /runs` and `start_run`. */
export const EnvironmentInput = z
  .object({
    setup: SetupSpec.optional(),
    secrets: z
      .record(SecretName, SecretValue)
      .refine((s) => Object.keys(s).length <= MAX_SECRETS, `at most ${MAX_SECRETS} secrets`)
      .optional(),
    /** Names of the owner's stored secrets (`POST /api/v1/secrets`) this run gets. */
    secretNames: z.array(SecretName).max(MAX_SECRETS).optional(),
    network: NetworkPolicy.optional(),
  })
  .strict();
export type EnvironmentInput = z.infer<typeof EnvironmentInput>;

/** The environment as stored on the run: no secret values, only names. */
export const RunEnvironment = z.object({
  /** The run's own setup, when it named one (the repository's `.patchbay.json` is read in the sandbox). */
  setup: SetupSpec.optional(),
  /** Every secret the run's commands see, per-run and named stored ones alike. */
  secretNames: z.array(SecretName),
  /** Those of `secretNames` that name the owner's stored secrets: a chained run names them again. */
  storedSecretNames: z.array(SecretName).optional(),
  network: NetworkPolicy,
});
export type RunEnvironment = z.infer<typeof RunEnvironment>;

/** `setup` on the run view. */
export const SetupState = z.object({
  status: z.enum(["pending", "running", "succeeded", "cached", "failed", "skipped"]),
  cached: z.boolean(),
  /** The cache key (a hash), when setup declares a cache. */
  key: z.string().nullable(),
  durationMs: z.number().nullable(),
  outputTail: z.string(),
});
export type SetupState = z.infer<typeof SetupState>;
