/**
 * Warming a pooled OpenCode server before its run: one throw-away prompt that goes all the
 * way to a model request, so the work OpenCode does lazily on its first prompt (loading the
 * session loop, the tools, the provider SDK, the system prompt; about 1 s of CPU, measured
 * with opencode 1.18.33 on 2 cores) is done while the server waits in the pool, not after
 * the run's POST.
 *
 * The run still pays for what belongs to its directory: binding the run's token and model
 * changes the global config, and OpenCode then disposes every instance, so an instance
 * booted here could not be kept anyway. The warm-up's instance is disposed at once, which
 * also keeps the idle server small.
 */
import type { OpencodeClient } from "@opencode-ai/sdk/v2";
import type { Logger } from "../log.ts";
import { PROVIDER_ID } from "./opencode-config.ts";

/**
 * Model listed in a pooled server's config for the warm-up only. The server has no token
 * yet, so the gateway answers its request with 401 at once; OpenCode does not retry that.
 */
export const WARMUP_MODEL_ID = "patchbay-warmup";

/** `config` (a pooled server's, see `buildOpencodeConfig`) with {@link WARMUP_MODEL_ID} listed under the gateway provider. */
export function withWarmupModel(config: Record<string, unknown>): Record<string, unknown> {
  const providers = config.provider as Record<string, { models?: Record<string, unknown> }>;
  const own = providers[PROVIDER_ID]!;
  const model = {
    name: "Patchbay warm-up",
    tool_call: true,
    attachment: false,
    limit: { context: 200_000, output: 32_000 },
  };
  return {
    ...config,
    provider: { ...providers, [PROVIDER_ID]: { ...own, models: { ...own.models, [WARMUP_MODEL_ID]: model } } },
  };
}

export interface WarmUpOptions {
  /** A client of the pooled server, without a directory (the warm-up names its own). */
  client: OpencodeClient;
  /** Directory the throw-away session works in; its instance is disposed afterwards. */
  directory: string;
  /** Keep the directory's instance (a repository entry of the warm pool: its run works there). */
  keepInstance?: boolean;
  /** Upper bound for the whole warm-up. Default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  log: Logger;
}

/**
 * Run the throw-away prompt, then delete its session and (unless kept) dispose its directory's instance.
 * Never throws: a server that cannot be warmed is still a started server, and the run's own
 * first prompt does the same work.
 */
export async function warmUpOpencode(opts: WarmUpOptions): Promise<void> {
  const { client, directory, log } = opts;
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 30_000);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const started = Date.now();
  let sessionID: string | undefined;
  try {
    const created = await client.session.create({ directory, title: "warm-up" }, { signal });
    sessionID = created.data?.id;
    if (!sessionID) throw new Error(`no session: ${JSON.stringify(created.error)}`);
    // Synchronous on purpose: it returns once the model request has failed, i.e. once the
    // whole first-prompt path has run.
    await client.session.prompt(
      {
        sessionID,
        directory,
        parts: [{ type: "text", text: "warm-up" }],
        model: { providerID: PROVIDER_ID, modelID: WARMUP_MODEL_ID },
        agent: "build",
      },
      { signal },
    );
    log.debug("warmed the agent server", { ms: Date.now() - started });
  } catch (e) {
    log.debug("could not warm the agent server", { error: e, ms: Date.now() - started });
  } finally {
    // Bounded on their own: a server that ignored the prompt's abort should not hold the pool.
    const cleanup = AbortSignal.any([...(opts.signal ? [opts.signal] : []), AbortSignal.timeout(5000)]);
    if (sessionID) await client.session.delete({ sessionID, directory }, { signal: cleanup }).catch(() => undefined);
    if (!opts.keepInstance) await client.instance.dispose({ directory }, { signal: cleanup }).catch(() => undefined);
  }
}
