/**
 * Configuration: parsed once from the environment (zod), then frozen. Nothing else in
 * Patchbay reads `process.env`; everything takes a `Config` (or the fields it needs).
 */
import path from "node:path";
import * as z from "zod";

/** PATH when the environment has none; also the default of the parts that take a PATH. */
export const DEFAULT_HOST_PATH = "/usr/local/bin:/usr/bin:/bin";

/**
 * Proxy and TLS settings a host may need to reach its git server at all. They hold no
 * secrets Patchbay owns, so host git gets them, and so do a run's setup and validation commands
 * (installs behind the same proxy); everything else in the environment they do not.
 */
export const HOST_PROXY_VARIABLES = [
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "all_proxy",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "ALL_PROXY",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "NODE_EXTRA_CA_CERTS",
] as const;

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
/** A comma-separated list (blank entries dropped). */
const commaList = optionalString.transform((s): readonly string[] =>
  (s ?? "")
    .split(",")
    .map((m) => m.trim())
    .filter(Boolean),
);

const flag = z
  .enum(["0", "1", "true", "false", ""])
  .default("0")
  .transform((s) => s === "1" || s === "true");

/** A setting: the environment variable it is read from (or the variables, as a record), and its schema. */
interface Setting<S extends z.ZodType = z.ZodType> {
  readonly from: string | readonly string[];
  readonly schema: S;
}
const setting = <S extends z.ZodType>(from: string | readonly string[], schema: S): Setting<S> => ({ from, schema });

/** Every setting, keyed by its `Config` field, in the order errors are reported. */
const SETTINGS = {
  dataDir: setting(
    "PATCHBAY_DATA_DIR",
    z
      .string()
      .min(1)
      .default("./data")
      .transform((p) => path.resolve(p)),
  ),
  /**
   * A PostgreSQL database (`postgres://user:pass@host:5432/db`) for the store instead of the
   * embedded one in the data dir: what several replicas share. Needs PATCHBAY_SECRET_KEY.
   */
  databaseUrl: setting(
    "PATCHBAY_DATABASE_URL",
    optionalString.refine(
      (s) => s === undefined || /^postgres(ql)?:\/\//.test(s),
      "must be a postgres:// or postgresql:// URL",
    ),
  ),
  /**
   * Runs one replica holds at once (running or idle; with PATCHBAY_DATABASE_URL): a new run
   * past it stays `queued` until a replica with room takes it. Unset: no bound.
   */
  maxActiveRuns: setting("PATCHBAY_MAX_ACTIVE_RUNS", z.coerce.number().int().min(1).optional()),
  /** Where the other replicas reach this one (handoffs); default `http://PATCHBAY_HOST:PORT`. */
  replicaUrl: setting(
    "PATCHBAY_REPLICA_URL",
    optionalString.refine((s) => s === undefined || /^https?:\/\//.test(s), "must be an http(s):// URL"),
  ),
  /** How long a replica's lease on its runs lasts without a heartbeat: a dead replica's runs are taken over after it. */
  leaseMs: setting("PATCHBAY_LEASE_MS", intMs(15_000, 1000)),
  sandbox: setting("PATCHBAY_SANDBOX", z.enum(["local", "bwrap", "e2b"]).default("local")),
  gitBaseUrl: setting("PATCHBAY_GIT_BASE_URL", url("https://github.com")),
  githubApiUrl: setting("PATCHBAY_GITHUB_API_URL", url("https://api.github.com")),
  githubToken: setting("GITHUB_TOKEN", optionalString),
  githubAppId: setting("GITHUB_APP_ID", optionalString),
  githubAppPrivateKey: setting("GITHUB_APP_PRIVATE_KEY", optionalString),
  openrouterBaseUrl: setting("PATCHBAY_OPENROUTER_BASE_URL", url("https://openrouter.ai/api/v1")),
  openrouterApiKey: setting("OPENROUTER_API_KEY", optionalString),
  defaultModel: setting("PATCHBAY_DEFAULT_MODEL", z.string().min(1).default("anthropic/claude-sonnet-4.6")),
  /**
   * Allowed model ids (PATCHBAY_MODELS, comma-separated); empty means any. The default model
   * is always allowed (added by the schema below).
   */
  models: setting("PATCHBAY_MODELS", commaList),
  /**
   * The catalog's prices (PATCHBAY_MODEL_PRICES, JSON: model id -> US dollars per million
   * input and output tokens), for budgets when the upstream reports no cost.
   */
  modelPrices: setting(
    "PATCHBAY_MODEL_PRICES",
    optionalString
      .transform((s, ctx) => {
        if (s === undefined) return {};
        try {
          return JSON.parse(s) as unknown;
        } catch {
          ctx.addIssue({ code: "custom", message: "must be JSON" });
          return z.NEVER;
        }
      })
      .pipe(
        z
          .record(
            z.string().min(1),
            z.object({ inputPerMTok: z.number().min(0), outputPerMTok: z.number().min(0) }).strict(),
          )
          .readonly(),
      ),
  ),
  /**
   * Models that take no images (PATCHBAY_TEXT_ONLY_MODELS, comma-separated ids): a run or
   * message with images on one is refused (model_without_vision). Every other id is assumed to
   * see images: the upstream decides, and refuses what it cannot read.
   */
  textOnlyModels: setting("PATCHBAY_TEXT_ONLY_MODELS", commaList),
  sessionTtlMs: setting("PATCHBAY_SESSION_TTL_MS", intMs(1_800_000, 1000)),
  /**
   * Idle time after which a warm session hibernates: its agent server stops (local, bwrap) or
   * its VM pauses (e2b), its files and OpenCode session kept; a message wakes it. 0: never.
   */
  hibernateAfterMs: setting("PATCHBAY_HIBERNATE_AFTER_MS", intMs(120_000, 0)),
  /**
   * Days a finished run (completed, failed, cancelled, or idle with its session ended) is kept
   * after its last update: then its record, turns, events, patch and summary are deleted.
   * Unset: kept for ever. Fractions allowed (0.5 = 12 hours).
   */
  retentionDays: setting("PATCHBAY_RETENTION_DAYS", z.coerce.number().positive().max(36_500).optional()),
  /** Longest a single turn may run before it is ended as failed. */
  turnTimeoutMs: setting("PATCHBAY_TURN_TIMEOUT_MS", intMs(1_800_000, 1000)),
  /** Longest the OpenCode event stream may stay silent before the driver re-reads the session. */
  watchdogMs: setting("PATCHBAY_WATCHDOG_MS", intMs(30_000, 100)),
  secretKey: setting(
    "PATCHBAY_SECRET_KEY",
    optionalString.refine(
      (s) => s === undefined || Buffer.from(s, "base64").length === 32,
      "must be 32 bytes, base64-encoded",
    ),
  ),
  e2bApiKey: setting("E2B_API_KEY", optionalString),
  e2bTemplate: setting("PATCHBAY_E2B_TEMPLATE", z.string().min(1).default("opencode")),
  /**
   * Sandboxes kept started with an OpenCode server, ready for new runs (0: off). Undefined
   * when unset: `serve` keeps 1 for local/bwrap and 0 for e2b; one-shot commands keep none.
   */
  warmPoolSize: setting("PATCHBAY_WARM_POOL_SIZE", z.coerce.number().int().min(0).max(32).optional()),
  /**
   * Repositories (owner/name, comma-separated) the warm pool keeps checked out with OpenCode's
   * instance built, whether or not runs came; without it, the repositories runs come back to.
   */
  warmRepos: setting(
    "PATCHBAY_WARM_REPOS",
    commaList.pipe(
      z
        .array(z.string().regex(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})\/[A-Za-z0-9._-]{1,100}$/, "must be owner/name"))
        .readonly(),
    ),
  ),
  /**
   * local only: one `opencode serve` for every run (each run a session in its own directory)
   * instead of one per run; trades the little isolation `local` has for memory.
   */
  sharedAgent: setting(
    "PATCHBAY_SHARED_AGENT",
    z
      .enum(["0", "1", "true", "false", ""])
      .default("0")
      .transform((s) => s === "1" || s === "true"),
  ),
  /**
   * `environment.network` of a run that names none: `open` (the agent's processes reach what the
   * host reaches) or `model-only` (the model gateway and nothing else; bwrap and e2b only).
   */
  network: setting("PATCHBAY_NETWORK", z.enum(["open", "model-only"]).default("open")),
  /** 1: every run gets PATCHBAY_NETWORK; a run asking for another policy is refused (unsupported_network_policy). */
  networkForce: setting(
    "PATCHBAY_NETWORK_FORCE",
    z
      .enum(["0", "1", "true", "false", ""])
      .default("0")
      .transform((s) => s === "1" || s === "true"),
  ),
  /**
   * Whether a publish may change files under `.github/workflows/` (CI code that runs with the
   * repository's secrets). Off: such a publish fails with workflow_change_refused.
   */
  publishAllowWorkflows: setting(
    "PATCHBAY_PUBLISH_ALLOW_WORKFLOWS",
    z
      .enum(["0", "1", "true", "false", ""])
      .default("0")
      .transform((s) => s === "1" || s === "true"),
  ),
  /** The model gateway as reachable from remote sandboxes (e2b), e.g. `https://patchbay.example.com/gateway`; no trailing slash. */
  publicGatewayUrl: setting(
    "PATCHBAY_PUBLIC_GATEWAY_URL",
    z
      .string()
      .optional()
      .transform((s) => (s && s.trim() !== "" ? s.replace(/\/+$/, "") : undefined))
      .refine((s) => s === undefined || /^https?:\/\//.test(s), "must be an http(s):// URL"),
  ),
  /**
   * Loopback port of the model gateway. 0 (default) picks a free one; e2b wants a fixed one,
   * behind the reverse proxy PATCHBAY_PUBLIC_GATEWAY_URL names, and stable across restarts
   * (reattached sandboxes keep calling it).
   */
  gatewayPort: setting("PATCHBAY_GATEWAY_PORT", z.coerce.number().int().min(0).max(65535).default(0)),
  /**
   * Largest model request body the gateway reads (413 beyond); OpenCode's are tens of KB, images
   * add MBs (a message's images must fit in it, with 1 MiB to spare: run/images.ts).
   */
  gatewayMaxBodyBytes: setting(
    "PATCHBAY_GATEWAY_MAX_BODY_BYTES",
    z.coerce
      .number()
      .int()
      .min(1024)
      .default(8 * 1024 * 1024),
  ),
  /** Longest a model request body may take to arrive before the gateway answers 408. */
  gatewayBodyTimeoutMs: setting("PATCHBAY_GATEWAY_BODY_TIMEOUT_MS", intMs(30_000, 100)),
  /** Model requests one run may have in flight through the gateway at once (429 beyond). */
  gatewayMaxInFlight: setting("PATCHBAY_GATEWAY_MAX_IN_FLIGHT", z.coerce.number().int().min(1).default(4)),
  /** Cap on a model request's output tokens: `max_tokens` and the like are clamped to it. */
  gatewayMaxTokens: setting("PATCHBAY_GATEWAY_MAX_TOKENS", z.coerce.number().int().min(1).default(32_000)),
  host: setting("PATCHBAY_HOST", z.string().min(1).default("127.0.0.1")),
  /**
   * `host:port` of a second listener that serves only `GET /metrics`, without a key (for a
   * Prometheus scraper on a private network). Unset: `/metrics` on the API, admin key only.
   */
  metricsAddr: setting(
    "PATCHBAY_METRICS_ADDR",
    optionalString
      .refine((s) => s === undefined || /^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(s), "must be host:port")
      .transform((s) => {
        if (s === undefined) return undefined;
        const i = s.lastIndexOf(":");
        return { host: s.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(s.slice(i + 1)) };
      }),
  ),
  /** The Patchbay server `patchbay run`/`runs` talk to (remote mode); `--server` wins. */
  server: setting(
    "PATCHBAY_SERVER",
    optionalString.refine((s) => s === undefined || /^https?:\/\//.test(s), "must be an http(s):// URL"),
  ),
  /** The API key for PATCHBAY_SERVER; `--key` wins. */
  apiKey: setting("PATCHBAY_API_KEY", optionalString),
  port: setting("PORT", z.coerce.number().int().min(0).max(65535).default(8787)),
  /**
   * The instance's user: owner of runs started without an API key (`patchbay mcp`, `patchbay run`)
   * and of keys created without `--owner`/`ownerId`, so all of them see the same runs.
   */
  localOwner: setting("PATCHBAY_LOCAL_OWNER", z.string().min(1).default("local")),
  /**
   * bwrap under a root Patchbay: the host user (`uid` or `uid:gid`) the sandbox's processes run
   * as, so nothing the agent writes is root's on the host. Best a uid/gid of Patchbay's own.
   */
  sandboxUser: setting(
    "PATCHBAY_SANDBOX_UID",
    z
      .string()
      .default("65534")
      .refine((s) => /^[1-9]\d{0,8}(:[1-9]\d{0,8})?$/.test(s.trim()), "must be a non-zero uid or uid:gid")
      .transform((s) => {
        const [uid, gid = uid] = s.trim().split(":").map(Number);
        return { uid: uid!, gid: gid! };
      }),
  ),
  /** Path of the `opencode` binary; by default the one installed with Patchbay. */
  opencodeBin: setting("PATCHBAY_OPENCODE_BIN", optionalString),
  /** Undefined when PATCHBAY_LOG_LEVEL is unset: each command picks its own (`serve` info, `run` warn). */
  logLevel: setting("PATCHBAY_LOG_LEVEL", z.enum(["debug", "info", "warn", "error", "silent"]).optional()),
  /** REST: most runs one owner may have queued, running or idle at once (429 beyond). */
  maxActiveRunsPerKey: setting("PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY", z.coerce.number().int().min(1).default(5)),
  /** Event streams (SSE, MCP waits and subscriptions) one owner may have open at once (429 too_many_streams beyond). */
  maxStreamsPerKey: setting("PATCHBAY_MAX_STREAMS_PER_KEY", z.coerce.number().int().min(1).default(20)),
  /** REST: requests per minute per API key (429 with Retry-After beyond). */
  rateLimitPerMin: setting("PATCHBAY_RATE_LIMIT_PER_MIN", z.coerce.number().int().min(1).default(300)),
  /** A run's setup (its environment's install step) when its spec names no `timeoutMs`. */
  setupTimeoutMs: setting("PATCHBAY_SETUP_TIMEOUT_MS", intMs(600_000, 1000)),
  /** Bytes the setup cache (`<dataDir>/cache/env`) may hold; least recently used layers go first. */
  envCacheMaxBytes: setting(
    "PATCHBAY_ENV_CACHE_MAX_BYTES",
    z.coerce
      .number()
      .int()
      .min(0)
      .default(10 * 1024 ** 3),
  ),
  /** Snapshots setup's cache keeps where the sandbox provider has them (e2b); least recently used go first. */
  envCacheMaxSnapshots: setting("PATCHBAY_ENV_CACHE_MAX_SNAPSHOTS", z.coerce.number().int().min(0).default(20)),
  /** Webhooks may target `http://` URLs (local use); off: `https://` only. */
  webhookAllowHttp: setting("PATCHBAY_WEBHOOK_ALLOW_HTTP", flag),
  /** Webhooks may reach private, loopback and link-local addresses; off: refused, checked on the resolved address. */
  webhookAllowPrivate: setting("PATCHBAY_WEBHOOK_ALLOW_PRIVATE", flag),
  /**
   * Delays before each retry of a failed webhook delivery (ms, comma-separated; each gets ±20%
   * jitter). Default 6 tries over about an hour: at once, then 5 s, 30 s, 2 min, 10 min, 45 min.
   */
  webhookRetryMs: setting(
    "PATCHBAY_WEBHOOK_RETRY_MS",
    z
      .string()
      .default("5000,30000,120000,600000,2700000")
      .transform((s): readonly number[] => s.split(",").map((v) => Number(v.trim())))
      .refine(
        (l) => l.length >= 1 && l.length <= 50 && l.every((n) => Number.isInteger(n) && n >= 1 && n <= 86_400_000),
        "must be 1 to 50 comma-separated delays in ms (1 to 86400000 each)",
      ),
  ),
  /** Longest one webhook delivery attempt may take (connect, answer) before it counts as failed. */
  webhookTimeoutMs: setting("PATCHBAY_WEBHOOK_TIMEOUT_MS", intMs(10_000, 100)),
  /** serve: on SIGTERM, how long turns in flight may run on before they are stopped and checkpointed. */
  shutdownGraceMs: setting("PATCHBAY_SHUTDOWN_GRACE_MS", intMs(30_000, 0)),
  /** The PATH Patchbay was started with: host git and `local` sandbox commands find their tools on it. */
  hostPath: setting("PATH", z.string().default(DEFAULT_HOST_PATH)),
  /** The proxy and TLS variables of HOST_PROXY_VARIABLES that are set, passed to host git, setup and validation. */
  hostProxyEnv: setting(HOST_PROXY_VARIABLES, z.record(z.string(), z.string()).readonly()),
} satisfies Record<string, Setting>;

type Shape<T extends Record<string, Setting>> = { [K in keyof T]: T[K]["schema"] };
const shape = Object.fromEntries(Object.entries(SETTINGS).map(([k, s]) => [k, s.schema])) as Shape<typeof SETTINGS>;

/** Patchbay's configuration; {@link loadConfig} reads each field from the variable SETTINGS names. */
export const Config = z.object(shape).overwrite((c) => ({
  ...c,
  models: c.models.length && !c.models.includes(c.defaultModel) ? [c.defaultModel, ...c.models] : c.models,
}));
export type Config = Readonly<z.output<typeof Config>>;

/** Every environment variable Patchbay reads. */
export const ENV_VARIABLES: readonly string[] = Object.values(SETTINGS).flatMap((s) => s.from);

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
  const input: Record<string, unknown> = {};
  for (const [field, { from }] of Object.entries(SETTINGS))
    input[field] =
      typeof from === "string"
        ? env[from]
        : Object.fromEntries(from.flatMap((v) => (env[v] === undefined ? [] : [[v, env[v]]])));
  const parsed = Config.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const variable = variableOf(issue.path);
    const shown = env[variable] === undefined ? "" : ` (got ${JSON.stringify(redact(variable, env[variable]!))})`;
    throw new ConfigError(variable, `invalid ${variable}: ${issue.message}${shown}`);
  }
  if (parsed.data.databaseUrl && !parsed.data.secretKey)
    throw new ConfigError(
      "PATCHBAY_SECRET_KEY",
      "PATCHBAY_SECRET_KEY must be set with PATCHBAY_DATABASE_URL: every replica seals and opens secrets with the same key",
    );
  return Object.freeze({ ...parsed.data, ...overrides });
}

/** The variable an issue is about: a setting's own, or the key within a setting read from several. */
function variableOf(issuePath: readonly PropertyKey[]): string {
  const from = SETTINGS[issuePath[0] as keyof typeof SETTINGS]?.from;
  if (typeof from === "string") return from;
  return issuePath[1] === undefined ? "environment" : String(issuePath[1]);
}

const SECRET_VARS = /KEY|TOKEN|SECRET|PASSWORD/i;
function redact(variable: string, value: string): string {
  return SECRET_VARS.test(variable) ? "[redacted]" : value.length > 80 ? value.slice(0, 77) + "..." : value;
}
