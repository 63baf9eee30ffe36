/**
 * Writes client/api.ts: the types of the REST API, generated with openapi-typescript from the
 * OpenAPI document the server serves (built here from the same route table, no server needed).
 * `npm run client:generate`; test/client/types.test.ts fails when the committed file is stale.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";
import prettier from "prettier";
import type { Engine, KeyService } from "../src/engine/index.ts";
import { apiRoutes, openApiDocument } from "../src/http/app.ts";

export const CLIENT_TYPES_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../client/api.ts");

const HEADER = `/**
 * The REST API's types, generated from its OpenAPI document by openapi-typescript.
 * Do not edit: run \`npm run client:generate\` after changing a route or a schema.
 */
`;

/** The text client/api.ts must hold for the routes as they are now. */
export async function generateClientTypes(): Promise<string> {
  // The route table only; no handler runs, so no engine, key service or metrics are needed.
  const unused = {} as never;
  const routes = apiRoutes({
    engine: unused as Engine,
    keys: unused as KeyService,
    metrics: { render: async () => "", contentType: "text/plain", sseSubscriber: () => () => undefined },
  });
  const doc = openApiDocument(routes) as unknown as Parameters<typeof openapiTS>[0];
  const text = HEADER + astToString(await openapiTS(doc));
  // Formatted as the repository's other files are, so `prettier --check` passes on it.
  const options = (await prettier.resolveConfig(CLIENT_TYPES_FILE)) ?? {};
  return prettier.format(text, { ...options, filepath: CLIENT_TYPES_FILE });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  fs.writeFileSync(CLIENT_TYPES_FILE, await generateClientTypes());
  process.stderr.write(`wrote ${path.relative(process.cwd(), CLIENT_TYPES_FILE)}\n`);
}
