/**
 * Configuration: parsed once from the environment (zod), then frozen. Nothing else in
 * Patchbay reads `process.env`; everything takes a `Config`.
 */
import path from "node:path";
import * as z from "zod";

const intMs = (def: number, min = 1) => z.coerce.number().int().min(min).default(def);
const url = (def: string) =>
  z
    .string()
    .default(def)
    .refine((s) => /^(https?|file):\/\//.test(s), "must be an http(s):// or file:// URL")
    .transform((s) => s.replace(/\/+$/, ""));
const optionalString = z
  .string()
  .optional()
  .transform((s) => (s && s.trim() !== "" ? s : undefined));

/** Environment variables Patchbay reads, with their defaults. Keys are env variable names. */
export const EnvSchema = z.object({
  PATCHBAY_DATA_DIR: z.string().min(1).default("./data"),
  PATCHBAY_SANDBOX: z.enum(["local", "bwrap", "e2b"]).default("local"),
  PATCHBAY_GIT_BASE_URL: url("https://github.com"),
  PATCHBAY_GITHUB_API_URL: url("https://api.github.com"),
  GITHUB_TOKEN: optionalString,
  GITHUB_APP_ID: optionalString,
  GITHUB_APP_PRIVATE_KEY: optionalString,
  PATCHBAY_OPENROUTER_BASE_URL: url("https://openrouter.ai/api/v1"),
  OPENROUTER_API_KEY: optionalString,
  PATCHBAY_DEFAULT_MODEL: z.string().min(1).default("anthropic/claude-sonnet-4.6"),
  /** Comma-separated list of allowed model ids; empty means any id is accepted. */
  PATCHBAY_MODELS: optionalString,
  PATCHBAY_SESSION_TTL_MS: intMs(1_800_000, 1000),
  /** Longest a single turn may run before it is ended as failed. */
  PATCHBAY_TURN_TIMEOUT_MS: intMs(1_800_000, 1000),
  /** Longest the OpenCode event stream may stay silent before the driver re-reads the session. */
  PATCHBAY_WATCHDOG_MS: intMs(30_000, 100),
  PATCHBAY_SECRET_KEY: optionalString.refine(
    (s) => s === undefined || Buffer.from(s, "base64").length === 32,
    "must be 32 bytes, base64-encoded",
  ),
  E2B_API_KEY: optionalString,
  PATCHBAY_E2B_TEMPLATE: z.string().min(1).default("opencode"),
  /**
   * Sandboxes kept started with an OpenCode server, ready for new runs (local and bwrap).
   * Unset: `serve` keeps 1 for local/bwrap and 0 for e2b; one-shot commands keep none.
   */
  PATCHBAY_WARM_POOL_SIZE: z.coerce.number().int().min(0).max(32).optional(),
  /**
   * local only: one `opencode serve` for every run (each run a session in its own directory)
   * instead of one per run; trades the little isolation `local` has for memory.
   */
  PATCHBAY_SHARED_AGENT: z
    .enum(["0", "1", "true", "false", ""])
    .default("0")
    .transform((s) => s === "1" || s === "true"),
  /** The model gateway as reachable from remote sandboxes (e2b), e.g. `https://patchbay.example.com/gateway`. */
  PATCHBAY_PUBLIC_GATEWAY_URL: z
    .string()
    .optional()
    .transform((s) => (s && s.trim() !== "" ? s.replace(/\/+$/, "") : undefined))
    .refine((s) => s === undefined || /^https?:\/\//.test(s), "must be an http(s):// URL"),
  /**
   * Loopback port of the model gateway. 0 (default) picks a free one; e2b wants a fixed one,
   * behind the reverse proxy PATCHBAY_PUBLIC_GATEWAY_URL names, and stable across restarts
   * (reattached sandboxes keep calling it).
   */
  PATCHBAY_GATEWAY_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  PATCHBAY_HOST: z.string().min(1).default("127.0.0.1"),
  PORT: z.coerce.number().int().min(0).max(65535).default(8787),
  /** Owner of runs started without an API key (`patchbay mcp`, `patchbay run`). */
  PATCHBAY_LOCAL_OWNER: z.string().min(1).default("local"),
  /** Path of the `opencode` binary; by default the one installed with Patchbay. */
  PATCHBAY_OPENCODE_BIN: optionalString,
  /** Unset: each command picks its own (`serve` info, `run` warn). */
  PATCHBAY_LOG_LEVEL: z.enum(["debug", "info", "warn", "error", "silent"]).optional(),
  /** REST: most runs one owner may have queued, running or idle at once (429 beyond). */
  PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: z.coerce.number().int().min(1).default(5),
  /** REST: requests per minute per API key (429 with Retry-After beyond). */
  PATCHBAY_RATE_LIMIT_PER_MIN: z.coerce.number().int().min(1).default(300),
  /** serve: on SIGTERM, how long turns in flight may run on before they are stopped and checkpointed. */
  PATCHBAY_SHUTDOWN_GRACE_MS: intMs(30_000, 0),
});

export interface Config {
  readonly dataDir: string;
  readonly sandbox: "local" | "bwrap" | "e2b";
  readonly gitBaseUrl: string;
  readonly githubApiUrl: string;
  readonly githubToken?: string;
  readonly githubAppId?: string;
  readonly githubAppPrivateKey?: string;
  readonly openrouterBaseUrl: string;
  readonly openrouterApiKey?: string;
  readonly defaultModel: string;
  /** Allowed model ids; empty means any. The default model is always allowed. */
  readonly models: readonly string[];
  readonly sessionTtlMs: number;
  readonly turnTimeoutMs: number;
  readonly watchdogMs: number;
  readonly secretKey?: string;
  readonly e2bApiKey?: string;
  readonly e2bTemplate: string;
  /** Warm sandboxes kept ready (0: off); undefined when unset, so each command picks its default. */
  readonly warmPoolSize?: number;
  /** PATCHBAY_SHARED_AGENT: local runs share one OpenCode server (one session and directory each). */
  readonly sharedAgent: boolean;
  /** Base URL (no trailing slash) at which remote sandboxes reach the model gateway; required for e2b. */
  readonly publicGatewayUrl?: string;
  /** Loopback port of the model gateway (0: any free one). */
  readonly gatewayPort: number;
  readonly host: string;
  readonly port: number;
  readonly localOwner: string;
  readonly opencodeBin?: string;
  /** Undefined when PATCHBAY_LOG_LEVEL is unset: each command picks its default. */
  readonly logLevel?: "debug" | "info" | "warn" | "error" | "silent";
  readonly maxActiveRunsPerKey: number;
  readonly rateLimitPerMin: number;
  /** serve: how long a SIGTERM waits for turns in flight before stopping them. */
  readonly shutdownGraceMs: number;
}

/** Thrown when an environment variable holds an invalid value; the message is one line. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Parse the environment into a frozen Config. Throws ConfigError naming the first bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const variable = String(issue.path[0] ?? "environment");
    const shown = env[variable] === undefined ? "" : ` (got ${JSON.stringify(redact(variable, env[variable]!))})`;
    throw new ConfigError(variable, `invalid ${variable}: ${issue.message}${shown}`);
  }
  const e = parsed.data;
  const models = (e.PATCHBAY_MODELS ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const config: Config = {
    dataDir: path.resolve(e.PATCHBAY_DATA_DIR),
    sandbox: e.PATCHBAY_SANDBOX,
    gitBaseUrl: e.PATCHBAY_GIT_BASE_URL,
    githubApiUrl: e.PATCHBAY_GITHUB_API_URL,
    githubToken: e.GITHUB_TOKEN,
    githubAppId: e.GITHUB_APP_ID,
    githubAppPrivateKey: e.GITHUB_APP_PRIVATE_KEY,
    openrouterBaseUrl: e.PATCHBAY_OPENROUTER_BASE_URL,
    openrouterApiKey: e.OPENROUTER_API_KEY,
    defaultModel: e.PATCHBAY_DEFAULT_MODEL,
    models:
      models.length && !models.includes(e.PATCHBAY_DEFAULT_MODEL) ? [e.PATCHBAY_DEFAULT_MODEL, ...models] : models,
    sessionTtlMs: e.PATCHBAY_SESSION_TTL_MS,
    turnTimeoutMs: e.PATCHBAY_TURN_TIMEOUT_MS,
    watchdogMs: e.PATCHBAY_WATCHDOG_MS,
    secretKey: e.PATCHBAY_SECRET_KEY,
    e2bApiKey: e.E2B_API_KEY,
    e2bTemplate: e.PATCHBAY_E2B_TEMPLATE,
    warmPoolSize: e.PATCHBAY_WARM_POOL_SIZE,
    sharedAgent: e.PATCHBAY_SHARED_AGENT,
    publicGatewayUrl: e.PATCHBAY_PUBLIC_GATEWAY_URL,
    gatewayPort: e.PATCHBAY_GATEWAY_PORT,
    host: e.PATCHBAY_HOST,
    port: e.PORT,
    localOwner: e.PATCHBAY_LOCAL_OWNER,
    opencodeBin: e.PATCHBAY_OPENCODE_BIN,
    logLevel: e.PATCHBAY_LOG_LEVEL,
    maxActiveRunsPerKey: e.PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY,
    rateLimitPerMin: e.PATCHBAY_RATE_LIMIT_PER_MIN,
    shutdownGraceMs: e.PATCHBAY_SHUTDOWN_GRACE_MS,
    ...overrides,
  };
  return Object.freeze(config);
}

const SECRET_VARS = /KEY|TOKEN|SECRET|PASSWORD/i;
function redact(variable: string, value: string): string {
  return SECRET_VARS.test(variable) ? "[redacted]" : value.length > 80 ? value.slice(0, 77) + "..." : value;
}
