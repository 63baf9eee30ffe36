/**
 * A typed client for Patchbay's REST API (`patchbay/client`). `api` is openapi-fetch over the
 * generated types (client/api.ts), for every route; the methods below are the run round trip
 * with errors thrown as PatchbayApiError, plus `follow` (the event stream, resumed with
 * Last-Event-ID after a dropped connection) and `waitForTurn`. It runs in Node and in browsers
 * (fetch and streams only): the dashboard loads a bundle of it (npm run dashboard:build).
 */
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./api.ts";
import { apiError, followRun, PatchbayApiError, type FollowOptions, type RunEvent } from "./sse.ts";

export type { components, paths } from "./api.ts";
export { apiError, PatchbayApiError, type FollowOptions, type RunEvent } from "./sse.ts";

export type RunView = components["schemas"]["RunView"];
export type CreateRunInput = components["schemas"]["CreateRunInput"];
export type MessageInput = components["schemas"]["MessageInput"];
/** A run as `getRun(id, {patch: true})` answers it. */
export type RunWithPatch = RunView & { patch?: string | null };

export interface PatchbayClientOptions {
  /** The server's origin, e.g. `http://127.0.0.1:8787` (no trailing path). */
  baseUrl: string;
  /**
   * A Patchbay API key (`pb_…`), sent as a bearer token. Absent in a browser signed in to the
   * dashboard: same-origin requests carry its session cookie (writes then need `X-CSRF-Token`,
   * which a middleware on `api` adds).
   */
  apiKey?: string;
  /** Replace fetch (tests, proxies). Default: the global one. */
  fetch?: typeof fetch;
}

export interface PatchbayClient {
  /** openapi-fetch over every route, typed from the OpenAPI document. */
  readonly api: Client<paths>;
  startRun(input: CreateRunInput, opts?: { idempotencyKey?: string }): Promise<RunView>;
  getRun(id: string, opts?: { patch?: boolean; fullSummary?: boolean; turns?: boolean }): Promise<RunWithPatch>;
  listRuns(opts?: { limit?: number; cursor?: string }): Promise<{ runs: RunView[]; nextCursor: string | null }>;
  /** A follow-up (`status` 202), a chained run (201), or `{endSession: true}` (200). */
  sendMessage(id: string, input: MessageInput): Promise<{ status: number; run: RunView }>;
  endSession(id: string): Promise<RunView>;
  cancel(id: string): Promise<RunView>;
  /** The run's events, replayed and then live, resumed after dropped connections; ends after a terminal status. */
  follow(runId: string, opts?: FollowOptions): AsyncGenerator<RunEvent, void, undefined>;
  /**
   * Resolves with the run (and its patch) once its current turn is over: idle, or a terminal
   * status. Waits on the event stream, not by polling.
   */
  waitForTurn(runId: string, opts?: { signal?: AbortSignal; onEvent?: (ev: RunEvent) => void }): Promise<RunWithPatch>;
}

const RUNS = "/api/v1/coding-agent/runs";
const turnOver = (status: string) => status !== "queued" && status !== "running";

/**
 * What openapi-fetch answers: data, or a PatchbayApiError. For routes without a method here:
 * `await unwrap(client.api.GET("/api/v1/coding-agent/models"))`.
 */
export async function unwrap<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (error !== undefined || data === undefined) {
    const body = error as { error?: { code?: string; message?: string; details?: unknown } } | undefined;
    if (body?.error?.code)
      throw new PatchbayApiError(response.status, body.error.code, body.error.message ?? "", body.error.details);
    throw await apiError(response);
  }
  return data;
}

export function createPatchbayClient(opts: PatchbayClientOptions): PatchbayClient {
  const baseUrl = opts.baseUrl.replace(/\/+$/, "");
  // Called through a wrapper: a browser's fetch throws when called as another object's method.
  const fetchImpl: typeof fetch = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const headers: Record<string, string> = opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {};
  const api = createClient<paths>({ baseUrl, headers, fetch: fetchImpl });
  const flag = (on: boolean | undefined) => (on ? ("1" as const) : undefined);

  const client: PatchbayClient = {
    api,
    startRun(input, o = {}) {
      return unwrap(
        api.POST(RUNS, {
          body: input,
          ...(o.idempotencyKey ? { params: { header: { "Idempotency-Key": o.idempotencyKey } } } : {}),
        }),
      );
    },
    getRun(id, o = {}) {
      const query = { patch: flag(o.patch), fullSummary: flag(o.fullSummary), turns: flag(o.turns) };
      return unwrap(api.GET(`${RUNS}/{id}`, { params: { path: { id }, query } }));
    },
    async listRuns(o = {}) {
      const page = await unwrap(api.GET(RUNS, { params: { query: { limit: o.limit, cursor: o.cursor } } }));
      return { runs: page.runs, nextCursor: page.nextCursor ?? null };
    },
    async sendMessage(id, input) {
      const call = api.POST(`${RUNS}/{id}/messages`, { params: { path: { id } }, body: input });
      const run = await unwrap(call);
      return { status: (await call).response.status, run };
    },
    async endSession(id) {
      return (await client.sendMessage(id, { endSession: true })).run;
    },
    cancel(id) {
      return unwrap(api.POST(`${RUNS}/{id}/cancel`, { params: { path: { id } } }));
    },
    follow(runId, o = {}) {
      return followRun({ baseUrl, headers, fetch: fetchImpl }, runId, o);
    },
    async waitForTurn(runId, o = {}) {
      const run = await client.getRun(runId, { patch: true });
      if (turnOver(run.status)) return run;
      // Replayed events of earlier turns are passed over: only this turn's end counts.
      for await (const ev of client.follow(runId, o.signal ? { signal: o.signal } : {})) {
        o.onEvent?.(ev);
        if (ev.type === "run.status" && ev.turn >= run.turnCount && turnOver(ev.data.status)) break;
      }
      if (o.signal?.aborted) throw o.signal.reason ?? new Error("aborted");
      return client.getRun(runId, { patch: true });
    },
  };
  return client;
}
