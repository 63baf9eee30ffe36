/**
 * The engine's one error type. Every failure a caller may need to tell apart carries a
 * literal `code`; each front maps codes to its own shape once (HTTP status, MCP tool error).
 */

export const ERROR_CODES = [
  // request problems
  "invalid_request",
  "invalid_repository",
  "invalid_ref",
  "model_not_allowed",
  "prompt_too_long",
  /** `environment.network` asks for a policy this server's sandbox cannot enforce (model-only on local). */
  "unsupported_network_policy",
  /** A webhook URL that is not an absolute https URL (http when allowed), or names a private address. */
  "invalid_webhook_url",
  /** `outputSchema` is not a JSON Schema the validator compiles, or is over 64 KB. */
  "invalid_output_schema",
  /** An image's bytes are not what its `mimeType` says (magic number), not base64, or over 10 MB. */
  "invalid_image",
  /** Images sent to a model the catalog marks text-only (PATCHBAY_TEXT_ONLY_MODELS). */
  "model_without_vision",
  // lookups
  "run_not_found",
  "group_not_found",
  "repository_not_found",
  "event_not_found",
  "key_not_found",
  /** `environment.secretNames` (or DELETE /secrets/{name}) names a secret the owner has not stored. */
  "secret_not_found",
  /** No setup cache layer has that key. */
  "environment_not_found",
  /** No webhook of the caller's with that id. */
  "webhook_not_found",
  /** The run has no webhook delivery with that id. */
  "delivery_not_found",
  // state conflicts
  "session_busy",
  "session_ended",
  /** DELETE of a run that is queued, running, or idle with its session open: cancel it or end its session first. */
  "run_active",
  "idempotency_conflict",
  // auth and limits
  "unauthorized",
  "forbidden",
  /** The API key's repository allow-list does not cover the run's repository. */
  "repository_not_allowed",
  "rate_limited",
  "too_many_active_runs",
  /** The key's owner has PATCHBAY_MAX_STREAMS_PER_KEY follows of run logs open (SSE, MCP waits). */
  "too_many_streams",
  "shutting_down",
  // run failures (recorded on the run as error.code)
  "clone_failed",
  "sandbox_failed",
  "agent_failed",
  "agent_crashed",
  "model_error",
  "no_model_key",
  "turn_timeout",
  "cancelled",
  "server_restart",
  "publish_failed",
  "publish_not_configured",
  /**
   * A run reached one of its `limits` or its owner's daily cost cap (recorded on the run), or
   * a new run was refused because the owner's daily cap is spent.
   */
  "budget_exceeded",
  /** The run's setup (its environment's install step) failed or timed out; its output tail is on `setup`. */
  "setup_failed",
  // GitHub (repository access and publishing)
  "repository_not_installed",
  "permission_denied",
  "branch_protected",
  /** publish.branch exists on the remote and Patchbay did not create it (opt in with publish.allowExistingBranch). */
  "branch_not_owned",
  /** The changes touch `.github/workflows/` and the server does not allow that (PATCHBAY_PUBLISH_ALLOW_WORKFLOWS). */
  "workflow_change_refused",
  "pr_exists",
  "github_rate_limited",
  "internal",
  // infrastructure
  "store_locked",
  /**
   * The data dir refused a write (disk full, read-only, gone), or the database
   * (PATCHBAY_DATABASE_URL) does not answer.
   */
  "storage_failed",
  /**
   * Replicas: this replica stalled past its lease on the run and another took the run over;
   * the write was refused (nothing written) and the run's session here is being stopped.
   */
  "lease_lost",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Thrown by the engine for every failure a caller can act on. */
export class EngineError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "EngineError";
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) };
  }
}

export function isEngineError(e: unknown): e is EngineError {
  return e instanceof EngineError;
}

/** Wrap anything thrown into an EngineError, keeping an EngineError as it is. */
export function toEngineError(e: unknown, fallback: ErrorCode = "internal"): EngineError {
  if (e instanceof EngineError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new EngineError(fallback, message);
}
