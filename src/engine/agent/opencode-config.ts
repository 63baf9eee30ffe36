/**
 * The OpenCode configuration Patchbay generates for each agent: one OpenAI-compatible
 * provider pointing at the model gateway (with the per-run token as its key), permissions
 * that never block a headless run, and everything that phones home turned off.
 */

/** Provider id under which the gateway appears inside OpenCode. */
export const PROVIDER_ID = "patchbay";

export interface OpencodeConfigInput {
  modelBaseUrl: string;
  modelToken: string;
  modelId: string;
  /** More models to list beside `modelId` (a shared server serves every run's model; unlisted ones fail). */
  extraModelIds?: readonly string[];
  /** Upper bound for a silent model stream before OpenCode gives up on it. */
  chunkTimeoutMs?: number;
  /**
   * Models that take no images. Every other model is declared with image input: without it
   * OpenCode replaces an image part with an "ERROR: Cannot read" text before the model sees it.
   */
  textOnlyModels?: readonly string[];
}

export function buildOpencodeConfig(input: OpencodeConfigInput): Record<string, unknown> {
  const model = `${PROVIDER_ID}/${input.modelId}`;
  return {
    $schema: "https://opencode.ai/config.json",
    autoupdate: false,
    share: "disabled",
    // OpenCode's own undo history: a second git repository it re-indexes with `git add` before
    // every step (about 0.7 s for the first of a run, 0.1-0.2 s each after, measured on 2
    // cores with a 300-file repository). Patchbay diffs the workspace with git itself and
    // never reverts through OpenCode.
    snapshot: false,
    model,
    small_model: model,
    enabled_providers: [PROVIDER_ID],
    // Rules are order-sensitive, the last match wins: allow everything first, then deny the
    // one tool that waits for a human answer. `ask` anywhere would block a headless run.
    permission: { "*": "allow", question: "deny", doom_loop: "allow", external_directory: "allow" },
    provider: {
      [PROVIDER_ID]: {
        npm: "@ai-sdk/openai-compatible",
        name: "Patchbay model gateway",
        options: {
          baseURL: input.modelBaseUrl,
          apiKey: input.modelToken,
          ...(input.chunkTimeoutMs ? { chunkTimeout: input.chunkTimeoutMs } : {}),
        },
        models: Object.fromEntries(
          [input.modelId, ...(input.extraModelIds ?? [])].map((id) => [
            id,
            {
              name: id,
              tool_call: true,
              attachment: false,
              modalities: {
                input: input.textOnlyModels?.includes(id) ? ["text"] : ["text", "image"],
                output: ["text"],
              },
              limit: { context: 200_000, output: 32_000 },
            },
          ]),
        ),
      },
    },
  };
}

/** Environment for `opencode serve`: only what it needs; never Patchbay's own environment. */
export function opencodeEnv(config: Record<string, unknown>, password: string): Record<string, string> {
  return {
    OPENCODE_CONFIG_CONTENT: JSON.stringify(config),
    OPENCODE_SERVER_PASSWORD: password,
    OPENCODE_SERVER_USERNAME: "opencode",
    // A repository's own opencode.json could add plugins or MCP servers that run code at
    // start-up, or loosen permissions: ignore it, the generated config is the whole config.
    OPENCODE_DISABLE_PROJECT_CONFIG: "1",
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    OPENCODE_DISABLE_AUTOUPDATE: "1",
    OPENCODE_DISABLE_SHARE: "1",
    OPENCODE_DISABLE_LSP_DOWNLOAD: "1",
    OPENCODE_DISABLE_CLAUDE_CODE: "1",
    OPENCODE_DISABLE_DEFAULT_PLUGINS: "1",
  };
}

/**
 * The tools a turn of this kind has. OpenCode stores a prompt's `tools` as the session's
 * permission rules (they outlast the prompt), so every turn names them: a code turn after a
 * plan turn on the same session must turn writing back on, or the plan's denials would stay.
 */
export function turnTools(kind: "code" | "plan"): Record<string, boolean> {
  return kind === "plan" ? PLAN_DISABLED_TOOLS : PLAN_ENABLED_TOOLS;
}

/** Tools turned off for read-only plan turns, so a plan can never touch the working tree. */
export const PLAN_DISABLED_TOOLS: Record<string, boolean> = {
  write: false,
  edit: false,
  patch: false,
  multiedit: false,
  bash: false,
  todowrite: false,
  task: false,
};

const PLAN_ENABLED_TOOLS: Record<string, boolean> = Object.fromEntries(
  Object.keys(PLAN_DISABLED_TOOLS).map((tool) => [tool, true]),
);
