/**
 * The HTTP front: an express app over the engine facade. `createHttpApp` never listens;
 * only the CLI binds ports.
 */
import express from "express";
import type { Config } from "../config.ts";
import type { Engine, KeyService, Logger } from "../engine/index.ts";

export interface HttpAppDeps {
  engine: Engine;
  keys: KeyService;
  log: Logger;
  config: Config;
}

export function createHttpApp(deps: HttpAppDeps): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.get("/healthz", (_req, res) => {
    res.json({ ok: true });
  });
  void deps;
  return app;
}
