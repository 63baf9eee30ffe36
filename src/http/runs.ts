/**
 * The run routes of the Coding Agent API (`/api/v1/coding-agent`): the reference's five
 * plus cancel, delete and the model catalog. Handlers only parse, call the engine facade and answer.
 */
import * as z from "zod";
import type { Engine } from "../engine/index.ts";
import { RunEvent } from "../engine/events/schema.ts";
import { parseInput } from "../engine/parse.ts";
import { CreateRunInput, MessageInput, ModelCatalog } from "../engine/run/schema.ts";
import { RunView } from "../engine/run/view.ts";
import { callerOf } from "./auth.ts";
import { ErrorBody } from "./errors.ts";
import { DecimalId, IMAGE_BODY_LIMIT, QueryFlag, type ResponseSpec, type RouteSpec } from "./routes.ts";
import { streamRunEvents, type SseOptions } from "./sse.ts";

export const API_BASE = "/api/v1/coding-agent";

export const RunIdParams = z.object({ id: z.string().meta({ description: "Run id (`run_…`)" }) }).strict();

export const ListRunsQuery = z
  .object({
    limit: z
      .string()
      .regex(/^\d{1,3}$/, "must be an integer from 1 to 100")
      .transform(Number)
      .pipe(z.number().int().min(1, "must be at least 1").max(100, "must be at most 100"))
      .optional()
      .meta({ description: "Page size, 1–100 (default 20)" }),
    cursor: z.string().min(1).max(500).optional().meta({ description: "`nextCursor` of the previous page" }),
  })
  .strict();

export const GetRunQuery = z
  .object({
    patch: QueryFlag.optional().meta({
      description: "Include `patch` (unified diff against the base) when a turn has finished",
    }),
    events: QueryFlag.optional().meta({ description: "Include `events`, the run's whole event log" }),
    turns: QueryFlag.optional().meta({ description: "Include `turns`: each turn's prompt, kind, status and summary" }),
    fullSummary: QueryFlag.optional().meta({
      description: "`summary` whole, however long (by default it is cut at 16 KB and `summaryTruncated` says so)",
    }),
  })
  .strict();

export const StreamQuery = z
  .object({
    after: DecimalId.optional().meta({
      description: "Resume after this event id (0 = from the start). `Last-Event-ID` wins when both are sent.",
    }),
  })
  .strict();

/** `POST /runs/{id}/cancel` takes no fields; an empty object (or no body) is accepted. */
export const CancelInput = z.object({}).strict();

export const RunList = z.object({
  runs: z.array(RunView),
  /** Pass as `cursor` to get the next page; null on the last page. */
  nextCursor: z.string().nullable(),
});

const IdempotencyKey = z
  .string()
  .min(1)
  .max(255)
  .regex(/^[\x21-\x7e]+$/, "must be printable ASCII without spaces")
  .meta({
    description: "Same key + same body from the same owner returns the first run instead of starting a second one",
  });

const err = (description: string): ResponseSpec => ({ description, schema: ErrorBody });
const AUTH_ERRORS = {
  401: err("Missing, invalid or revoked API key"),
  403: err("The key lacks the route's scope, or (creating a run) its repository allow-list excludes the repository"),
  429: { ...err("Rate limit or active-run cap reached"), headers: { "Retry-After": "Seconds to wait" } },
};

export interface RunRoutesDeps {
  engine: Engine;
  sse?: SseOptions;
}

export function runRoutes({ engine, sse }: RunRoutesDeps): RouteSpec[] {
  return [
    {
      method: "post",
      path: `${API_BASE}/runs`,
      scope: "write:builder",
      tag: "runs",
      summary: "Start a run",
      description:
        "Starts a run: a sandbox with the repository checked out at `baseRef`, an OpenCode session in it, and the first turn on `prompt`. " +
        "Answers 201 with the run (status `running`); follow it with `GET /runs/{id}` or `GET /runs/{id}/stream`. Unknown fields are refused. " +
        "With `Idempotency-Key`, a repeated request with the same body answers the first run (header `Idempotency-Replayed: true`); with a different body it answers 409. " +
        "With `attempts` (2–4) it starts that many sibling runs and answers the first, whose `group` names the group (`GET /groups/{id}`); the request is refused whole (429) when the siblings do not all fit under the active-run cap.",
      headers: { "Idempotency-Key": IdempotencyKey },
      body: CreateRunInput,
      bodyRequired: true,
      // Images travel in the body (base64): these two routes take up to 72 MB, every other 1 MB.
      bodyLimit: IMAGE_BODY_LIMIT,
      responses: {
        201: {
          description: "The run was started",
          schema: RunView,
          headers: { Location: "URL of the run", "Idempotency-Replayed": "true when an earlier run was returned" },
        },
        400: err(
          "Invalid body (the message names the field), unknown model, invalid ref, no usable model key, invalid_output_schema, invalid_image or model_without_vision",
        ),
        402: err("`budget_exceeded`: the owner's daily cost cap is spent for today"),
        ...AUTH_ERRORS,
        409: err("Idempotency-Key reused with a different body"),
        413: err("Body larger than 72 MB"),
        415: err("Body is not application/json"),
      },
      async handler(req, res) {
        const { ownerId, repos } = callerOf(res);
        const idem = req.get("idempotency-key");
        const idempotencyKey =
          idem === undefined ? undefined : parseInput(IdempotencyKey, idem, "header.Idempotency-Key");
        const started = Date.now();
        // The engine holds every front to the active-run cap (too_many_active_runs, 429).
        const run = await engine.startRun(ownerId, req.body, {
          ...(idempotencyKey ? { idempotencyKey } : {}),
          ...(repos ? { allowedRepositories: repos } : {}),
        });
        if (Date.parse(run.createdAt) < started) res.setHeader("Idempotency-Replayed", "true");
        res.status(201).location(`${API_BASE}/runs/${run.id}`).json(run);
      },
    },
    {
      method: "get",
      path: `${API_BASE}/runs`,
      scope: "read:builder",
      tag: "runs",
      summary: "List recent runs",
      description:
        "The caller's runs, newest first. `limit` 1–100 (default 20); pass `nextCursor` as `cursor` for the next page.",
      query: ListRunsQuery,
      responses: {
        200: { description: "A page of runs", schema: RunList },
        400: err("Invalid limit or cursor"),
        ...AUTH_ERRORS,
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        const q = parseInput(ListRunsQuery, req.query, "query");
        const page = await engine.listRuns(ownerId, {
          ...(q.limit ? { limit: q.limit } : {}),
          ...(q.cursor ? { cursor: q.cursor } : {}),
        });
        res.json(page satisfies z.infer<typeof RunList>);
      },
    },
    {
      method: "get",
      path: `${API_BASE}/runs/:id`,
      scope: "read:builder",
      tag: "runs",
      summary: "Get a run",
      description:
        "Status, summary, changed paths, diff stats, usage and validation of a run. `?patch=1` adds `patch` (null until a turn has finished or when nothing changed); " +
        "`?events=1` adds the event log; `?turns=1` the turns with their prompts; `?fullSummary=1` gives `summary` whole when `summaryTruncated` (cut at 16 KB). Poll until `status` is `idle` or terminal. Another owner's run answers 404.",
      params: RunIdParams,
      query: GetRunQuery,
      responses: {
        200: { description: "The run", schema: RunView },
        400: err("Invalid query"),
        ...AUTH_ERRORS,
        404: err("No such run for this key"),
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        const q = parseInput(GetRunQuery, req.query, "query");
        res.json(
          await engine.getRun(ownerId, String(req.params.id), {
            patch: q.patch === true,
            events: q.events === true,
            fullSummary: q.fullSummary === true,
            turns: q.turns === true,
          }),
        );
      },
    },
    {
      method: "post",
      path: `${API_BASE}/runs/:id/messages`,
      scope: "write:builder",
      tag: "runs",
      summary: "Send a follow-up, or end the session",
      description:
        "`{prompt, publish?, limits?}` continues the live session of an `idle` run: same sandbox, same OpenCode session; answers **202** with the run, now `running`. " +
        "If the run is terminal or its session expired, a chained run starts instead (new id, new sandbox, the prior patch applied and the prior prompts and summary in the prompt); " +
        "answers **201** with the new run, whose `chainedFrom` is this run's id. `{endSession: true}` closes the session (kills the sandbox) and answers **200** with the run, now `completed`. " +
        "A message to a `queued` or `running` run answers 409 with `Retry-After`; it is not queued. " +
        "`limits` changes the run's limits (the fields named replace the run's): a run paused at a limit (`idle`, `error.code` `budget_exceeded`) continues once it is raised. " +
        "`taskKind` switches the session's kind from this turn on: `code` after a plan turn approves the plan (`planApproval`) and turns writing tools on.",
      params: RunIdParams,
      body: MessageInput,
      bodyRequired: true,
      // Images travel in the body (base64): these two routes take up to 72 MB, every other 1 MB.
      bodyLimit: IMAGE_BODY_LIMIT,
      responses: {
        200: { description: "Session ended (`endSession`)", schema: RunView },
        201: {
          description: "A chained run was started (`chainedFrom` set)",
          schema: RunView,
          headers: { Location: "URL of the new run" },
        },
        202: { description: "The live session continues with a new turn", schema: RunView },
        400: err("Invalid body, invalid_output_schema, invalid_image or model_without_vision"),
        402: err("`budget_exceeded`: the owner's daily cost cap is spent for today"),
        ...AUTH_ERRORS,
        404: err("No such run for this key"),
        409: { ...err("The run is busy with a turn"), headers: { "Retry-After": "Seconds to wait" } },
        413: err("Body larger than 72 MB"),
        415: err("Body is not application/json"),
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        const id = String(req.params.id);
        const body: unknown = req.body;
        const input = parseInput(MessageInput, body, "body");
        if (input.endSession) {
          res.status(200).json(await engine.sendMessage(ownerId, id, body));
          return;
        }
        // A message that chains creates a run: the engine holds it to the active-run cap.
        const run = await engine.sendMessage(ownerId, id, body);
        if (run.id !== id) {
          res.status(201).location(`${API_BASE}/runs/${run.id}`).json(run);
          return;
        }
        res.status(202).json(run);
      },
    },
    {
      method: "get",
      path: `${API_BASE}/runs/:id/stream`,
      scope: "read:builder",
      tag: "runs",
      summary: "Stream run events (SSE)",
      description:
        "Server-Sent Events: `event: builder.event` (agent activity) and `event: run.status` (every status change, with the turn). Each frame's `id:` is the event id; " +
        "`?after=ID` or the `Last-Event-ID` header (which wins) resumes exactly after that event. The stored log is replayed, then live events follow with no gap or duplicate. " +
        "The stream stays open while the run is queued, running or idle and closes after a terminal status (a finished run replays and closes). " +
        "A `: keepalive` comment is sent every 15 s. An event id past the end of the log answers 400 `event_not_found`.",
      params: RunIdParams,
      query: StreamQuery,
      headers: {
        "Last-Event-ID": z
          .string()
          .regex(/^\d{1,15}$/)
          .meta({ description: "Resume after this event id" }),
      },
      responses: {
        200: {
          description: "An SSE stream; each `data:` is one RunEvent as JSON",
          schema: RunEvent,
          contentType: "text/event-stream",
        },
        400: err("Invalid cursor, or an event id that does not exist in this run (`event_not_found`)"),
        ...AUTH_ERRORS,
        404: err("No such run for this key"),
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        const q = parseInput(StreamQuery, req.query, "query");
        const lastEventId = req.get("last-event-id");
        // On reconnect an EventSource sends Last-Event-ID but keeps the original ?after=; the header is newer.
        const after =
          lastEventId !== undefined
            ? parseInput(DecimalId, lastEventId.trim(), "header.Last-Event-ID")
            : (q.after ?? 0);
        await streamRunEvents(engine, ownerId, String(req.params.id), after, req, res, sse);
      },
    },
    {
      method: "post",
      path: `${API_BASE}/runs/:id/cancel`,
      scope: "write:builder",
      tag: "runs",
      summary: "Cancel a run",
      description:
        "Stops the agent and every process of the run before answering; the run becomes `cancelled` and keeps the patch it had. Cancelling a finished run answers it unchanged.",
      params: RunIdParams,
      body: CancelInput,
      responses: {
        200: { description: "The run, now cancelled (or already finished)", schema: RunView },
        400: err("A body with fields"),
        ...AUTH_ERRORS,
        404: err("No such run for this key"),
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        if (req.body !== undefined) parseInput(CancelInput, req.body, "body");
        res.json(await engine.cancel(ownerId, String(req.params.id)));
      },
    },
    {
      method: "delete",
      path: `${API_BASE}/runs/:id`,
      scope: "write:builder",
      tag: "runs",
      summary: "Delete a finished run",
      description:
        "Deletes a finished run (completed, failed, cancelled, or idle with its session ended) for good: its record, turns, event log, patch, summary, secrets, its own webhook and its deliveries. " +
        "Afterwards every route answers 404 for it. A run that is queued, running, or idle with its session open answers 409 `run_active`: cancel it or end its session first. " +
        "Another owner's run answers 404. With `PATCHBAY_RETENTION_DAYS` set, finished runs are deleted the same way once that old.",
      params: RunIdParams,
      responses: {
        204: { description: "Deleted" },
        ...AUTH_ERRORS,
        404: err("No such run for this key"),
        409: err("`run_active`: the run is queued, running, or idle with its session open"),
      },
      async handler(req, res) {
        const { ownerId } = callerOf(res);
        await engine.deleteRun(ownerId, String(req.params.id));
        res.status(204).end();
      },
    },
    {
      method: "get",
      path: `${API_BASE}/models`,
      scope: "read:builder",
      tag: "runs",
      summary: "Model catalog",
      description: "Model ids a run may name in `modelId`, and the default. An empty list means any id is accepted.",
      responses: { 200: { description: "The catalog", schema: ModelCatalog }, ...AUTH_ERRORS },
      handler(_req, res) {
        res.json(engine.models() satisfies ModelCatalog);
      },
    },
  ];
}
