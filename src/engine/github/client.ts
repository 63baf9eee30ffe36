/**
 * The one way Patchbay builds GitHub REST clients: octokit's `Octokit` (REST methods, retry
 * and throttling plugins) with the configured base URL, our logger, and rate-limit handling
 * that honours GitHub's `retry-after`/`x-ratelimit-reset` up to a bound, then gives up with
 * `github_rate_limited` instead of blocking a run for an hour.
 */
import { Octokit } from "octokit";
import type { Logger } from "../log.ts";

/** Options shared by every client of one server. */
export interface GitHubClientOptions {
  /** REST base URL, e.g. `https://api.github.com` or `https://ghe.example.com/api/v3`. */
  baseUrl: string;
  log: Logger;
  /**
   * Longest wait a rate limit may impose before one retry; a longer `retry-after` is
   * reported as `github_rate_limited` at once. Default 60 s.
   */
  maxRateLimitWaitSeconds?: number;
  /** Retries of a rate-limited request (after waiting). Default 1. */
  rateLimitRetries?: number;
}

/** An octokit class bound to one server's options; construct it with `{ auth }`. */
export type GitHubOctokit = typeof Octokit;

/**
 * An `Octokit` class with the server's defaults. Pass it to `App` (which adds App auth) or
 * construct it with `{ auth: token }`.
 */
export function createOctokitClass(opts: GitHubClientOptions): GitHubOctokit {
  const maxWait = opts.maxRateLimitWaitSeconds ?? 60;
  const retries = opts.rateLimitRetries ?? 1;
  const log = opts.log.child({ component: "github" });
  const onLimit =
    (kind: string) =>
    (
      retryAfter: number,
      options: { method?: string; url?: string },
      _octokit: unknown,
      retryCount: number,
    ): boolean => {
      const retry = retryCount < retries && retryAfter <= maxWait;
      log.warn(`GitHub ${kind} rate limit`, {
        method: options.method,
        url: options.url,
        retryAfterSeconds: retryAfter,
        retrying: retry,
      });
      return retry;
    };
  return Octokit.defaults({
    baseUrl: opts.baseUrl,
    userAgent: "patchbay",
    // octokit logs to the console by default; route it through our logger (which redacts).
    log: {
      debug: () => undefined,
      info: (message: string) => log.debug(message),
      warn: (message: string) => log.warn(message),
      error: (message: string) => log.error(message),
    },
    throttle: { onRateLimit: onLimit("primary"), onSecondaryRateLimit: onLimit("secondary") },
    // Rate limits are the throttling plugin's to retry (it reads retry-after); the retry
    // plugin would otherwise retry a 429 blindly with its own back-off. 5xx stay retried.
    retry: { doNotRetry: [400, 401, 403, 404, 410, 422, 429, 451], retries: 2 },
  });
}
