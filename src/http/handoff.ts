/**
 * The route one replica hands a run's request to another on (run/replicas.ts): a message, a
 * cancel or an endSession for a run whose session this replica holds. Only replicas sharing
 * PATCHBAY_SECRET_KEY know its token; anyone else gets the 404 of a route that is not there.
 * The answer carries the engine's view or its error (code, message, details) as they are, so
 * the replica the client called answers exactly as this one would have.
 */
import express from "express";
import * as z from "zod";
import { HANDOFF_HEADER, HANDOFF_PATH, isEngineError, type Engine, type Logger } from "../engine/index.ts";
import { sendError } from "./errors.ts";
import { IMAGE_BODY_LIMIT } from "./routes.ts";

const HandoffBody = z.object({
  op: z.enum(["message", "cancel", "end"]),
  ownerId: z.string().min(1),
  runId: z.string().min(1),
  input: z.unknown().optional(),
});

export function mountHandoff(app: express.Express, engine: Engine, log: Logger): void {
  const replicas = engine.replicas;
  if (!replicas) return;
  app.post(HANDOFF_PATH, express.json({ limit: IMAGE_BODY_LIMIT }), async (req, res) => {
    if (!replicas.verify(req.get(HANDOFF_HEADER))) return sendError(res, "not_found", `no route POST ${req.path}`);
    const body = HandoffBody.safeParse(req.body);
    if (!body.success) return sendError(res, "invalid_request", "not a handoff request");
    try {
      res.json({ view: await engine.handoff(body.data) });
    } catch (e) {
      if (isEngineError(e)) return void res.json({ error: e.toJSON() });
      log.error("a handed-over request failed", { runId: body.data.runId, op: body.data.op, error: e });
      res.json({ error: { code: "internal", message: "internal error" } });
    }
  });
}
