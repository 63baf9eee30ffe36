/**
 * A client generated from the served OpenAPI document, as a client author would make one:
 * openapi-typescript writes the types, a small program uses openapi-fetch with them, strict
 * tsc compiles it, and it makes the reference's create → follow-up → end round trip against
 * the real server, the real OpenCode and the scripted model.
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";
import createClient from "openapi-fetch";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { serveHarness, type HttpHarness } from "../support/http.ts";

const MODEL = "test/generated-client";
let h: HttpHarness;

beforeAll(async () => {
  h = await serveHarness();
  h.model.script(MODEL, [
    [{ toolCalls: [{ name: "write", args: { filePath: "first.txt", content: "one\n" } }] }, { text: "First done." }],
    [{ toolCalls: [{ name: "write", args: { filePath: "second.txt", content: "two\n" } }] }, { text: "Second done." }],
  ]);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

/**
 * The client program, written only against the generated `paths`: every body, parameter and
 * field it touches must type-check under strict tsc (`limit` a number, `repository.id` a
 * number, a follow-up's `publish` without `mode`).
 */
const CLIENT = `
import type createClientFn from "openapi-fetch";
import type { components, paths } from "./api";

type Run = components["schemas"]["RunView"];
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function roundTrip(createClient: typeof createClientFn, baseUrl: string, key: string, modelId: string) {
  const client = createClient<paths>({ baseUrl, headers: { Authorization: "Bearer " + key } });
  const API = "/api/v1/coding-agent/runs";

  async function untilIdle(id: string): Promise<Run> {
    for (;;) {
      const { data, error } = await client.GET("/api/v1/coding-agent/runs/{id}", {
        params: { path: { id }, query: { patch: "1" } },
      });
      if (error) throw new Error(error.error.code + ": " + error.error.message);
      if (data.status !== "queued" && data.status !== "running") return data;
      await sleep(200);
    }
  }

  const created = await client.POST(API, {
    body: {
      repository: "acme/web",
      prompt: "Add Stripe webhook signature verification and tests.",
      modelId,
      billing: { mode: "managed" },
      publish: { mode: "draft_pr" },
      validationMode: "tests",
    },
  });
  if (created.error) throw new Error(created.error.error.code);
  const repositoryId: number | undefined = created.data.repository.id;
  const first = await untilIdle(created.data.id);

  const followUp = await client.POST("/api/v1/coding-agent/runs/{id}/messages", {
    params: { path: { id: first.id } },
    body: { prompt: "Add a regression test for expired signatures.", publish: { branch: "patchbay/generated-client" } },
  });
  if (followUp.error) throw new Error(followUp.error.error.code);
  const second = await untilIdle(first.id);

  const ended = await client.POST("/api/v1/coding-agent/runs/{id}/messages", {
    params: { path: { id: first.id } },
    body: { endSession: true },
  });
  if (ended.error) throw new Error(ended.error.error.code);

  const listed = await client.GET(API, { params: { query: { limit: 5 } } });
  if (listed.error) throw new Error(listed.error.error.code);
  return {
    repositoryId,
    first,
    followUpStatus: followUp.response.status,
    second,
    ended: ended.data,
    listed: listed.data.runs.map((r) => r.id),
  };
}
`;

/** Strict tsc over the program; returns the diagnostics as text (empty when it compiles). */
function typeCheck(file: string): string[] {
  const require = createRequire(import.meta.url);
  const fetchTypes = path.dirname(require.resolve("openapi-fetch/package.json"));
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    // The program and the generated types are checked; the lib and openapi-fetch's own
    // declarations are taken as they are (checking lib.dom alone took most of the test's time).
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
    types: [],
    paths: { "openapi-fetch": [fetchTypes] },
  });
  return ts
    .getPreEmitDiagnostics(program)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n") + (d.file ? ` (${d.file.fileName})` : ""));
}

describe("a client generated from the OpenAPI document", { timeout: LOADED.testMs * 3 }, () => {
  it("compiles under strict tsc and makes the reference's create → follow-up → end round trip", async () => {
    const dir = tempDir("generated-client");
    const doc = (await (await fetch(`${h.base}/api/v1/openapi.json`)).json()) as Parameters<typeof openapiTS>[0];
    fs.writeFileSync(path.join(dir, "api.ts"), astToString(await openapiTS(doc)));
    fs.writeFileSync(path.join(dir, "client.ts"), CLIENT);
    expect(typeCheck(path.join(dir, "client.ts"))).toEqual([]);

    // Type imports only: the emitted module needs nothing but what it is given.
    const js = ts.transpileModule(CLIENT, {
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    }).outputText;
    fs.writeFileSync(path.join(dir, "client.mjs"), js);
    const { roundTrip } = (await import(pathToFileURL(path.join(dir, "client.mjs")).href)) as {
      roundTrip: (
        c: typeof createClient,
        baseUrl: string,
        key: string,
        modelId: string,
      ) => Promise<{
        repositoryId: number | undefined;
        first: { status: string; summary: string | null; changedPaths: string[] };
        followUpStatus: number;
        second: {
          id: string;
          status: string;
          summary: string | null;
          turnCount: number;
          patch?: string | null;
          publish: { mode: string };
        };
        ended: { status: string };
        listed: string[];
      }>;
    };
    const r = await roundTrip(createClient, h.base, h.keys.rw, MODEL);
    expect(r.repositoryId).toBe(1);
    expect(r.first).toMatchObject({ status: "idle", summary: "First done.", changedPaths: ["first.txt"] });
    expect(r.followUpStatus).toBe(202);
    expect(r.second).toMatchObject({ status: "idle", summary: "Second done.", turnCount: 2 });
    expect(r.second.publish.mode).toBe("draft_pr");
    expect(r.second.patch).toContain("second.txt");
    expect(r.ended.status).toBe("completed");
    expect(r.listed).toContain(r.second.id);
  });
});
