/**
 * GitHub's answers turned into engine errors a user can act on: rate limits (with the wait
 * GitHub asked for), missing permissions, protected branches, an existing pull request.
 * Messages carry GitHub's explanation, never a request header.
 */
import { EngineError, type ErrorCode } from "../errors.ts";

interface RequestErrorLike {
  status: number;
  message: string;
  response?: { headers?: Record<string, string | number | undefined>; data?: unknown };
}

function isRequestError(e: unknown): e is RequestErrorLike {
  return typeof e === "object" && e !== null && typeof (e as { status?: unknown }).status === "number";
}

/** GitHub's `message` plus the messages in its `errors` array (where 422s explain themselves). */
function githubMessage(e: RequestErrorLike): string {
  const data = e.response?.data as { message?: unknown; errors?: unknown } | undefined;
  const parts: string[] = [];
  if (data && typeof data.message === "string") parts.push(data.message);
  if (data && Array.isArray(data.errors)) {
    for (const err of data.errors as unknown[]) {
      if (typeof err === "string") parts.push(err);
      else if (err && typeof err === "object") {
        const o = err as { message?: unknown; code?: unknown; field?: unknown };
        if (typeof o.message === "string") parts.push(o.message);
        else if (typeof o.code === "string") parts.push(`${typeof o.field === "string" ? `${o.field} ` : ""}${o.code}`);
      }
    }
  }
  return (parts.length ? parts.join("; ") : `HTTP ${e.status}`).slice(0, 1000);
}

/** Seconds GitHub asked us to wait, from `retry-after` or `x-ratelimit-reset`. */
function retryAfterSeconds(e: RequestErrorLike, now = Date.now()): number | undefined {
  const h = e.response?.headers ?? {};
  const after = Number(h["retry-after"]);
  if (Number.isFinite(after) && after >= 0) return Math.ceil(after);
  const reset = Number(h["x-ratelimit-reset"]);
  if (Number.isFinite(reset) && reset > 0) return Math.max(0, Math.ceil(reset - now / 1000));
  return undefined;
}

function isRateLimited(e: RequestErrorLike): boolean {
  if (e.status === 429) return true;
  if (e.status !== 403) return false;
  const h = e.response?.headers ?? {};
  return (
    String(h["x-ratelimit-remaining"]) === "0" || h["retry-after"] !== undefined || /rate limit/i.test(githubMessage(e))
  );
}

/**
 * Turn anything a GitHub call threw into an `EngineError`. `what` says what was being done
 * ("opening the draft pull request"); `notFound` is the code for a 404 (GitHub answers 404,
 * not 403, for a repository a credential cannot see).
 */
export function toGitHubError(
  e: unknown,
  what: string,
  opts: { notFound?: ErrorCode; fallback?: ErrorCode } = {},
): EngineError {
  if (e instanceof EngineError) return e;
  const fallback = opts.fallback ?? "publish_failed";
  if (!isRequestError(e)) {
    return new EngineError(fallback, `${what}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const msg = githubMessage(e);
  if (isRateLimited(e)) {
    const wait = retryAfterSeconds(e);
    return new EngineError(
      "github_rate_limited",
      `${what}: GitHub rate limit exceeded${wait !== undefined ? `; retry after ${wait} s` : ""} (${msg})`,
      wait !== undefined ? { retryAfterSeconds: wait } : undefined,
    );
  }
  if (e.status === 401)
    return new EngineError("permission_denied", `${what}: GitHub rejected the credentials (${msg})`);
  if (e.status === 403) return new EngineError("permission_denied", `${what}: no permission (${msg})`);
  if (e.status === 404)
    return new EngineError(
      opts.notFound ?? "permission_denied",
      `${what}: not found, or the credentials cannot see it (${msg})`,
    );
  if (e.status === 422 && /already exists/i.test(msg)) return new EngineError("pr_exists", `${what}: ${msg}`);
  if (e.status === 422 && /protected branch/i.test(msg)) return new EngineError("branch_protected", `${what}: ${msg}`);
  return new EngineError(fallback, `${what}: GitHub answered ${e.status} (${msg})`);
}
