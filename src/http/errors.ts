/**
 * The one place that turns failures into HTTP answers. Every error leaves as
 * `{"error": {"code", "message", "details?"}}` with the status its code maps to; a stack
 * never leaves the process, and bad input never answers 500.
 */
import type { ErrorRequestHandler, Response } from "express";
import * as z from "zod";
import { isEngineError, type ErrorCode, type Logger } from "../engine/index.ts";

/** Codes the HTTP layer answers with on its own (before the engine is reached). */
export type HttpOnlyCode =
  "invalid_json" | "payload_too_large" | "unsupported_media_type" | "not_found" | "method_not_allowed" | "csrf_failed";

export type HttpErrorCode = ErrorCode | HttpOnlyCode;

/** The error body every failing route answers with; also the OpenAPI `Error` schema. */
export const ErrorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

const STATUS: Record<HttpErrorCode, number> = {
  invalid_request: 400,
  invalid_repository: 400,
  invalid_ref: 400,
  model_not_allowed: 400,
  prompt_too_long: 400,
  unsupported_network_policy: 400,
  invalid_webhook_url: 400,
  invalid_output_schema: 400,
  invalid_image: 400,
  model_without_vision: 400,
  // Named at run creation: the request is what is wrong (the route for one secret answers 404 itself).
  secret_not_found: 400,
  // A cursor past the end of the log is a bad request, not a missing resource: the run exists.
  event_not_found: 400,
  // The client can fix it (switch to billing.mode openrouter), so it is theirs to act on.
  no_model_key: 400,
  publish_not_configured: 400,
  invalid_json: 400,
  unauthorized: 401,
  forbidden: 403,
  // A dashboard session's write without its CSRF token.
  csrf_failed: 403,
  run_not_found: 404,
  group_not_found: 404,
  repository_not_found: 404,
  key_not_found: 404,
  environment_not_found: 404,
  webhook_not_found: 404,
  delivery_not_found: 404,
  not_found: 404,
  method_not_allowed: 405,
  session_busy: 409,
  session_ended: 409,
  run_active: 409,
  idempotency_conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  too_many_active_runs: 429,
  too_many_streams: 429,
  // Publishing (draft PRs) is recorded on the run; these answer only if a front ever throws them.
  repository_not_installed: 400,
  permission_denied: 403,
  repository_not_allowed: 403,
  branch_protected: 409,
  branch_not_owned: 409,
  workflow_change_refused: 403,
  pr_exists: 409,
  github_rate_limited: 503,
  clone_failed: 502,
  model_error: 502,
  publish_failed: 502,
  shutting_down: 503,
  store_locked: 503,
  storage_failed: 503,
  // Another replica took the run over; retried, the request reaches the run's new owner.
  lease_lost: 503,
  sandbox_failed: 503,
  agent_failed: 500,
  // The repository's own setup failed: its output tail is on the run.
  setup_failed: 422,
  // Starting a run while the owner's daily cost cap is spent (on a run it is recorded as error.code).
  budget_exceeded: 402,
  agent_crashed: 500,
  turn_timeout: 504,
  cancelled: 409,
  server_restart: 503,
  internal: 500,
};

/** The HTTP status for an error code. */
export function statusFor(code: HttpErrorCode): number {
  return STATUS[code] ?? 500;
}

/** Thrown inside the HTTP layer for failures that never reach the engine. */
export class HttpError extends Error {
  constructor(
    readonly code: HttpErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
    /** Seconds for a `Retry-After` header (409 busy, 429). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** Write an error answer. Also sets `Retry-After` when the error says when to come back. */
export function sendError(
  res: Response,
  code: HttpErrorCode,
  message: string,
  details?: Record<string, unknown>,
  retryAfterSeconds?: number,
): void {
  if (res.headersSent) {
    // Mid-stream (SSE) there is no status left to set; end the response instead of corrupting it.
    res.end();
    return;
  }
  if (code === "unauthorized") res.setHeader("WWW-Authenticate", 'Bearer realm="patchbay"');
  if (retryAfterSeconds !== undefined) res.setHeader("Retry-After", String(Math.max(1, Math.ceil(retryAfterSeconds))));
  res.status(statusFor(code)).json({ error: { code, message, ...(details ? { details } : {}) } } satisfies ErrorBody);
}

/** body-parser marks its failures with `type`; map them to client errors. */
const BODY_PARSER_ERRORS: Record<string, [HttpErrorCode, string]> = {
  "entity.parse.failed": ["invalid_json", "the request body is not valid JSON"],
  "entity.too.large": ["payload_too_large", "the request body is too large"],
  "encoding.unsupported": ["unsupported_media_type", "the request body's content encoding is not supported"],
  "charset.unsupported": ["unsupported_media_type", "the request body's charset is not supported"],
  "request.size.invalid": ["invalid_request", "the request body's length does not match Content-Length"],
  "request.aborted": ["invalid_request", "the request was aborted"],
  "stream.encoding.set": ["invalid_request", "the request stream could not be read"],
  "parameters.too.many": ["invalid_request", "too many parameters"],
};

/** The express error middleware: the last `app.use` of the app. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    if (err instanceof HttpError) return sendError(res, err.code, err.message, err.details, err.retryAfterSeconds);
    if (isEngineError(err)) {
      const retry = typeof err.details?.retryAfterSeconds === "number" ? err.details.retryAfterSeconds : undefined;
      const status = statusFor(err.code);
      if (status >= 500)
        log.error("request failed", { method: req.method, path: req.path, code: err.code, message: err.message });
      return sendError(
        res,
        err.code,
        err.message,
        err.details,
        retry ?? (status === 409 && err.code === "session_busy" ? 5 : undefined),
      );
    }
    const type =
      typeof err === "object" && err !== null && "type" in err ? String((err as { type: unknown }).type) : undefined;
    const mapped = type ? BODY_PARSER_ERRORS[type] : undefined;
    if (mapped) return sendError(res, mapped[0], mapped[1]);
    // Anything else with a 4xx status from a library (e.g. a malformed URI) stays a client error.
    const status =
      typeof err === "object" && err !== null && "status" in err ? Number((err as { status: unknown }).status) : NaN;
    if (status >= 400 && status < 500) return sendError(res, "invalid_request", "the request could not be understood");
    log.error("unhandled error", { method: req.method, path: req.path, error: err });
    sendError(res, "internal", "internal error");
  };
}
