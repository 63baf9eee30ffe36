/**
 * The dashboard's copy of the typed client (src/dashboard/vendor/patchbay-client.js) is what
 * `npm run dashboard:build` makes from client/ now: a client change not rebuilt fails here.
 */
import fs from "node:fs";
import { describe, expect, it } from "vitest";
import { buildDashboardClient, DASHBOARD_CLIENT_FILE } from "../../scripts/build-dashboard-client.ts";

describe("the dashboard's client bundle", () => {
  it("is committed as esbuild makes it from client/ now (npm run dashboard:build)", async () => {
    const committed = fs.readFileSync(DASHBOARD_CLIENT_FILE, "utf8");
    const fresh = await buildDashboardClient();
    expect(
      committed === fresh,
      "src/dashboard/vendor/patchbay-client.js is stale: run `npm run dashboard:build` and commit it",
    ).toBe(true);
    // A browser module: no Node built-in pulled in, and the client's entry points exported.
    expect(fresh).not.toMatch(/from\s+["']node:/);
    expect(fresh).toMatch(/export \{[^}]*createPatchbayClient[^}]*\}/);
  });
});
