/**
 * The REST API's types, generated from its OpenAPI document by openapi-typescript.
 * Do not edit: run `npm run client:generate` after changing a route or a schema.
 */
export interface paths {
  "/api/v1/coding-agent/runs": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * List recent runs
     * @description The caller's runs, newest first. `limit` 1–100 (default 20); pass `nextCursor` as `cursor` for the next page.
     */
    get: operations["getRuns"];
    put?: never;
    /**
     * Start a run
     * @description Starts a run: a sandbox with the repository checked out at `baseRef`, an OpenCode session in it, and the first turn on `prompt`. Answers 201 with the run (status `running`); follow it with `GET /runs/{id}` or `GET /runs/{id}/stream`. Unknown fields are refused. With `Idempotency-Key`, a repeated request with the same body answers the first run (header `Idempotency-Replayed: true`); with a different body it answers 409. With `attempts` (2–4) it starts that many sibling runs and answers the first, whose `group` names the group (`GET /groups/{id}`); the request is refused whole (429) when the siblings do not all fit under the active-run cap.
     */
    post: operations["postRuns"];
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/runs/{id}": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Get a run
     * @description Status, summary, changed paths, diff stats, usage and validation of a run. `?patch=1` adds `patch` (null until a turn has finished or when nothing changed); `?events=1` adds the event log; `?turns=1` the turns with their prompts; `?fullSummary=1` gives `summary` whole when `summaryTruncated` (cut at 16 KB). Poll until `status` is `idle` or terminal. Another owner's run answers 404.
     */
    get: operations["getRunsById"];
    put?: never;
    post?: never;
    /**
     * Delete a finished run
     * @description Deletes a finished run (completed, failed, cancelled, or idle with its session ended) for good: its record, turns, event log, patch, summary, secrets, its own webhook and its deliveries. Afterwards every route answers 404 for it. A run that is queued, running, or idle with its session open answers 409 `run_active`: cancel it or end its session first. Another owner's run answers 404. With `PATCHBAY_RETENTION_DAYS` set, finished runs are deleted the same way once that old.
     */
    delete: operations["deleteRunsById"];
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/runs/{id}/messages": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    get?: never;
    put?: never;
    /**
     * Send a follow-up, or end the session
     * @description `{prompt, publish?, limits?}` continues the live session of an `idle` run: same sandbox, same OpenCode session; answers **202** with the run, now `running`. If the run is terminal or its session expired, a chained run starts instead (new id, new sandbox, the prior patch applied and the prior prompts and summary in the prompt); answers **201** with the new run, whose `chainedFrom` is this run's id. `{endSession: true}` closes the session (kills the sandbox) and answers **200** with the run, now `completed`. A message to a `queued` or `running` run answers 409 with `Retry-After`; it is not queued. `limits` changes the run's limits (the fields named replace the run's): a run paused at a limit (`idle`, `error.code` `budget_exceeded`) continues once it is raised. `taskKind` switches the session's kind from this turn on: `code` after a plan turn approves the plan (`planApproval`) and turns writing tools on.
     */
    post: operations["postRunsByIdMessages"];
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/runs/{id}/stream": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Stream run events (SSE)
     * @description Server-Sent Events: `event: builder.event` (agent activity) and `event: run.status` (every status change, with the turn). Each frame's `id:` is the event id; `?after=ID` or the `Last-Event-ID` header (which wins) resumes exactly after that event. The stored log is replayed, then live events follow with no gap or duplicate. The stream stays open while the run is queued, running or idle and closes after a terminal status (a finished run replays and closes). A `: keepalive` comment is sent every 15 s. An event id past the end of the log answers 400 `event_not_found`.
     */
    get: operations["getRunsByIdStream"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/runs/{id}/cancel": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    get?: never;
    put?: never;
    /**
     * Cancel a run
     * @description Stops the agent and every process of the run before answering; the run becomes `cancelled` and keeps the patch it had. Cancelling a finished run answers it unchanged.
     */
    post: operations["postRunsByIdCancel"];
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/models": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Model catalog
     * @description Model ids a run may name in `modelId`, and the default. An empty list means any id is accepted.
     */
    get: operations["getModels"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/groups/{id}": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Get a group of attempts
     * @description The sibling runs one `POST /runs` with `attempts` started, with their current status. Once every sibling is idle or ended the group is `settled`; with `validationMode` `basic` or `tests` it is then ranked (validation passed first, then the smaller diff) and `bestRunId` names the best run, the only one that publishes. Another owner's group answers 404.
     */
    get: operations["getGroupsById"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/keys": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * List API keys
     * @description Every key, revoked ones included, without the keys themselves.
     */
    get: operations["getKeys"];
    put?: never;
    /**
     * Create an API key
     * @description Creates a key with `scopes` (default `read:builder`, `write:builder`). A key acts as its owner: keys of one owner see the same runs. Without `ownerId` the key belongs to the instance's owner (`PATCHBAY_LOCAL_OWNER`, default `local`); give another `ownerId` for another tenant, whose keys see only that tenant's runs. The key is in the answer once and is stored only as a hash.
     */
    post: operations["postKeys"];
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/keys/{id}": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    get?: never;
    put?: never;
    post?: never;
    /**
     * Revoke an API key
     * @description Revokes the key at once; requests with it answer 401 from then on. Revoking twice keeps the first time.
     */
    delete: operations["deleteKeysById"];
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/secrets": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * List secrets
     * @description The owner's stored secrets by name, with when each was created and last replaced; never a value.
     */
    get: operations["getSecrets"];
    put?: never;
    /**
     * Store a secret
     * @description Stores (or replaces) a secret of the key's owner under `name`, sealed at rest. Runs name it in `environment.secretNames`; their commands (setup, the agent's shell, validation) see it as an environment variable, and every text Patchbay shows has its value masked as `[secret:NAME]`. The value is never returned.
     */
    post: operations["postSecrets"];
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/secrets/{name}": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    get?: never;
    put?: never;
    post?: never;
    /**
     * Delete a secret
     * @description Deletes the stored secret. Runs that named it keep their own copy until their session ends; new runs naming it are refused with `secret_not_found`.
     */
    delete: operations["deleteSecretsByName"];
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/webhooks": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * List webhooks
     * @description The owner's webhooks; never a secret. Runs' own webhooks (`webhook` on a run) are shown on the run.
     */
    get: operations["getWebhooks"];
    put?: never;
    /**
     * Register a webhook
     * @description Registers an endpoint for every run of the key's owner. The URL must be `https://` (unless the server sets PATCHBAY_WEBHOOK_ALLOW_HTTP) and must not name a private, loopback or link-local address (unless PATCHBAY_WEBHOOK_ALLOW_PRIVATE); the resolved address is checked again at every delivery. Without `secret` one is generated and returned in this answer only. Each delivery is a POST of `{type, id, at, data}` signed per the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`); `type` is `run.status` (`data.run`: the run without patch or events, on every status change) or `turn.finished` (`data.run`, `turn`, `changedPaths`, `diffStats`). A receiver answers 2xx; anything else, or no answer within the timeout, is retried with backoff (in order per run, one at a time per endpoint).
     */
    post: operations["postWebhooks"];
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/webhooks/{id}": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    get?: never;
    put?: never;
    post?: never;
    /**
     * Delete a webhook
     * @description Deletes the webhook and its secret; deliveries still pending for it fail at their next attempt.
     */
    delete: operations["deleteWebhooksById"];
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/runs/{id}/deliveries": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Webhook deliveries of a run
     * @description Every webhook message of the run (to the run's own webhook and the owner's), oldest first, with each attempt: when, the status code, latency and error. Each delivery is a POST of `{type, id, at, data}` signed per the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`); `type` is `run.status` (`data.run`: the run without patch or events, on every status change) or `turn.finished` (`data.run`, `turn`, `changedPaths`, `diffStats`). A receiver answers 2xx; anything else, or no answer within the timeout, is retried with backoff (in order per run, one at a time per endpoint).
     */
    get: operations["getRunsByIdDeliveries"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/coding-agent/runs/{id}/deliveries/{deliveryId}/redeliver": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    get?: never;
    put?: never;
    /**
     * Redeliver a webhook message
     * @description Sends a delivered or failed message again, with the same `webhook-id` and body (a new signature and timestamp) and a new round of tries; a message still pending is answered as it is.
     */
    post: operations["postRunsByIdDeliveriesByDeliveryIdRedeliver"];
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/environments": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * List cached setup layers
     * @description Every layer the setup cache holds, least recently used first (the first to go when PATCHBAY_ENV_CACHE_MAX_BYTES is reached).
     */
    get: operations["getEnvironments"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/environments/{key}": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    get?: never;
    put?: never;
    post?: never;
    /**
     * Drop a cached setup layer
     * @description The next run with this key runs its setup again. A run restoring it at this moment keeps its copy.
     */
    delete: operations["deleteEnvironmentsByKey"];
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/owners/{owner}/limits": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Read an owner's daily cost cap
     * @description The owner's daily cost cap (null: none) and what its runs spent on models today (UTC).
     */
    get: operations["getOwnersByOwnerLimits"];
    /**
     * Set an owner's daily cost cap
     * @description Sets (or, with `dailyCostUsd: null`, removes) the most the owner's runs may spend on models per UTC day. Once today's spend reaches it, the gateway refuses the model calls of the owner's runs (they end `budget_exceeded` as their `limits.onExceeded` says) and new runs and messages are refused with 402 `budget_exceeded` until the next day or a higher cap.
     */
    put: operations["putOwnersByOwnerLimits"];
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/metrics": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Prometheus metrics
     * @description Runs by status, turn and start-up durations, model tokens and cost by model, gateway upstream errors, sessions, the warm pool, SSE subscribers, webhook deliveries.
     */
    get: operations["getMetrics"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/healthz": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Liveness
     * @description Answers 200 while the process serves HTTP.
     */
    get: operations["getHealthz"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/readyz": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * Readiness
     * @description Answers 200 when the engine accepts runs, 503 while starting or shutting down, or when the database (PATCHBAY_DATABASE_URL) does not answer (`storage_failed`, with the reason).
     */
    get: operations["getReadyz"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/openapi.json": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /** This API as OpenAPI 3.1 */
    get: operations["getOpenapiJson"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
  "/api/v1/docs": {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    /**
     * This API as an HTML page
     * @description A self-contained page rendering the OpenAPI document (no scripts, works offline).
     */
    get: operations["getDocs"];
    put?: never;
    post?: never;
    delete?: never;
    options?: never;
    head?: never;
    patch?: never;
    trace?: never;
  };
}
export type webhooks = Record<string, never>;
export interface components {
  schemas: {
    RunView: {
      /** @description Run id (`run_…`) */
      id: string;
      /**
       * @description `queued`, `running`, `idle` (the turn is over and the session is warm: results are ready and a message continues it; not terminal), `completed`, `failed` or `cancelled` (terminal)
       * @enum {string}
       */
      status: "queued" | "running" | "idle" | "completed" | "failed" | "cancelled";
      /** @description True while the run is idle and its session has not expired: a message continues the same session */
      sessionActive: boolean;
      /** @description When an idle session ends on its own (ISO 8601); null while no session is warm */
      sessionExpiresAt: string | null;
      /** @description True while the idle session is hibernated: its agent server is stopped (or its VM paused) with its files and history kept; a message wakes it and continues the same session */
      hibernated: boolean;
      /** @description Number of user turns on this run */
      turnCount: number;
      /** @description The repository: full name, owner, name and GitHub's id when known */
      repository: {
        /** @description `owner/name` */
        fullName: string;
        owner: string;
        name: string;
        /** @description GitHub's numeric repository id. Present when the server has GitHub credentials (GITHUB_TOKEN or a GitHub App) or has seen the id before; absent for a repository reached without them */
        id?: number;
      };
      /** @description The model the run uses */
      modelId: string;
      /**
       * @description `code` or `plan`: the kind of the current turn (or the next, while idle); a message may switch it
       * @enum {string}
       */
      taskKind: "code" | "plan";
      /** @description `pending` while a `requirePlanApproval` run's plan awaits a message with `taskKind: code`, `approved` after it; null for runs that did not ask for approval */
      planApproval: ("pending" | "approved") | null;
      /** @description The group of sibling attempts this run belongs to (`attempts` > 1); null for a run started alone */
      group: {
        /** @description The group's id (`grp_…`); `GET /groups/{id}` lists its runs */
        id: string;
        /** @description This run's attempt number, 1-based */
        attempt: number;
        /** @description How many sibling runs the group has */
        attempts: number;
      } | null;
      /** @description The ref the repository was checked out at, as requested; null for the default branch */
      baseRef: string | null;
      /** @description The commit the workspace was checked out at; null until the sandbox is ready */
      baseSha: string | null;
      /**
       * @description Which checks run after a turn
       * @enum {string}
       */
      validationMode: "basic" | "tests" | "minimal";
      /** @description Who pays for the model: `managed` (the server's key) or `openrouter` (the run's own key) */
      billing: {
        /** @enum {string} */
        mode: "managed" | "openrouter";
      };
      /** @description The agent's final text of the last turn, cut at 16 KB unless asked for whole (`?fullSummary=1`); null until a turn ends */
      summary: string | null;
      /** @description true when `summary` was cut (it ends with a `… [truncated N bytes]` marker) */
      summaryTruncated: boolean;
      /** @description Paths the run changed against its base */
      changedPaths: string[];
      /** @description Files, additions and deletions of the patch; null while there is none */
      diffStats: {
        files: number;
        additions: number;
        deletions: number;
      } | null;
      /** @description Unified diff against the base; only when asked for (`?patch=1`), null until a turn has finished */
      patch?: string | null;
      /** @description The run's whole event log; only when asked for (`?events=1`) */
      events?: (
        | {
            id: number;
            runId: string;
            at: string;
            turn: number;
            /** @constant */
            type: "builder.event";
            data:
              | {
                  /** @constant */
                  kind: "text";
                  text: string;
                }
              | {
                  /** @constant */
                  kind: "reasoning";
                  text: string;
                }
              | {
                  /** @constant */
                  kind: "tool";
                  tool: string;
                  callId: string;
                  /** @enum {string} */
                  status: "pending" | "running" | "completed" | "error";
                  title?: string;
                  input?: unknown;
                  output?: string;
                  error?: string;
                }
              | {
                  /** @constant */
                  kind: "file.edited";
                  path: string;
                }
              | {
                  /** @constant */
                  kind: "step";
                  /** @enum {string} */
                  phase: "start" | "finish";
                  reason?: string;
                  tokens?: {
                    input: number;
                    output: number;
                  };
                }
              | {
                  /** @constant */
                  kind: "error";
                  code: string;
                  message: string;
                }
              | {
                  /** @constant */
                  kind: "log";
                  message: string;
                }
              | {
                  /** @constant */
                  kind: "prompt.images";
                  images: {
                    mimeType: string;
                    bytes: number;
                    sha256: string;
                  }[];
                }
              | {
                  /** @constant */
                  kind: "setup.started";
                  commands: string[];
                }
              | {
                  /** @constant */
                  kind: "setup.cached";
                  key: string;
                }
              | {
                  /** @constant */
                  kind: "setup.finished";
                  /** @enum {string} */
                  status: "succeeded" | "cached" | "failed";
                  durationMs: number;
                  exitCode: number | null;
                }
              | {
                  /** @constant */
                  kind: "session.hibernated";
                  idleMs: number;
                }
              | {
                  /** @constant */
                  kind: "session.resumed";
                  wakeMs: number;
                  hibernatedMs?: number;
                };
          }
        | {
            id: number;
            runId: string;
            at: string;
            turn: number;
            /** @constant */
            type: "run.status";
            data: {
              /** @enum {string} */
              status: "queued" | "running" | "idle" | "completed" | "failed" | "cancelled";
              turn: number;
              error?: {
                code: string;
                message: string;
              };
              sessionExpiresAt?: string | null;
            };
          }
      )[];
      /** @description The run's turns, oldest first; only when asked for (`?turns=1`) */
      turns?: {
        /** @description The turn's number, from 1 */
        n: number;
        /** @description The prompt the turn was given (secrets masked) */
        prompt: string;
        /**
         * @description `code` or `plan`
         * @enum {string}
         */
        taskKind: "code" | "plan";
        /** @enum {string} */
        status: "running" | "done" | "failed" | "cancelled";
        /** @description The agent's final text of the turn; null until it ends */
        summary: string | null;
        error: {
          code: string;
          message: string;
        } | null;
        /** @description ISO 8601 */
        startedAt: string;
        /** @description ISO 8601; null while the turn runs */
        finishedAt: string | null;
      }[];
      /** @description Publishing settings and the last publish's outcome */
      publish: {
        /** @enum {string} */
        mode: "draft_pr" | "none";
        branch?: string;
        allowExistingBranch?: boolean;
        ownedBranch?: string;
        /** @enum {string} */
        status?: "pending" | "published" | "failed" | "skipped";
        error?: {
          code: string;
          message: string;
        };
      };
      /** @description The draft pull request when `publish.mode` is `draft_pr` and a publish succeeded; else null */
      draftPullRequest: {
        number: number;
        url: string;
        branch: string;
        headSha: string;
        base: string;
      } | null;
      /** @description The last turn's validation; null until it ran */
      validation: {
        /** @enum {string} */
        mode: "basic" | "tests" | "minimal";
        /** @enum {string} */
        status: "passed" | "failed" | "skipped";
        commands: {
          command: string;
          exitCode: number | null;
          durationMs: number;
          outputTail: string;
        }[];
      } | null;
      /** @description The environment's setup: run, restored from the cache, failed, or skipped (nothing to set up); null before the first turn reaches it */
      setup: {
        /** @enum {string} */
        status: "pending" | "running" | "succeeded" | "cached" | "failed" | "skipped";
        cached: boolean;
        key: string | null;
        durationMs: number | null;
        outputTail: string;
      } | null;
      /** @description The last turn's answer as a JSON value valid against its `outputSchema`; null when the turn had no schema or its answer stayed invalid (then `outputError` says why) */
      output: unknown;
      /** @description The validator's messages when the last turn's answer stayed invalid after its repair turn; null otherwise */
      outputError: string[] | null;
      /** @description Why the run or its last turn failed (`code`, `message`); null otherwise */
      error: {
        code: string;
        message: string;
      } | null;
      /** @description Model tokens, cost (reported by the upstream, else from the catalog's prices) and agent time over all turns. `costKnown` is false once a call's cost could not be known: then only token and time limits hold */
      usage: {
        inputTokens: number;
        outputTokens: number;
        costUsd?: number;
        costKnown?: boolean;
        durationMs?: number;
      };
      /** @description The run's spending limits (`usage` is measured against them); null when it has none. A limit reached ends the run `failed` with `budget_exceeded`, or pauses it `idle` with that error when `onExceeded` is `pause` */
      limits: {
        /** @description Input plus output tokens over all turns; model calls stop once reached */
        maxTokens?: number;
        /** @description Model cost in US dollars over all turns (the upstream's reported cost, else the catalog's prices); model calls stop once reached */
        maxCostUsd?: number;
        /** @description Time the agent spends working, over all turns; the turn is stopped once reached */
        maxDurationMs?: number;
        /**
         * @description `fail` (default): the run ends `failed` with `budget_exceeded`. `pause`: it goes `idle` with `error.code` `budget_exceeded` and its session warm; a message with raised `limits` continues it
         * @enum {string}
         */
        onExceeded?: "fail" | "pause";
      } | null;
      /** @description The run this one continues (a message to an ended or expired run starts a chained run); null otherwise */
      chainedFrom: string | null;
      /** @description The run's own webhook when it was started with one; `secret` only in the answer that started the run, when Patchbay generated it */
      webhook?: {
        /** @description Webhook id (`wh_…`) */
        id: string;
        url: string;
        /** @description The signing secret, only in the answer that created the webhook and only when Patchbay generated it */
        secret?: string;
      };
      /** @description ISO 8601 */
      createdAt: string;
      /** @description ISO 8601 */
      updatedAt: string;
      /** @description When the first turn started (ISO 8601) */
      startedAt: string | null;
      /** @description When the run reached a terminal status (ISO 8601); null before */
      finishedAt: string | null;
    };
    RunEvent:
      | {
          id: number;
          runId: string;
          at: string;
          turn: number;
          /** @constant */
          type: "builder.event";
          data:
            | {
                /** @constant */
                kind: "text";
                text: string;
              }
            | {
                /** @constant */
                kind: "reasoning";
                text: string;
              }
            | {
                /** @constant */
                kind: "tool";
                tool: string;
                callId: string;
                /** @enum {string} */
                status: "pending" | "running" | "completed" | "error";
                title?: string;
                input?: unknown;
                output?: string;
                error?: string;
              }
            | {
                /** @constant */
                kind: "file.edited";
                path: string;
              }
            | {
                /** @constant */
                kind: "step";
                /** @enum {string} */
                phase: "start" | "finish";
                reason?: string;
                tokens?: {
                  input: number;
                  output: number;
                };
              }
            | {
                /** @constant */
                kind: "error";
                code: string;
                message: string;
              }
            | {
                /** @constant */
                kind: "log";
                message: string;
              }
            | {
                /** @constant */
                kind: "prompt.images";
                images: {
                  mimeType: string;
                  bytes: number;
                  sha256: string;
                }[];
              }
            | {
                /** @constant */
                kind: "setup.started";
                commands: string[];
              }
            | {
                /** @constant */
                kind: "setup.cached";
                key: string;
              }
            | {
                /** @constant */
                kind: "setup.finished";
                /** @enum {string} */
                status: "succeeded" | "cached" | "failed";
                durationMs: number;
                exitCode: number | null;
              }
            | {
                /** @constant */
                kind: "session.hibernated";
                idleMs: number;
              }
            | {
                /** @constant */
                kind: "session.resumed";
                wakeMs: number;
                hibernatedMs?: number;
              };
        }
      | {
          id: number;
          runId: string;
          at: string;
          turn: number;
          /** @constant */
          type: "run.status";
          data: {
            /** @enum {string} */
            status: "queued" | "running" | "idle" | "completed" | "failed" | "cancelled";
            turn: number;
            error?: {
              code: string;
              message: string;
            };
            sessionExpiresAt?: string | null;
          };
        };
    /** @description One of `repository`, `repositoryFullName` or `repositoryId` is required. */
    CreateRunInput:
      | {
          repository?: string;
          repositoryFullName?: string;
          repositoryId?: string | number;
          prompt: string;
          modelId?: string;
          /**
           * @description `code` changes the repository; `plan` only answers with a plan
           * @default code
           * @enum {string}
           */
          taskKind: "code" | "plan";
          baseRef?: string;
          gitCheckoutRef?: string;
          /**
           * @description Which checks run after a turn: `basic`, `tests` or `minimal`
           * @default basic
           * @enum {string}
           */
          validationMode: "basic" | "tests" | "minimal";
          publish?: {
            /**
             * @description `draft_pr` pushes a branch and opens or updates a draft pull request
             * @default none
             * @enum {string}
             */
            mode: "draft_pr" | "none";
            branch?: string;
            /** @description Publish onto `branch` even when it already exists and Patchbay did not create it (default false: such a publish fails with branch_not_owned) */
            allowExistingBranch?: boolean;
          };
          /** @description `openRouterApiKey` is required when `mode` is `openrouter`. */
          billing?: {
            /**
             * @default managed
             * @enum {string}
             */
            mode: "managed" | "openrouter";
            openRouterApiKey?: string;
          };
          environment?: {
            setup?: {
              commands: string[];
              cache?: {
                key: string[];
                paths: string[];
              };
              timeoutMs?: number;
            };
            secrets?: {
              [key: string]: string;
            };
            secretNames?: string[];
            /** @enum {string} */
            network?: "open" | "model-only";
          };
          /** @description Spending limits of the run: tokens, cost, agent time, and what happens at one */
          limits?: {
            /** @description Input plus output tokens over all turns; model calls stop once reached */
            maxTokens?: number;
            /** @description Model cost in US dollars over all turns (the upstream's reported cost, else the catalog's prices); model calls stop once reached */
            maxCostUsd?: number;
            /** @description Time the agent spends working, over all turns; the turn is stopped once reached */
            maxDurationMs?: number;
            /**
             * @description `fail` (default): the run ends `failed` with `budget_exceeded`. `pause`: it goes `idle` with `error.code` `budget_exceeded` and its session warm; a message with raised `limits` continues it
             * @enum {string}
             */
            onExceeded?: "fail" | "pause";
          };
          /** @description A `code` run whose first turn is a plan turn (no writing tools); a message with `taskKind: code` approves the plan and continues the same session with writing tools on */
          requirePlanApproval?: boolean;
          /** @description Start this many sibling runs (1–4) from one request, each with the same `group`; with `validationMode` `basic` or `tests` the group ranks them and names its best run, and only the best publishes */
          attempts?: number;
          /** @description A signed webhook (Standard Webhooks) for this run's status changes and finished turns; see `POST /api/v1/webhooks` for every run */
          webhook?: {
            /** @description Absolute `https://` URL (`http://` only when the server allows it); private addresses are refused */
            url: string;
            /** @description `whsec_` + base64 of 24–64 bytes; generated (and returned once) when absent */
            secret?: string;
          };
          /** @description A JSON Schema (draft-07, or 2020-12 by its `$schema`; at most 64 KB) the turn's final answer must be valid against: the value lands in the run's `output` (null with `outputError` when the answer is still invalid after one repair turn) */
          outputSchema?: {
            [key: string]: unknown;
          };
          /** @description Images the model sees with the prompt (png, jpeg, gif, webp; at most 5, 10 MB each). A model the catalog marks text-only is refused (model_without_vision) */
          images?: {
            /** @description The image's bytes, base64 (no `data:` prefix); at most 10 MB decoded */
            data: string;
            /**
             * @description Must match the bytes (checked by their magic number)
             * @enum {string}
             */
            mimeType: "image/png" | "image/jpeg" | "image/gif" | "image/webp";
          }[];
        }
      | unknown
      | unknown
      | unknown;
    MessageInput: {
      prompt?: string;
      /**
       * @description Switch the warm session's task kind from this turn on: `code` after a plan turn approves the plan and turns writing tools on; `plan` makes the turn read-only. Default: the run's current kind
       * @enum {string}
       */
      taskKind?: "code" | "plan";
      publish?: {
        /**
         * @description Default: the run's current mode
         * @enum {string}
         */
        mode?: "draft_pr" | "none";
        branch?: string;
        /** @description Publish onto `branch` even when it already exists and Patchbay did not create it (default false: such a publish fails with branch_not_owned) */
        allowExistingBranch?: boolean;
      };
      /** @description `openRouterApiKey` is required when `mode` is `openrouter`. */
      billing?: {
        /**
         * @default managed
         * @enum {string}
         */
        mode: "managed" | "openrouter";
        openRouterApiKey?: string;
      };
      /** @description Changes the run's limits: the fields named replace the run's, the others stay (raise a limit to continue a paused run) */
      limits?: {
        /** @description Input plus output tokens over all turns; model calls stop once reached */
        maxTokens?: number;
        /** @description Model cost in US dollars over all turns (the upstream's reported cost, else the catalog's prices); model calls stop once reached */
        maxCostUsd?: number;
        /** @description Time the agent spends working, over all turns; the turn is stopped once reached */
        maxDurationMs?: number;
        /**
         * @description `fail` (default): the run ends `failed` with `budget_exceeded`. `pause`: it goes `idle` with `error.code` `budget_exceeded` and its session warm; a message with raised `limits` continues it
         * @enum {string}
         */
        onExceeded?: "fail" | "pause";
      };
      endSession?: boolean;
      /** @description A JSON Schema (draft-07, or 2020-12 by its `$schema`; at most 64 KB) the turn's final answer must be valid against: the value lands in the run's `output` (null with `outputError` when the answer is still invalid after one repair turn) */
      outputSchema?: {
        [key: string]: unknown;
      };
      /** @description Images the model sees with the prompt (png, jpeg, gif, webp; at most 5, 10 MB each). A model the catalog marks text-only is refused (model_without_vision) */
      images?: {
        /** @description The image's bytes, base64 (no `data:` prefix); at most 10 MB decoded */
        data: string;
        /**
         * @description Must match the bytes (checked by their magic number)
         * @enum {string}
         */
        mimeType: "image/png" | "image/jpeg" | "image/gif" | "image/webp";
      }[];
    };
    Error: {
      error: {
        code: string;
        message: string;
        details?: {
          [key: string]: unknown;
        };
      };
    };
  };
  responses: never;
  parameters: never;
  requestBodies: never;
  headers: never;
  pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
  getRuns: {
    parameters: {
      query?: {
        /** @description Page size, 1–100 (default 20) */
        limit?: number;
        /** @description `nextCursor` of the previous page */
        cursor?: string;
      };
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description A page of runs */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            runs: {
              /** @description Run id (`run_…`) */
              id: string;
              /**
               * @description `queued`, `running`, `idle` (the turn is over and the session is warm: results are ready and a message continues it; not terminal), `completed`, `failed` or `cancelled` (terminal)
               * @enum {string}
               */
              status: "queued" | "running" | "idle" | "completed" | "failed" | "cancelled";
              /** @description True while the run is idle and its session has not expired: a message continues the same session */
              sessionActive: boolean;
              /** @description When an idle session ends on its own (ISO 8601); null while no session is warm */
              sessionExpiresAt: string | null;
              /** @description True while the idle session is hibernated: its agent server is stopped (or its VM paused) with its files and history kept; a message wakes it and continues the same session */
              hibernated: boolean;
              /** @description Number of user turns on this run */
              turnCount: number;
              /** @description The repository: full name, owner, name and GitHub's id when known */
              repository: {
                /** @description `owner/name` */
                fullName: string;
                owner: string;
                name: string;
                /** @description GitHub's numeric repository id. Present when the server has GitHub credentials (GITHUB_TOKEN or a GitHub App) or has seen the id before; absent for a repository reached without them */
                id?: number;
              };
              /** @description The model the run uses */
              modelId: string;
              /**
               * @description `code` or `plan`: the kind of the current turn (or the next, while idle); a message may switch it
               * @enum {string}
               */
              taskKind: "code" | "plan";
              /** @description `pending` while a `requirePlanApproval` run's plan awaits a message with `taskKind: code`, `approved` after it; null for runs that did not ask for approval */
              planApproval: ("pending" | "approved") | null;
              /** @description The group of sibling attempts this run belongs to (`attempts` > 1); null for a run started alone */
              group: {
                /** @description The group's id (`grp_…`); `GET /groups/{id}` lists its runs */
                id: string;
                /** @description This run's attempt number, 1-based */
                attempt: number;
                /** @description How many sibling runs the group has */
                attempts: number;
              } | null;
              /** @description The ref the repository was checked out at, as requested; null for the default branch */
              baseRef: string | null;
              /** @description The commit the workspace was checked out at; null until the sandbox is ready */
              baseSha: string | null;
              /**
               * @description Which checks run after a turn
               * @enum {string}
               */
              validationMode: "basic" | "tests" | "minimal";
              /** @description Who pays for the model: `managed` (the server's key) or `openrouter` (the run's own key) */
              billing: {
                /** @enum {string} */
                mode: "managed" | "openrouter";
              };
              /** @description The agent's final text of the last turn, cut at 16 KB unless asked for whole (`?fullSummary=1`); null until a turn ends */
              summary: string | null;
              /** @description true when `summary` was cut (it ends with a `… [truncated N bytes]` marker) */
              summaryTruncated: boolean;
              /** @description Paths the run changed against its base */
              changedPaths: string[];
              /** @description Files, additions and deletions of the patch; null while there is none */
              diffStats: {
                files: number;
                additions: number;
                deletions: number;
              } | null;
              /** @description Unified diff against the base; only when asked for (`?patch=1`), null until a turn has finished */
              patch?: string | null;
              /** @description The run's whole event log; only when asked for (`?events=1`) */
              events?: (
                | {
                    id: number;
                    runId: string;
                    at: string;
                    turn: number;
                    /** @constant */
                    type: "builder.event";
                    data:
                      | {
                          /** @constant */
                          kind: "text";
                          text: string;
                        }
                      | {
                          /** @constant */
                          kind: "reasoning";
                          text: string;
                        }
                      | {
                          /** @constant */
                          kind: "tool";
                          tool: string;
                          callId: string;
                          /** @enum {string} */
                          status: "pending" | "running" | "completed" | "error";
                          title?: string;
                          input?: unknown;
                          output?: string;
                          error?: string;
                        }
                      | {
                          /** @constant */
                          kind: "file.edited";
                          path: string;
                        }
                      | {
                          /** @constant */
                          kind: "step";
                          /** @enum {string} */
                          phase: "start" | "finish";
                          reason?: string;
                          tokens?: {
                            input: number;
                            output: number;
                          };
                        }
                      | {
                          /** @constant */
                          kind: "error";
                          code: string;
                          message: string;
                        }
                      | {
                          /** @constant */
                          kind: "log";
                          message: string;
                        }
                      | {
                          /** @constant */
                          kind: "prompt.images";
                          images: {
                            mimeType: string;
                            bytes: number;
                            sha256: string;
                          }[];
                        }
                      | {
                          /** @constant */
                          kind: "setup.started";
                          commands: string[];
                        }
                      | {
                          /** @constant */
                          kind: "setup.cached";
                          key: string;
                        }
                      | {
                          /** @constant */
                          kind: "setup.finished";
                          /** @enum {string} */
                          status: "succeeded" | "cached" | "failed";
                          durationMs: number;
                          exitCode: number | null;
                        }
                      | {
                          /** @constant */
                          kind: "session.hibernated";
                          idleMs: number;
                        }
                      | {
                          /** @constant */
                          kind: "session.resumed";
                          wakeMs: number;
                          hibernatedMs?: number;
                        };
                  }
                | {
                    id: number;
                    runId: string;
                    at: string;
                    turn: number;
                    /** @constant */
                    type: "run.status";
                    data: {
                      /** @enum {string} */
                      status: "queued" | "running" | "idle" | "completed" | "failed" | "cancelled";
                      turn: number;
                      error?: {
                        code: string;
                        message: string;
                      };
                      sessionExpiresAt?: string | null;
                    };
                  }
              )[];
              /** @description The run's turns, oldest first; only when asked for (`?turns=1`) */
              turns?: {
                /** @description The turn's number, from 1 */
                n: number;
                /** @description The prompt the turn was given (secrets masked) */
                prompt: string;
                /**
                 * @description `code` or `plan`
                 * @enum {string}
                 */
                taskKind: "code" | "plan";
                /** @enum {string} */
                status: "running" | "done" | "failed" | "cancelled";
                /** @description The agent's final text of the turn; null until it ends */
                summary: string | null;
                error: {
                  code: string;
                  message: string;
                } | null;
                /** @description ISO 8601 */
                startedAt: string;
                /** @description ISO 8601; null while the turn runs */
                finishedAt: string | null;
              }[];
              /** @description Publishing settings and the last publish's outcome */
              publish: {
                /** @enum {string} */
                mode: "draft_pr" | "none";
                branch?: string;
                allowExistingBranch?: boolean;
                ownedBranch?: string;
                /** @enum {string} */
                status?: "pending" | "published" | "failed" | "skipped";
                error?: {
                  code: string;
                  message: string;
                };
              };
              /** @description The draft pull request when `publish.mode` is `draft_pr` and a publish succeeded; else null */
              draftPullRequest: {
                number: number;
                url: string;
                branch: string;
                headSha: string;
                base: string;
              } | null;
              /** @description The last turn's validation; null until it ran */
              validation: {
                /** @enum {string} */
                mode: "basic" | "tests" | "minimal";
                /** @enum {string} */
                status: "passed" | "failed" | "skipped";
                commands: {
                  command: string;
                  exitCode: number | null;
                  durationMs: number;
                  outputTail: string;
                }[];
              } | null;
              /** @description The environment's setup: run, restored from the cache, failed, or skipped (nothing to set up); null before the first turn reaches it */
              setup: {
                /** @enum {string} */
                status: "pending" | "running" | "succeeded" | "cached" | "failed" | "skipped";
                cached: boolean;
                key: string | null;
                durationMs: number | null;
                outputTail: string;
              } | null;
              /** @description The last turn's answer as a JSON value valid against its `outputSchema`; null when the turn had no schema or its answer stayed invalid (then `outputError` says why) */
              output: unknown;
              /** @description The validator's messages when the last turn's answer stayed invalid after its repair turn; null otherwise */
              outputError: string[] | null;
              /** @description Why the run or its last turn failed (`code`, `message`); null otherwise */
              error: {
                code: string;
                message: string;
              } | null;
              /** @description Model tokens, cost (reported by the upstream, else from the catalog's prices) and agent time over all turns. `costKnown` is false once a call's cost could not be known: then only token and time limits hold */
              usage: {
                inputTokens: number;
                outputTokens: number;
                costUsd?: number;
                costKnown?: boolean;
                durationMs?: number;
              };
              /** @description The run's spending limits (`usage` is measured against them); null when it has none. A limit reached ends the run `failed` with `budget_exceeded`, or pauses it `idle` with that error when `onExceeded` is `pause` */
              limits: {
                /** @description Input plus output tokens over all turns; model calls stop once reached */
                maxTokens?: number;
                /** @description Model cost in US dollars over all turns (the upstream's reported cost, else the catalog's prices); model calls stop once reached */
                maxCostUsd?: number;
                /** @description Time the agent spends working, over all turns; the turn is stopped once reached */
                maxDurationMs?: number;
                /**
                 * @description `fail` (default): the run ends `failed` with `budget_exceeded`. `pause`: it goes `idle` with `error.code` `budget_exceeded` and its session warm; a message with raised `limits` continues it
                 * @enum {string}
                 */
                onExceeded?: "fail" | "pause";
              } | null;
              /** @description The run this one continues (a message to an ended or expired run starts a chained run); null otherwise */
              chainedFrom: string | null;
              /** @description The run's own webhook when it was started with one; `secret` only in the answer that started the run, when Patchbay generated it */
              webhook?: {
                /** @description Webhook id (`wh_…`) */
                id: string;
                url: string;
                /** @description The signing secret, only in the answer that created the webhook and only when Patchbay generated it */
                secret?: string;
              };
              /** @description ISO 8601 */
              createdAt: string;
              /** @description ISO 8601 */
              updatedAt: string;
              /** @description When the first turn started (ISO 8601) */
              startedAt: string | null;
              /** @description When the run reached a terminal status (ISO 8601); null before */
              finishedAt: string | null;
            }[];
            nextCursor: string | null;
          };
        };
      };
      /** @description Invalid limit or cursor */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  postRuns: {
    parameters: {
      query?: never;
      header?: {
        /** @description Same key + same body from the same owner returns the first run instead of starting a second one */
        "Idempotency-Key"?: string;
      };
      path?: never;
      cookie?: never;
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["CreateRunInput"];
      };
    };
    responses: {
      /** @description The run was started */
      201: {
        headers: {
          /** @description URL of the run */
          Location?: string;
          /** @description true when an earlier run was returned */
          "Idempotency-Replayed"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["RunView"];
        };
      };
      /** @description Invalid body (the message names the field), unknown model, invalid ref, no usable model key, invalid_output_schema, invalid_image or model_without_vision */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description `budget_exceeded`: the owner's daily cost cap is spent for today */
      402: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Idempotency-Key reused with a different body */
      409: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body larger than 72 MB */
      413: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body is not application/json */
      415: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getRunsById: {
    parameters: {
      query?: {
        /** @description Include `patch` (unified diff against the base) when a turn has finished */
        patch?: "0" | "1" | "true" | "false";
        /** @description Include `events`, the run's whole event log */
        events?: "0" | "1" | "true" | "false";
        /** @description Include `turns`: each turn's prompt, kind, status and summary */
        turns?: "0" | "1" | "true" | "false";
        /** @description `summary` whole, however long (by default it is cut at 16 KB and `summaryTruncated` says so) */
        fullSummary?: "0" | "1" | "true" | "false";
      };
      header?: never;
      path: {
        /** @description Run id (`run_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The run */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["RunView"];
        };
      };
      /** @description Invalid query */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such run for this key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  deleteRunsById: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Run id (`run_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description Deleted */
      204: {
        headers: {
          [name: string]: unknown;
        };
        content?: never;
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such run for this key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description `run_active`: the run is queued, running, or idle with its session open */
      409: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  postRunsByIdMessages: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Run id (`run_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody: {
      content: {
        "application/json": components["schemas"]["MessageInput"];
      };
    };
    responses: {
      /** @description Session ended (`endSession`) */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["RunView"];
        };
      };
      /** @description A chained run was started (`chainedFrom` set) */
      201: {
        headers: {
          /** @description URL of the new run */
          Location?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["RunView"];
        };
      };
      /** @description The live session continues with a new turn */
      202: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["RunView"];
        };
      };
      /** @description Invalid body, invalid_output_schema, invalid_image or model_without_vision */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description `budget_exceeded`: the owner's daily cost cap is spent for today */
      402: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such run for this key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The run is busy with a turn */
      409: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body larger than 72 MB */
      413: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body is not application/json */
      415: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getRunsByIdStream: {
    parameters: {
      query?: {
        /** @description Resume after this event id (0 = from the start). `Last-Event-ID` wins when both are sent. */
        after?: number;
      };
      header?: {
        /** @description Resume after this event id */
        "Last-Event-ID"?: string;
      };
      path: {
        /** @description Run id (`run_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description An SSE stream; each `data:` is one RunEvent as JSON */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "text/event-stream": components["schemas"]["RunEvent"];
        };
      };
      /** @description Invalid cursor, or an event id that does not exist in this run (`event_not_found`) */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such run for this key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  postRunsByIdCancel: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Run id (`run_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: {
      content: {
        "application/json": Record<string, never>;
      };
    };
    responses: {
      /** @description The run, now cancelled (or already finished) */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["RunView"];
        };
      };
      /** @description A body with fields */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such run for this key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getModels: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The catalog */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            /** @description The model a run uses when it names no modelId */
            defaultModel: string;
            /** @description Allowed model ids; empty means any id the model provider serves is accepted */
            models: string[];
            /** @description Model ids that take no images (PATCHBAY_TEXT_ONLY_MODELS); every other model is assumed to see them */
            textOnlyModels: string[];
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit or active-run cap reached */
      429: {
        headers: {
          /** @description Seconds to wait */
          "Retry-After"?: string;
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getGroupsById: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Group id (`grp_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The group */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            /** @description Group id (`grp_…`) */
            id: string;
            /**
             * @description `running` while any sibling is queued or running; `settled` once every one was idle or ended (the ranking is then fixed)
             * @enum {string}
             */
            status: "running" | "settled";
            /** @description How many sibling runs the group has */
            attempts: number;
            /**
             * @description The siblings' validation mode; `minimal` groups are not ranked
             * @enum {string}
             */
            validationMode: "basic" | "tests" | "minimal";
            /** @description The best sibling once ranked: validation passed first, then the smaller diff; null while running, for `minimal` groups, or when every sibling failed */
            bestRunId: string | null;
            /** @description The siblings in attempt order */
            runs: {
              /** @description Run id */
              id: string;
              /** @description Attempt number, 1-based */
              attempt: number;
              /**
               * @description The run's current status
               * @enum {string}
               */
              status: "queued" | "running" | "idle" | "completed" | "failed" | "cancelled";
              /** @description 1 is best; null until the group is ranked */
              rank: number | null;
              /** @description The run's validation when the group settled; null when it had none (a failed turn) */
              validation: ("passed" | "failed" | "skipped") | null;
              /** @description Lines added plus deleted when ranked; null before */
              diffSize: number | null;
            }[];
            /** @description ISO 8601 */
            createdAt: string;
            /** @description When every sibling was idle or ended (ISO 8601); null before */
            settledAt: string | null;
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks read:builder */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such group for this key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getKeys: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The keys */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            keys: {
              id: string;
              name: string;
              ownerId: string;
              prefix: string;
              scopes: ("read:builder" | "write:builder" | "admin")[];
              repos?: string[];
              createdAt: string;
              revokedAt: string | null;
              lastUsedAt?: string | null;
            }[];
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  postKeys: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody: {
      content: {
        "application/json": {
          name: string;
          /** @description The user the key acts as (keys of one owner see the same runs); default the instance's owner, PATCHBAY_LOCAL_OWNER */
          ownerId?: string;
          scopes?: ("read:builder" | "write:builder" | "admin")[];
          repos?: string[];
        };
      };
    };
    responses: {
      /** @description The new key */
      201: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            key: string;
            apiKey: {
              id: string;
              name: string;
              ownerId: string;
              prefix: string;
              scopes: ("read:builder" | "write:builder" | "admin")[];
              repos?: string[];
              createdAt: string;
              revokedAt: string | null;
              lastUsedAt?: string | null;
            };
          };
        };
      };
      /** @description Invalid body */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body too large */
      413: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body is not application/json */
      415: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  deleteKeysById: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Key id (`key_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The revoked key */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            id: string;
            name: string;
            ownerId: string;
            prefix: string;
            scopes: ("read:builder" | "write:builder" | "admin")[];
            repos?: string[];
            createdAt: string;
            revokedAt: string | null;
            lastUsedAt?: string | null;
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getSecrets: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The secrets */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            secrets: {
              name: string;
              createdAt: string;
              updatedAt: string;
            }[];
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  postSecrets: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody: {
      content: {
        "application/json": {
          name: string;
          value: string;
        };
      };
    };
    responses: {
      /** @description The secret's name and times */
      201: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            name: string;
            createdAt: string;
            updatedAt: string;
          };
        };
      };
      /** @description Invalid body */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body too large */
      413: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body is not application/json */
      415: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  deleteSecretsByName: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description The secret's name */
        name: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description Deleted */
      204: {
        headers: {
          [name: string]: unknown;
        };
        content?: never;
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No stored secret of that name */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getWebhooks: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The webhooks */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            webhooks: {
              /** @description Webhook id (`wh_…`) */
              id: string;
              url: string;
              events: ("run.status" | "turn.finished")[];
              createdAt: string;
              /** @description The signing secret, only in the answer that created the webhook and only when Patchbay generated it */
              secret?: string;
            }[];
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  postWebhooks: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody: {
      content: {
        "application/json": {
          /** @description Absolute `https://` URL (`http://` only when the server allows it); private addresses are refused */
          url: string;
          /** @description `whsec_` + base64 of 24–64 bytes; generated (and returned once) when absent */
          secret?: string;
          /** @description Event types to receive; default all (`run.status`, `turn.finished`) */
          events?: ("run.status" | "turn.finished")[];
        };
      };
    };
    responses: {
      /** @description The webhook; `secret` when it was generated */
      201: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            /** @description Webhook id (`wh_…`) */
            id: string;
            url: string;
            events: ("run.status" | "turn.finished")[];
            createdAt: string;
            /** @description The signing secret, only in the answer that created the webhook and only when Patchbay generated it */
            secret?: string;
          };
        };
      };
      /** @description Invalid body, or a URL that may not be a webhook (`invalid_webhook_url`) */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body too large */
      413: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body is not application/json */
      415: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  deleteWebhooksById: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Webhook id (`wh_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description Deleted */
      204: {
        headers: {
          [name: string]: unknown;
        };
        content?: never;
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No webhook of this owner with that id */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getRunsByIdDeliveries: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Run id (`run_…`) */
        id: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The delivery log */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            deliveries: {
              /** @description Delivery id, also the `webhook-id` header of every attempt */
              id: string;
              runId: string;
              webhookId: string;
              url: string;
              seq: number;
              /** @enum {string} */
              type: "run.status" | "turn.finished";
              /**
               * @description `pending` (tries left), `delivered` (a 2xx came) or `failed` (tries exhausted)
               * @enum {string}
               */
              status: "pending" | "delivered" | "failed";
              attempts: {
                /** @description 1 for the first try */
                attempt: number;
                /** @description When the attempt started (ISO 8601) */
                at: string;
                /** @description The receiver's HTTP status; null when none came */
                statusCode: number | null;
                latencyMs: number;
                /** @description Why the attempt failed when there was no 2xx answer */
                error?: string;
              }[];
              /** @description When the next try is due; null once settled */
              nextAttemptAt: string | null;
              createdAt: string;
            }[];
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such run for this key */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  postRunsByIdDeliveriesByDeliveryIdRedeliver: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Run id (`run_…`) */
        id: string;
        /** @description Delivery id (`msg_…`), the `webhook-id` header */
        deliveryId: string;
      };
      cookie?: never;
    };
    requestBody?: {
      content: {
        "application/json": Record<string, never>;
      };
    };
    responses: {
      /** @description The delivery, pending again */
      202: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            /** @description Delivery id, also the `webhook-id` header of every attempt */
            id: string;
            runId: string;
            webhookId: string;
            url: string;
            seq: number;
            /** @enum {string} */
            type: "run.status" | "turn.finished";
            /**
             * @description `pending` (tries left), `delivered` (a 2xx came) or `failed` (tries exhausted)
             * @enum {string}
             */
            status: "pending" | "delivered" | "failed";
            attempts: {
              /** @description 1 for the first try */
              attempt: number;
              /** @description When the attempt started (ISO 8601) */
              at: string;
              /** @description The receiver's HTTP status; null when none came */
              statusCode: number | null;
              latencyMs: number;
              /** @description Why the attempt failed when there was no 2xx answer */
              error?: string;
            }[];
            /** @description When the next try is due; null once settled */
            nextAttemptAt: string | null;
            createdAt: string;
          };
        };
      };
      /** @description A body with fields */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such run for this key, or no such delivery of the run */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getEnvironments: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The layers */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            environments: {
              /** @description The cache key (`setup.key` on the runs that used it) */
              key: string;
              /** @description Size of an archive layer; null for a snapshot (the sandbox provider keeps it) */
              bytes: number | null;
              /** @description When a run last saved or restored it */
              lastUsedAt: string;
              /**
               * @description `archive`: a tar in the data dir (local, bwrap); `snapshot`: an E2B snapshot later VMs start from (e2b)
               * @enum {string}
               */
              storage: "archive" | "snapshot";
            }[];
          };
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  deleteEnvironmentsByKey: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Cache key */
        key: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description Dropped */
      204: {
        headers: {
          [name: string]: unknown;
        };
        content?: never;
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description No such layer */
      404: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getOwnersByOwnerLimits: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Owner id (a key's `ownerId`) */
        owner: string;
      };
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The cap and today's spend */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            ownerId: string;
            /** @description The daily cost cap in US dollars; null: none */
            dailyCostUsd: number | null;
            /** @description The UTC day `spentTodayUsd` is for (`YYYY-MM-DD`) */
            day: string;
            /** @description Model cost of the owner's runs on `day` (calls whose cost was known) */
            spentTodayUsd: number;
          };
        };
      };
      /** @description Invalid owner id */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  putOwnersByOwnerLimits: {
    parameters: {
      query?: never;
      header?: never;
      path: {
        /** @description Owner id (a key's `ownerId`) */
        owner: string;
      };
      cookie?: never;
    };
    requestBody: {
      content: {
        "application/json": {
          /** @description Most the owner's runs may spend on models per UTC day, in US dollars (0 stops them all); null removes the cap */
          dailyCostUsd: number | null;
        };
      };
    };
    responses: {
      /** @description The cap and today's spend */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            ownerId: string;
            /** @description The daily cost cap in US dollars; null: none */
            dailyCostUsd: number | null;
            /** @description The UTC day `spentTodayUsd` is for (`YYYY-MM-DD`) */
            day: string;
            /** @description Model cost of the owner's runs on `day` (calls whose cost was known) */
            spentTodayUsd: number;
          };
        };
      };
      /** @description Invalid body */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body too large */
      413: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Body is not application/json */
      415: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getMetrics: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The Prometheus text format */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "text/plain": string;
        };
      };
      /** @description Missing, invalid or revoked API key */
      401: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description The key lacks the admin scope */
      403: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Rate limit reached */
      429: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getHealthz: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description Alive */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            /** @constant */
            ok: true;
          };
        };
      };
      /** @description Unknown query parameter */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getReadyz: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description Ready */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            /** @constant */
            ready: true;
          };
        };
      };
      /** @description Unknown query parameter */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
      /** @description Not ready */
      503: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getOpenapiJson: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description The OpenAPI document */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": {
            [key: string]: unknown;
          };
        };
      };
      /** @description Unknown query parameter */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
  getDocs: {
    parameters: {
      query?: never;
      header?: never;
      path?: never;
      cookie?: never;
    };
    requestBody?: never;
    responses: {
      /** @description HTML */
      200: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "text/html": string;
        };
      };
      /** @description Unknown query parameter */
      400: {
        headers: {
          [name: string]: unknown;
        };
        content: {
          "application/json": components["schemas"]["Error"];
        };
      };
    };
  };
}
