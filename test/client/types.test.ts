/**
 * The committed client types (client/api.ts) are what `npm run client:generate` makes from the
 * route table now: a route or schema changed without regenerating fails here.
 */
import fs from "node:fs";
import { describe, expect, it } from "vitest";
import { CLIENT_TYPES_FILE, generateClientTypes } from "../../scripts/generate-client.ts";

describe("the typed client", () => {
  it("has committed types that match the OpenAPI document (npm run client:generate)", async () => {
    const committed = fs.readFileSync(CLIENT_TYPES_FILE, "utf8");
    const fresh = await generateClientTypes();
    // A diff of 3000 lines helps nobody: say what to run.
    expect(committed === fresh, "client/api.ts is stale: run `npm run client:generate` and commit it").toBe(true);
    expect(fresh).toContain('"/api/v1/coding-agent/runs/{id}/stream"');
  });
});
