/**
 * Polling an HTTP resource the way a well-behaved client does: reads back off (50 ms growing
 * to 1 s), a 429 is waited out for its `Retry-After`, and any other non-2xx answer fails the
 * wait with its body: an error body is never read as the resource.
 */

/** What the harnesses' `api` functions answer (served app and `patchbay serve` child alike). */
export interface HttpAnswer {
  status: number;
  headers: Headers;
  // Tests read arbitrary fields of answers; typing each would restate the response schemas.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
}

/** Thrown when a poll gets an answer that is neither the resource nor "come back later". */
export class UnexpectedAnswerError extends Error {
  constructor(
    readonly what: string,
    readonly answer: HttpAnswer,
  ) {
    super(`while waiting for ${what}: HTTP ${answer.status} ${JSON.stringify(answer.json)?.slice(0, 500)}`);
  }
}

export interface PollOptions {
  /** Default 180 000: a turn on a loaded 2-core machine can take a minute or more. */
  timeoutMs?: number;
  /** First pause between reads; doubles up to `maxIntervalMs` (default 50 and 1000). */
  intervalMs?: number;
  maxIntervalMs?: number;
  what: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Seconds from a `Retry-After` header (delta-seconds or an HTTP date), in ms; undefined if absent. */
function retryAfterMs(headers: Headers): number | undefined {
  const value = headers.get("retry-after");
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * Read `get()` until `until(json)` returns a value (anything but undefined/false), and return
 * that value. Throws `UnexpectedAnswerError` on a non-2xx answer other than 429, and a timeout
 * error (with the last answer) once `timeoutMs` passes.
 */
export async function pollHttp<T>(
  get: () => Promise<HttpAnswer>,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  until: (json: any) => T | undefined | false,
  opts: PollOptions,
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
  let interval = opts.intervalMs ?? 50;
  const maxInterval = Math.max(interval, opts.maxIntervalMs ?? 1000);
  for (;;) {
    const answer = await get();
    let pause = interval;
    if (answer.status === 429) {
      // Rate limited: come back when the server says, not sooner (and not never).
      pause = retryAfterMs(answer.headers) ?? maxInterval;
    } else if (answer.status < 200 || answer.status > 299) {
      throw new UnexpectedAnswerError(opts.what, answer);
    } else {
      const value = until(answer.json);
      if (value !== undefined && value !== false) return value;
      interval = Math.min(maxInterval, interval * 2);
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(
        `timed out waiting for ${opts.what}; last answer: HTTP ${answer.status} ${JSON.stringify(answer.json)?.slice(0, 500)}`,
      );
    }
    await sleep(Math.min(pause, left));
  }
}

/** A run status that means the turn is over (not queued, not running). */
export const turnOver = (status: string | undefined): boolean =>
  status !== undefined && status !== "queued" && status !== "running";

/**
 * Poll `GET <runPath>` (any query string allowed) until the run's turn is over, and return the
 * run as that answer gave it.
 */
export function pollUntilTurnOver(
  get: () => Promise<HttpAnswer>,
  opts: Omit<PollOptions, "what"> & { what?: string } = {},
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
): Promise<any> {
  return pollHttp(get, (run: { status?: string }) => (turnOver(run.status) ? run : undefined), {
    what: "the run's turn to end",
    ...opts,
  });
}
