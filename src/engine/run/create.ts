/**
 * Creating runs: the checks a run must pass before it exists (repository reachable, model in
 * the catalog, ref well-formed, publishing possible, a model key to bill), idempotent
 * creation, and what a chained run (a message to an ended run) starts from.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Config } from "../../config.ts";
import { EngineError } from "../errors.ts";
import { createHostGit, validateRef } from "../git/git.ts";
import type { RepositoryAccess } from "../github/access.ts";
import { repositoryAllowed } from "../keys/allow-list.ts";
import { publishBranch, type Publisher } from "../publish/publish.ts";
import { assertNetworkConfig, runNetworkPolicy } from "../environment/network.ts";
import type { RunSecrets } from "../environment/secrets.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { RunStore } from "../store/store.ts";
import { MODEL_KEY_SECRET } from "./grant.ts";
import { mergePublish } from "./message.ts";
import type { CreateRunInput, MessageInput, RunRecord, TurnRecord } from "./schema.ts";
import type { RunWriter } from "./writer.ts";

export function newRunId(): string {
  // Time-prefixed so ids sort roughly by creation; random tail so they cannot be guessed.
  return `run_${Date.now().toString(36)}${randomBytes(9).toString("base64url").replace(/[-_]/g, "x")}`;
}

export interface RunFactory {
  /** Check the input and store the run as `queued` (with its `run.status` event). */
  create(
    ownerId: string,
    input: CreateRunInput,
    extra?: {
      chainedFrom?: RunRecord;
      idempotencyKey?: string;
      /** The caller key's repository allow-list (`owner/name`, `owner/*`); absent: any. */
      allowedRepositories?: readonly string[];
    },
  ): Promise<RunRecord>;
  /**
   * The run an earlier request with this Idempotency-Key made (undefined when none); throws
   * idempotency_conflict when that request's body differed.
   */
  replay(ownerId: string, idempotencyKey: string, input: CreateRunInput): Promise<RunRecord | undefined>;
  /** What a message to an ended or expired run starts: the prior run's settings and a prompt carrying its history. */
  chained(prior: RunRecord, turns: TurnRecord[], input: MessageInput): { input: CreateRunInput; prompt: string };
}

export interface RunFactoryDeps {
  config: Config;
  store: RunStore;
  secrets: SecretBox;
  /** The run's environment secrets: checked and read before the run exists, sealed once it does. */
  environment: RunSecrets;
  /** The sandbox provider runs get (the one that enforces their network policy). */
  sandbox: Config["sandbox"];
  repositories: RepositoryAccess;
  publisher: Publisher;
  writer: RunWriter;
  now: () => Date;
}

export function createRunFactory(deps: RunFactoryDeps): RunFactory {
  const { config, store, repositories, publisher } = deps;
  const network = { ...config, sandbox: deps.sandbox };
  assertNetworkConfig(network);
  /** Host git, used only for checks that need no repository (ref syntax). */
  const hostGit = createHostGit({ path: config.hostPath, proxyEnv: config.hostProxyEnv });

  function resolveModel(modelId: string | undefined): string {
    const id = modelId ?? config.defaultModel;
    if (config.models.length && !config.models.includes(id)) {
      throw new EngineError("model_not_allowed", `model ${id} is not in this server's catalog`, {
        allowed: config.models,
      });
    }
    return id;
  }

  function checkAllowed(allowed: readonly string[] | undefined, fullName: string): void {
    if (!repositoryAllowed(allowed, fullName)) {
      throw new EngineError("repository_not_allowed", `this API key may not start runs on ${fullName}`, {
        repository: fullName,
        allowed,
      });
    }
  }

  return {
    async create(ownerId, input, extra = {}) {
      // Before any sandbox exists: which repository, reachable with this server's credentials
      // (a repository on no App installation is refused here, as repository_not_installed).
      const fullName = input.repository ?? input.repositoryFullName;
      // Checked before resolving too, so a key never learns what lies outside its list.
      if (fullName) checkAllowed(extra.allowedRepositories, fullName);
      const resolved = await repositories.resolve(fullName ? { fullName } : { id: String(input.repositoryId) });
      const repository = resolved.ref;
      checkAllowed(extra.allowedRepositories, repository.fullName);
      const modelId = resolveModel(input.modelId);
      const ref = input.baseRef ?? input.gitCheckoutRef;
      if (ref) await validateRef(hostGit, ref);
      if (input.publish?.mode === "draft_pr") {
        await publisher.check({
          repository,
          ...(input.publish.branch ? { branch: input.publish.branch } : {}),
          ...(resolved.defaultBranch ? { defaultBranch: resolved.defaultBranch } : {}),
          ...(ref ? { baseRef: ref } : {}),
        });
      }
      const billingMode = input.billing?.mode ?? "managed";
      if (billingMode === "managed" && !config.openrouterApiKey) {
        throw new EngineError(
          "no_model_key",
          "managed billing needs OPENROUTER_API_KEY on the server; set it, or pass billing.mode openrouter with openRouterApiKey",
        );
      }
      const policy = runNetworkPolicy(network, input.environment?.network);
      // Values in hand from here until they are sealed under the run's id below.
      const secrets = await deps.environment.resolve(ownerId, input.environment);
      const storedSecretNames = input.environment?.secretNames ?? [];
      const t = deps.now().toISOString();
      const run: RunRecord = {
        id: newRunId(),
        ownerId,
        status: "queued",
        repository,
        modelId,
        taskKind: input.taskKind ?? "code",
        ...(ref ? { baseRef: ref } : {}),
        validationMode: input.validationMode ?? "basic",
        publish: {
          mode: input.publish?.mode ?? "none",
          ...(input.publish?.branch ? { branch: input.publish.branch } : {}),
          ...(input.publish?.allowExistingBranch ? { allowExistingBranch: true } : {}),
          // A chained run continues its prior's branch, which Patchbay created for that chain.
          ...(extra.chainedFrom
            ? { ownedBranch: extra.chainedFrom.publish.ownedBranch ?? publishBranch(extra.chainedFrom.id) }
            : {}),
        },
        billingMode,
        turnCount: 0,
        sessionExpiresAt: null,
        summary: null,
        changedPaths: [],
        diffStats: null,
        hasPatch: false,
        draftPullRequest: null,
        validation: null,
        error: null,
        usage: { inputTokens: 0, outputTokens: 0 },
        chainedFrom: extra.chainedFrom?.id ?? null,
        environment: {
          ...(input.environment?.setup ? { setup: input.environment.setup } : {}),
          secretNames: secrets.entries.map((e) => e.name),
          ...(storedSecretNames.length ? { storedSecretNames } : {}),
          network: policy,
        },
        setup: null,
        ...(input.outputSchema ? { outputSchema: input.outputSchema } : {}),
        output: null,
        outputError: null,
        ...(extra.idempotencyKey
          ? { idempotencyKey: extra.idempotencyKey, idempotencyHash: idempotencyHash(input) }
          : {}),
        createdAt: t,
        updatedAt: t,
        startedAt: null,
        finishedAt: null,
      };
      await store.createRun(run);
      await deps.environment.seal(run.id, secrets);
      if (billingMode === "openrouter") {
        await store.putSecret(deps.secrets.seal(run.id, MODEL_KEY_SECRET, input.billing!.openRouterApiKey!));
      }
      await deps.writer.emit(run.id, { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } });
      return run;
    },

    async replay(ownerId, idempotencyKey, input) {
      const existing = await store.findRunByIdempotencyKey(ownerId, idempotencyKey);
      if (existing && existing.idempotencyHash !== idempotencyHash(input)) {
        throw new EngineError("idempotency_conflict", "this Idempotency-Key was used with a different body");
      }
      return existing;
    },

    chained(prior, turns, message) {
      // The message's publish changes the prior run's settings; what it leaves out carries over.
      const publish = message.publish ? mergePublish(prior.publish, message.publish) : prior.publish;
      const input: CreateRunInput = {
        repository: prior.repository.fullName,
        prompt: message.prompt!,
        modelId: prior.modelId,
        taskKind: prior.taskKind,
        ...(prior.baseRef ? { baseRef: prior.baseRef } : {}),
        validationMode: prior.validationMode,
        publish: {
          mode: publish.mode,
          ...(publish.branch ? { branch: publish.branch } : {}),
          ...(publish.allowExistingBranch ? { allowExistingBranch: true } : {}),
        },
        billing: chainedBilling(prior, message),
        // The run's own secrets ended with its session (as its model key did); stored ones are named again.
        ...(prior.environment ? { environment: chainedEnvironment(prior.environment) } : {}),
        // The run's schema carries over; a message's own is for its turn only (a turn input).
        ...(prior.outputSchema ? { outputSchema: prior.outputSchema } : {}),
      };
      return { input, prompt: chainedPrompt(prior, turns, message.prompt!) };
    },
  };
}

/**
 * A chained run is billed as its prior run was, never switched to the server's key. A run's
 * own OpenRouter key is forgotten when its session ends, so such a run continues only with a
 * key on the message.
 */
function chainedBilling(prior: RunRecord, message: MessageInput): NonNullable<CreateRunInput["billing"]> {
  if (message.billing) return message.billing;
  if (prior.billingMode === "managed") return { mode: "managed" };
  throw new EngineError(
    "no_model_key",
    "this run was billed to its own OpenRouter key, which is forgotten when a session ends; send billing {mode: openrouter, openRouterApiKey} with the message",
  );
}

function chainedEnvironment(prior: NonNullable<RunRecord["environment"]>): NonNullable<CreateRunInput["environment"]> {
  return {
    ...(prior.setup ? { setup: prior.setup } : {}),
    ...(prior.storedSecretNames?.length ? { secretNames: prior.storedSecretNames } : {}),
    network: prior.network,
  };
}

function idempotencyHash(input: CreateRunInput): string {
  return createHash("sha256").update(JSON.stringify(input)).digest("hex");
}

function chainedPrompt(prior: RunRecord, turns: { prompt: string }[], prompt: string): string {
  const history = turns.map((t, i) => `${i + 1}. ${t.prompt}`).join("\n");
  return [
    `You are continuing earlier work on ${prior.repository.fullName} (run ${prior.id}).`,
    `Earlier requests:\n${history}`,
    prior.summary ? `Summary of that work:\n${prior.summary}` : "",
    prior.hasPatch ? "The changes from that work are already applied in the working tree." : "",
    `New request:\n${prompt}`,
  ]
    .filter(Boolean)
    .join("\n\n");
}
