/**
 * The OpenAPI 3.1 document, generated from the route table and the same zod schemas the
 * routes validate with (zod 4's native JSON Schema output, draft 2020-12, which is what
 * OpenAPI 3.1 uses). Also a self-contained HTML page that renders it (no CDN, works offline).
 */
import * as z from "zod";
import { BillingInput, CreateRunInput, MessageInput } from "../engine/run/schema.ts";
import { RunView } from "../engine/run/view.ts";
import { RunEvent } from "../engine/events/schema.ts";
import { ErrorBody } from "./errors.ts";
import { openApiPath, type RouteSpec } from "./routes.ts";

type JsonSchema = Record<string, unknown>;

/** Schemas given a name under `components.schemas`; routes referring to them get a `$ref`. */
const NAMED: [string, z.ZodType][] = [
  ["RunView", RunView],
  ["RunEvent", RunEvent],
  ["CreateRunInput", CreateRunInput],
  ["MessageInput", MessageInput],
  ["Error", ErrorBody],
];

/**
 * What zod refinements check, written as JSON Schema and added wherever the schema appears (zod
 * cannot render a refinement; a generated client or validator reads these). Only here, not on
 * the schemas: MCP clients refuse a tool input schema with a top-level `anyOf`.
 */
const REFINEMENTS = new Map<z.ZodType, JsonSchema>([
  [
    CreateRunInput,
    {
      anyOf: [{ required: ["repository"] }, { required: ["repositoryFullName"] }, { required: ["repositoryId"] }],
      description: "One of `repository`, `repositoryFullName` or `repositoryId` is required.",
    },
  ],
  [
    BillingInput,
    {
      if: { properties: { mode: { const: "openrouter" } }, required: ["mode"] },
      then: { required: ["openRouterApiKey"], properties: { openRouterApiKey: { type: "string", minLength: 1 } } },
      description: "`openRouterApiKey` is required when `mode` is `openrouter`.",
    },
  ],
]);

function jsonSchema(schema: z.ZodType, io: "input" | "output"): JsonSchema {
  const out = z.toJSONSchema(schema, {
    io,
    unrepresentable: "any",
    target: "draft-2020-12",
    override({ zodSchema, jsonSchema: js }) {
      const def = zodSchema._zod.def;
      // A number read from text (a query value, a header) is documented as the number it is.
      if (io === "input" && def.type === "pipe" && def.out._zod.def.type === "number") {
        const { $schema: _s, ...asNumber } = z.toJSONSchema(def.out as unknown as z.ZodType, {
          io: "output",
        }) as JsonSchema;
        for (const k of ["type", "pattern", "minLength", "maxLength", "format"]) delete js[k];
        Object.assign(js, asNumber);
      }
      const extra = REFINEMENTS.get(zodSchema as unknown as z.ZodType);
      if (extra) Object.assign(js, extra);
    },
  }) as JsonSchema;
  delete out.$schema;
  return out;
}

export interface OpenApiInfo {
  title?: string;
  version: string;
  description?: string;
}

/** Build the document for a list of routes. */
export function buildOpenApi(routes: readonly RouteSpec[], info: OpenApiInfo): JsonSchema {
  const components: Record<string, JsonSchema> = {};
  const names = new Map<z.ZodType, string>();
  for (const [name, schema] of NAMED) {
    names.set(schema, name);
    // Request bodies are documented as written (input); responses as sent (output).
    components[name] = jsonSchema(schema, name.endsWith("Input") ? "input" : "output");
  }
  const ref = (schema: z.ZodType, io: "input" | "output"): JsonSchema => {
    const name = names.get(schema);
    return name ? { $ref: `#/components/schemas/${name}` } : jsonSchema(schema, io);
  };

  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const parameters: unknown[] = [];
    const addParams = (obj: z.ZodObject | undefined, where: "path" | "query") => {
      if (!obj) return;
      const s = jsonSchema(obj, "input") as { properties?: Record<string, JsonSchema>; required?: string[] };
      for (const [name, prop] of Object.entries(s.properties ?? {})) {
        const { description, ...schema } = prop;
        parameters.push({
          name,
          in: where,
          required: where === "path" || (s.required ?? []).includes(name),
          ...(description ? { description } : {}),
          schema,
        });
      }
    };
    addParams(r.params, "path");
    addParams(r.query, "query");
    for (const [name, schema] of Object.entries(r.headers ?? {})) {
      const { description, ...s } = jsonSchema(schema, "input");
      parameters.push({ name, in: "header", required: false, ...(description ? { description } : {}), schema: s });
    }
    const responses: Record<string, unknown> = {};
    for (const [status, spec] of Object.entries(r.responses)) {
      responses[status] = {
        description: spec.description,
        ...(spec.headers
          ? {
              headers: Object.fromEntries(
                Object.entries(spec.headers).map(([h, d]) => [h, { description: d, schema: { type: "string" } }]),
              ),
            }
          : {}),
        ...(spec.schema
          ? { content: { [spec.contentType ?? "application/json"]: { schema: ref(spec.schema, "output") } } }
          : {}),
      };
    }
    (paths[openApiPath(r.path)] ??= {})[r.method] = {
      operationId: operationId(r),
      summary: r.summary,
      ...(r.description ? { description: r.description } : {}),
      tags: [r.tag],
      "x-scope": r.scope,
      security: r.scope === "public" ? [] : [{ bearerAuth: [r.scope] }],
      ...(parameters.length ? { parameters } : {}),
      ...(r.body
        ? {
            requestBody: {
              required: r.bodyRequired === true,
              content: { "application/json": { schema: ref(r.body, "input") } },
            },
          }
        : {}),
      responses,
    };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: info.title ?? "Patchbay Coding Agent API",
      version: info.version,
      license: { name: "MIT", identifier: "MIT" },
      description:
        info.description ??
        "Prompt in, sandboxed OpenCode agent run, patch and optional draft pull request out. Wire-compatible with the hosted Coding Agent API: " +
          "change the base URL and the key. Authenticate with `Authorization: Bearer <key>`; every route names its scope in `x-scope`. " +
          "Errors are `{error: {code, message, details?}}`.",
    },
    servers: [{ url: "/" }],
    tags: [
      { name: "runs", description: "Coding agent runs" },
      { name: "groups", description: "Groups of sibling attempts started by one run request (`attempts`)" },
      { name: "keys", description: "API keys (admin)" },
      { name: "secrets", description: "Secrets stored once per owner, named by runs" },
      { name: "webhooks", description: "Signed webhooks (Standard Webhooks) for every run of an owner" },
      { name: "environments", description: "Setup's cached layers (admin)" },
      { name: "owners", description: "Owners' daily cost caps (admin)" },
      { name: "meta", description: "Health, readiness and this document" },
    ],
    components: {
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          description: "An API key from `patchbay keys create` or `POST /api/v1/keys`",
        },
      },
      schemas: components,
    },
    paths,
  };
}

function operationId(r: RouteSpec): string {
  const words = r.path
    .replace(/^\/api\/v1\/(coding-agent\/)?/, "")
    .split("/")
    .filter(Boolean)
    .map((seg) =>
      seg.startsWith(":")
        ? "By" + seg[1]!.toUpperCase() + seg.slice(2)
        : seg.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? "").toUpperCase()),
    );
  const joined = words.map((w, i) => (i === 0 ? w : w[0]!.toUpperCase() + w.slice(1))).join("");
  return r.method + joined[0]!.toUpperCase() + joined.slice(1);
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
/** Inline code spans of the descriptions (`x`) as <code>, after escaping. */
const prose = (s: string) =>
  esc(s)
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");

/** A self-contained HTML rendering of the document: every route, its parameters, bodies and answers. */
export function renderDocsPage(doc: JsonSchema): string {
  const info = doc.info as { title: string; version: string; description: string };
  const paths = doc.paths as Record<string, Record<string, Record<string, unknown>>>;
  const schemas = (doc.components as { schemas: Record<string, unknown> }).schemas;
  const pretty = (v: unknown) => `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`;
  const schemaHtml = (s: unknown) => {
    const r = (s as { $ref?: string }).$ref;
    return r
      ? `<a href="#schema-${esc(r.split("/").pop()!)}">${esc(r.split("/").pop()!)}</a>`
      : `<details><summary>schema</summary>${pretty(s)}</details>`;
  };
  const ops: string[] = [];
  const toc: string[] = [];
  for (const [p, methods] of Object.entries(paths)) {
    for (const [m, op] of Object.entries(methods)) {
      const id = String(op.operationId);
      toc.push(`<li><a href="#${esc(id)}"><span class="m ${m}">${m.toUpperCase()}</span> ${esc(p)}</a></li>`);
      const params =
        (op.parameters as
          { name: string; in: string; required: boolean; description?: string; schema: unknown }[] | undefined) ?? [];
      const body = op.requestBody as { required: boolean; content: Record<string, { schema: unknown }> } | undefined;
      const responses = op.responses as Record<
        string,
        { description: string; content?: Record<string, { schema: unknown }> }
      >;
      ops.push(`<section id="${esc(id)}">
<h3><span class="m ${m}">${m.toUpperCase()}</span> <code>${esc(p)}</code></h3>
<p class="summary">${esc(String(op.summary))} <span class="scope">scope: ${esc(String(op["x-scope"]))}</span></p>
${op.description ? `<p>${prose(String(op.description))}</p>` : ""}
${params.length ? `<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>${params.map((x) => `<tr><td><code>${esc(x.name)}</code></td><td>${esc(x.in)}</td><td>${x.required ? "yes" : "no"}</td><td>${x.description ? prose(x.description) : ""}</td></tr>`).join("")}</table>` : ""}
${body ? `<p><strong>Body</strong> (${body.required ? "required" : "optional"}, application/json): ${schemaHtml(body.content["application/json"]!.schema)}</p>` : ""}
<table><tr><th>status</th><th>meaning</th><th>body</th></tr>${Object.entries(responses)
        .map(([status, r]) => {
          const content = r.content ? Object.entries(r.content)[0] : undefined;
          return `<tr><td>${esc(status)}</td><td>${prose(r.description)}</td><td>${content ? `${esc(content[0])} ${schemaHtml(content[1].schema)}` : ""}</td></tr>`;
        })
        .join("")}</table>
</section>`);
    }
  }
  const schemaSections = Object.entries(schemas).map(
    ([name, s]) => `<section id="schema-${esc(name)}"><h3>${esc(name)}</h3>${pretty(s)}</section>`,
  );
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(info.title)}</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2rem auto;padding:0 1rem;color:#1d1d1f}
code,pre{font:13px ui-monospace,monospace}pre{background:#f5f5f7;padding:.75rem;overflow:auto;max-height:28rem}
section{border-top:1px solid #ddd;padding:.5rem 0}table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
.m{display:inline-block;min-width:4.5em;font:bold 12px monospace;color:#fff;border-radius:3px;padding:2px 6px;text-align:center}
.get{background:#0a7d32}.post{background:#0b5cad}.delete{background:#b3261e}.scope{color:#666;font-size:13px;margin-left:.5rem}
ul.toc{list-style:none;padding:0}ul.toc a{text-decoration:none}
</style></head><body>
<h1>${esc(info.title)} <small>${esc(info.version)}</small></h1>
<p>${prose(info.description)}</p>
<p>Machine-readable: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a> (OpenAPI ${esc(String(doc.openapi))}).</p>
<h2>Routes</h2><ul class="toc">${toc.join("")}</ul>
${ops.join("\n")}
<h2>Schemas</h2>
${schemaSections.join("\n")}
</body></html>`;
}
