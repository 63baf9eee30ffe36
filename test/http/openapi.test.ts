/**
 * The OpenAPI document: valid OpenAPI 3.1 (checked by a validator library), listing every
 * route of the app with its scope, built from the same zod schemas the routes validate with.
 */
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpApp, declaredRoutes } from "../../src/http/app.ts";
import { openApiPath } from "../../src/http/routes.ts";
import { LOADED } from "../support/harness.ts";
import { serveApp } from "../support/http.ts";
import { openTestPatchbay, type TestPatchbay } from "../support/patchbay.ts";

let pb: TestPatchbay;
let served: Awaited<ReturnType<typeof serveApp>> | undefined;
let base: string;

beforeAll(async () => {
  pb = await openTestPatchbay({});
  served = await serveApp(pb);
  base = served.base;
}, LOADED.hookMs);

afterAll(async () => {
  await served?.close();
  await pb?.close();
}, LOADED.hookMs);

describe("the OpenAPI document", () => {
  it("is valid OpenAPI 3.1 and lists every route of the app with its scope", async () => {
    const res = await fetch(`${base}/api/v1/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as {
      openapi: string;
      paths: Record<string, Record<string, { "x-scope": string; security: unknown[] }>>;
    };
    const result = await new Validator().validate(doc as never);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(doc.openapi).toBe("3.1.0");

    const app = createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config: pb.config });
    const routes = declaredRoutes(app);
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.entries(ops).map(([m, op]) => `${m} ${p} ${op["x-scope"]}`),
    );
    expect(documented.sort()).toEqual(routes.map((r) => `${r.method} ${openApiPath(r.path)} ${r.scope}`).sort());
  });

  it("documents bodies from the shared zod schemas: unknown fields refused, the prompt limit, the run response", async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking a JSON document
    const doc = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as any;
    const create = doc.components.schemas.CreateRunInput;
    expect(create.additionalProperties).toBe(false);
    expect(create.properties.prompt.maxLength).toBe(120_000);
    expect(create.required).toEqual(["prompt"]);
    const view = doc.components.schemas.RunView;
    for (const f of [
      "status",
      "sessionActive",
      "sessionExpiresAt",
      "turnCount",
      "repository",
      "modelId",
      "summary",
      "changedPaths",
      "diffStats",
      "patch",
      "events",
      "draftPullRequest",
      "error",
      "usage",
      "validation",
      "chainedFrom",
    ]) {
      expect(view.properties, f).toHaveProperty(f);
    }
    const messages = doc.paths["/api/v1/coding-agent/runs/{id}/messages"].post;
    expect(Object.keys(messages.responses)).toEqual(expect.arrayContaining(["200", "201", "202", "409"]));
    expect(messages.requestBody.content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/MessageInput",
    });
    const stream = doc.paths["/api/v1/coding-agent/runs/{id}/stream"].get;
    expect(stream.parameters.map((p: { name: string }) => p.name)).toEqual(["id", "after", "Last-Event-ID"]);
  });
});
