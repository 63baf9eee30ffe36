/**
 * The OpenAPI document: valid OpenAPI 3.1 (checked by a validator library), listing every
 * route of the app with its scope, built from the same zod schemas the routes validate with.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpApp, declaredRoutes } from "../../src/http/app.ts";
import { openApiPath } from "../../src/http/routes.ts";
import { tempDir } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { serveApp } from "../support/http.ts";
import { openTestPatchbay, type TestPatchbay } from "../support/patchbay.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const run$ = promisify(execFile);
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
      "hibernated",
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

  it("is lint clean under Redocly's recommended-strict ruleset (redocly.yaml)", async () => {
    const file = path.join(tempDir("openapi"), "openapi.json");
    fs.writeFileSync(file, await (await fetch(`${base}/api/v1/openapi.json`)).text());
    const cli = createRequire(import.meta.url).resolve("@redocly/cli/bin/cli.js");
    // The CLI's own Node is this one (20); no telemetry or update check from a test.
    const lint = await run$(
      process.execPath,
      [cli, "lint", file, "--config", path.join(ROOT, "redocly.yaml"), "--format", "json"],
      {
        cwd: ROOT,
        env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
      },
    ).catch((e: { stdout?: string; stderr?: string }) => ({ stdout: e.stdout ?? "", stderr: e.stderr ?? "" }));
    const report = JSON.parse(lint.stdout) as { totals: { errors: number; warnings: number }; problems: unknown[] };
    expect(report.problems).toEqual([]);
    expect(report.totals).toMatchObject({ errors: 0, warnings: 0 });
  });

  it("says what zod refinements check, the defaults, and limit as an integer", async () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- walking a JSON document
    const doc = (await (await fetch(`${base}/api/v1/openapi.json`)).json()) as any;
    const create = doc.components.schemas.CreateRunInput;
    expect(create.anyOf).toEqual([
      { required: ["repository"] },
      { required: ["repositoryFullName"] },
      { required: ["repositoryId"] },
    ]);
    expect(create.properties.billing).toMatchObject({
      if: { properties: { mode: { const: "openrouter" } }, required: ["mode"] },
      then: { required: ["openRouterApiKey"] },
    });
    expect(doc.components.schemas.MessageInput.properties.billing.then.required).toEqual(["openRouterApiKey"]);
    expect(create.properties.taskKind.default).toBe("code");
    expect(create.properties.validationMode.default).toBe("basic");
    expect(create.properties.publish.properties.mode.default).toBe("none");
    // A message's publish changes only what it names: no default that would switch publishing off.
    expect(doc.components.schemas.MessageInput.properties.publish.properties.mode.default).toBeUndefined();
    const list = doc.paths["/api/v1/coding-agent/runs"].get.parameters;
    expect(list.find((p: { name: string }) => p.name === "limit").schema).toEqual({
      type: "integer",
      minimum: 1,
      maximum: 100,
    });
    const view = doc.components.schemas.RunView;
    for (const [name, prop] of Object.entries(view.properties))
      expect((prop as { description?: string }).description, name).toBeTruthy();
    expect(view.properties.repository.properties.id.type).toBe("integer");
    for (const [p, ops] of Object.entries(doc.paths))
      for (const [m, op] of Object.entries(ops as Record<string, { responses: Record<string, unknown> }>))
        expect(
          Object.keys(op.responses).some((s) => s.startsWith("4")),
          `${m} ${p}`,
        ).toBe(true);
  });

  it("the README's client guide opens with what the reference leaves unclear: idle, ending sessions, the cap, run.status", () => {
    const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
    const guide = readme.slice(readme.indexOf("### Client guide")).split("\n").slice(0, 16).join("\n");
    for (const said of [
      "until `status` is `idle`",
      "`idle` is not\n  terminal",
      "endSession",
      "sessionExpiresAt",
      "Idle runs count toward the active-run cap",
      "`run.status` comes on every change",
    ])
      expect(guide).toContain(said);
  });
});
