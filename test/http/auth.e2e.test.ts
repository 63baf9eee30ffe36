/**
 * Authorization, the route inventory, limits and the error contract, over real HTTP against
 * the real engine. Runs here fail fast (unknown ref) so no OpenCode starts, except the one
 * run that holds the active-run cap.
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import express from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpApp, declaredRoutes } from "../../src/http/app.ts";
import { tempDir, waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { serveApp, serveHarness, type HttpHarness, type Keys } from "../support/http.ts";

const API = "/api/v1/coding-agent";
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const run$ = promisify(execFile);
let h: HttpHarness;
let runId: string;

beforeAll(async () => {
  h = await serveHarness();
  // A run of owner-a that fails at once (no such ref): a real run record, no OpenCode.
  const r = await h.api("POST", `${API}/runs`, {
    body: { repository: "acme/web", prompt: "x", baseRef: "no-such-branch" },
  });
  expect(r.status).toBe(201);
  runId = r.json.id;
  expect((await h.turnOver(runId, { what: "the run to fail" })).status).toBe("failed");
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

type Cred = "none" | "bad" | "revoked" | "readOnly" | "otherOwner";
const CREDS: Cred[] = ["none", "bad", "revoked", "readOnly", "otherOwner"];

function keyFor(cred: Cred, keys: Keys): string | null {
  switch (cred) {
    case "none":
      return null;
    case "bad":
      return "pb_not-a-real-key-000000000000000000000000000";
    case "revoked":
      return keys.revoked;
    case "readOnly":
      return keys.ro;
    case "otherOwner":
      return keys.other;
  }
}

/**
 * One entry per route of the app: how to call it, and the status each credential gets.
 * `skip` marks a cell that does not apply (another owner creating its own run is allowed).
 */
interface Case {
  path: () => string;
  body?: unknown;
  expect: Partial<Record<Cred, number | "skip">>;
}
const PUBLIC = { none: 200, bad: 200, revoked: 200, readOnly: 200, otherOwner: 200 };
const MATRIX: Record<string, Case> = {
  "post /api/v1/coding-agent/runs": {
    path: () => `${API}/runs`,
    body: { repository: "acme/web", prompt: "x", baseRef: "no-such-branch" },
    expect: { readOnly: 403, otherOwner: "skip" },
  },
  "get /api/v1/coding-agent/runs": { path: () => `${API}/runs`, expect: { readOnly: 200, otherOwner: 200 } },
  "get /api/v1/coding-agent/runs/:id": {
    path: () => `${API}/runs/${runId}`,
    expect: { readOnly: 200, otherOwner: 404 },
  },
  "post /api/v1/coding-agent/runs/:id/messages": {
    path: () => `${API}/runs/${runId}/messages`,
    body: { endSession: true },
    expect: { readOnly: 403, otherOwner: 404 },
  },
  "get /api/v1/coding-agent/runs/:id/stream": {
    path: () => `${API}/runs/${runId}/stream`,
    expect: { readOnly: 200, otherOwner: 404 },
  },
  "delete /api/v1/coding-agent/runs/:id": {
    path: () => `${API}/runs/${runId}`,
    expect: { readOnly: 403, otherOwner: 404 },
  },
  "post /api/v1/coding-agent/runs/:id/cancel": {
    path: () => `${API}/runs/${runId}/cancel`,
    expect: { readOnly: 403, otherOwner: 404 },
  },
  "get /api/v1/coding-agent/groups/:id": {
    path: () => `${API}/groups/grp_nope`,
    expect: { readOnly: 404, otherOwner: 404 },
  },
  "get /api/v1/coding-agent/models": { path: () => `${API}/models`, expect: { readOnly: 200, otherOwner: 200 } },
  "post /api/v1/keys": {
    path: () => "/api/v1/keys",
    body: { name: "matrix" },
    expect: { readOnly: 403, otherOwner: 403 },
  },
  "get /api/v1/keys": { path: () => "/api/v1/keys", expect: { readOnly: 403, otherOwner: 403 } },
  "delete /api/v1/keys/:id": { path: () => "/api/v1/keys/key_nope", expect: { readOnly: 403, otherOwner: 403 } },
  "post /api/v1/secrets": {
    path: () => "/api/v1/secrets",
    body: { name: "MATRIX", value: "matrix-value" },
    expect: { readOnly: 403, otherOwner: "skip" },
  },
  "get /api/v1/secrets": { path: () => "/api/v1/secrets", expect: { readOnly: 200, otherOwner: 200 } },
  "delete /api/v1/secrets/:name": {
    path: () => "/api/v1/secrets/NOPE",
    expect: { readOnly: 403, otherOwner: 404 },
  },
  "post /api/v1/webhooks": {
    path: () => "/api/v1/webhooks",
    body: { url: "https://hooks.example.com/matrix" },
    expect: { readOnly: 403, otherOwner: "skip" },
  },
  "get /api/v1/webhooks": { path: () => "/api/v1/webhooks", expect: { readOnly: 200, otherOwner: 200 } },
  "delete /api/v1/webhooks/:id": {
    path: () => "/api/v1/webhooks/wh_nope",
    expect: { readOnly: 403, otherOwner: 404 },
  },
  "get /api/v1/coding-agent/runs/:id/deliveries": {
    path: () => `${API}/runs/${runId}/deliveries`,
    expect: { readOnly: 200, otherOwner: 404 },
  },
  "post /api/v1/coding-agent/runs/:id/deliveries/:deliveryId/redeliver": {
    path: () => `${API}/runs/${runId}/deliveries/msg_nope/redeliver`,
    expect: { readOnly: 403, otherOwner: 404 },
  },
  "get /api/v1/environments": { path: () => "/api/v1/environments", expect: { readOnly: 403, otherOwner: 403 } },
  "delete /api/v1/environments/:key": {
    path: () => "/api/v1/environments/nope",
    expect: { readOnly: 403, otherOwner: 403 },
  },
  "get /api/v1/owners/:owner/limits": {
    path: () => "/api/v1/owners/owner-a/limits",
    expect: { readOnly: 403, otherOwner: 403 },
  },
  "put /api/v1/owners/:owner/limits": {
    path: () => "/api/v1/owners/owner-a/limits",
    body: { dailyCostUsd: 100 },
    expect: { readOnly: 403, otherOwner: 403 },
  },
  "get /healthz": { path: () => "/healthz", expect: PUBLIC },
  "get /readyz": { path: () => "/readyz", expect: PUBLIC },
  "get /api/v1/openapi.json": { path: () => "/api/v1/openapi.json", expect: PUBLIC },
  "get /api/v1/docs": { path: () => "/api/v1/docs", expect: PUBLIC },
};

describe("authorization", { timeout: LOADED.testMs }, () => {
  it("every route declares a scope, and the matrix covers every route of the app", () => {
    const app = createHttpApp({ engine: h.pb.engine, keys: h.pb.keys, log: h.pb.log, config: h.pb.config });
    const routes = declaredRoutes(app);
    expect(routes.length).toBe(28);
    for (const r of routes) expect(r.scope, `${r.method} ${r.path} has no declared scope`).toBeDefined();
    expect(routes.map((r) => `${r.method} ${r.path}`).sort()).toEqual(Object.keys(MATRIX).sort());
  });

  it("the inventory notices a route added without a scope (and one mounted through the MCP hook with one)", () => {
    const app = createHttpApp({
      engine: h.pb.engine,
      keys: h.pb.keys,
      log: h.pb.log,
      config: h.pb.config,
      mountMcp: (a, auth) => {
        a.post("/mcp", auth("read:builder"), (_req, res) => void res.json({}));
      },
    });
    app.get("/sneaky", (_req: express.Request, res: express.Response) => void res.json({}));
    const routes = declaredRoutes(app);
    expect(routes.find((r) => r.path === "/mcp")?.scope).toBe("read:builder");
    expect(routes.find((r) => r.path === "/sneaky")?.scope).toBeUndefined();
  });

  it("every route × {no key, bad key, revoked key, read-only key, other owner's key} answers the right status", async () => {
    const failures: string[] = [];
    for (const [route, c] of Object.entries(MATRIX)) {
      const method = route.split(" ")[0]!.toUpperCase();
      for (const cred of CREDS) {
        const isPublic = c.expect === PUBLIC;
        const want = c.expect[cred] ?? (isPublic ? 200 : 401);
        if (want === "skip") continue;
        const r = await h.api(method, c.path(), {
          key: keyFor(cred, h.keys),
          ...(c.body !== undefined ? { body: c.body } : {}),
        });
        if (r.status !== want)
          failures.push(`${route} as ${cred}: ${r.status} (wanted ${want}) ${r.text.slice(0, 120)}`);
        if (r.status >= 400) {
          expect(r.json?.error?.code, `${route} as ${cred}`).toEqual(expect.any(String));
          if (r.status === 401) expect(r.headers.get("www-authenticate")).toContain("Bearer");
        }
      }
    }
    expect(failures).toEqual([]);
    // The other owner's 404 is the same answer as for a run that does not exist at all.
    const ghost = await h.api("GET", `${API}/runs/run_doesnotexist`);
    const other = await h.api("GET", `${API}/runs/${runId}`, { key: h.keys.other });
    expect(other.json.error.code).toBe(ghost.json.error.code);
  });

  it("admin key routes create a key shown once, list keys without hashes, and revoke at once", async () => {
    const created = await h.api("POST", "/api/v1/keys", {
      key: h.keys.admin,
      body: { name: "ci bot", scopes: ["read:builder"] },
    });
    expect(created.status).toBe(201);
    expect(created.json.key).toMatch(/^pb_/);
    expect(created.json.apiKey).toMatchObject({ name: "ci bot", scopes: ["read:builder"], revokedAt: null });
    expect(created.json.apiKey.hash).toBeUndefined();
    const key = created.json.key as string;
    expect((await h.api("GET", `${API}/runs`, { key })).status).toBe(200);
    const list = await h.api("GET", "/api/v1/keys", { key: h.keys.admin });
    expect(list.json.keys.some((k: { id: string }) => k.id === created.json.apiKey.id)).toBe(true);
    expect(list.text).not.toContain(key);
    expect(list.text).not.toContain('"hash"');
    const revoked = await h.api("DELETE", `/api/v1/keys/${created.json.apiKey.id}`, { key: h.keys.admin });
    expect(revoked.status).toBe(200);
    expect(revoked.json.revokedAt).not.toBeNull();
    expect((await h.api("GET", `${API}/runs`, { key })).status).toBe(401);
    expect((await h.api("DELETE", "/api/v1/keys/key_nope", { key: h.keys.admin })).json.error.code).toBe(
      "key_not_found",
    );
    expect((await h.api("POST", "/api/v1/keys", { key: h.keys.admin, body: { name: "x", hash: "h" } })).status).toBe(
      400,
    );
  });

  it("a key limited to acme/* (admin route field repos) cannot start a run on other/repo: 403 repository_not_allowed, no run", async () => {
    const created = await h.api("POST", "/api/v1/keys", {
      key: h.keys.admin,
      body: { name: "acme only", ownerId: "owner-scoped", repos: ["acme/*"] },
    });
    expect(created.status).toBe(201);
    expect(created.json.apiKey.repos).toEqual(["acme/*"]);
    const key = created.json.key as string;
    for (const repository of ["other/repo", "acmex/web"]) {
      const refused = await h.api("POST", `${API}/runs`, { key, body: { repository, prompt: "x" } });
      expect(refused.status, repository).toBe(403);
      expect(refused.json.error).toMatchObject({ code: "repository_not_allowed" });
      expect(refused.json.error.message).toContain(repository);
    }
    expect((await h.api("GET", `${API}/runs`, { key })).json.runs).toEqual([]);
    // Inside the list it starts (and fails fast on the unknown ref, so no OpenCode starts).
    const allowed = await h.api("POST", `${API}/runs`, {
      key,
      body: { repository: "acme/web", prompt: "x", baseRef: "no-such-branch" },
    });
    expect(allowed.status).toBe(201);
    await h.turnOver(allowed.json.id, { key, what: "the allowed run to fail" });
    // Patterns are validated: a bare owner, a URL or an empty list is refused.
    for (const repos of [["acme"], ["https://github.com/acme/*"], []]) {
      const bad = await h.api("POST", "/api/v1/keys", { key: h.keys.admin, body: { name: "bad", repos } });
      expect(bad.status, JSON.stringify(repos)).toBe(400);
    }
  });

  it("keys made by `patchbay keys create` act as one user and see each other's runs; --owner makes another tenant", async () => {
    // The real CLI, before a server opens the data dir (it belongs to one process at a time).
    const dataDir = tempDir("cli-keys");
    const cli = async (...args: string[]) =>
      (
        await run$(process.execPath, ["bin/patchbay.mjs", "keys", "create", ...args], {
          cwd: ROOT,
          env: {
            PATH: process.env.PATH ?? "/usr/bin:/bin",
            HOME: process.env.HOME ?? "/tmp",
            PATCHBAY_DATA_DIR: dataDir,
          },
        })
      ).stdout.trim();
    const laptop = await cli("--name", "laptop");
    const ci = await cli("--name", "ci");
    const tenant = await cli("--name", "tenant", "--owner", "acme-team");
    const other = await h.openAnother({ PATCHBAY_DATA_DIR: dataDir });
    const served = await serveApp(other);
    try {
      const api = (method: string, p: string, key: string, body?: unknown) =>
        h.api(method, `${served.base}${p}`, { key, ...(body ? { body } : {}) });
      // Fails fast on the unknown ref: a real run record, no OpenCode.
      const created = await api("POST", `${API}/runs`, laptop, {
        repository: "acme/web",
        prompt: "x",
        baseRef: "no-such-branch",
      });
      expect(created.status).toBe(201);
      const id = created.json.id as string;
      expect((await api("GET", `${API}/runs/${id}`, ci)).status).toBe(200);
      expect((await api("GET", `${API}/runs`, ci)).json.runs.map((r: { id: string }) => r.id)).toEqual([id]);
      expect((await api("GET", `${API}/runs/${id}`, tenant)).status).toBe(404);
      expect((await api("GET", `${API}/runs`, tenant)).json.runs).toEqual([]);
      // The admin route does the same: no ownerId is the instance's user, an ownerId another tenant.
      const admin = (await other.keys.create({ name: "admin", scopes: ["admin"] })).key;
      const viaRoute = await api("POST", "/api/v1/keys", admin, { name: "route" });
      expect(viaRoute.json.apiKey.ownerId).toBe("local");
      expect((await api("GET", `${API}/runs/${id}`, viaRoute.json.key)).status).toBe(200);
      const teamKey = await api("POST", "/api/v1/keys", admin, { name: "team", ownerId: "acme-team" });
      expect((await api("GET", `${API}/runs/${id}`, teamKey.json.key)).status).toBe(404);
      await waitFor(async () => (await api("GET", `${API}/runs/${id}`, ci)).json.status === "failed" || undefined, {
        timeoutMs: LOADED.turnWaitMs,
        what: "the CLI key's run to fail",
      });
    } finally {
      await served.close();
      await other.close();
    }
  });
});

describe("the error contract", { timeout: LOADED.testMs }, () => {
  it("answers JSON errors: 404 unknown route, 405 wrong method with Allow, 400 malformed JSON, 413 too large, 415 not JSON", async () => {
    const notFound = await h.api("GET", "/api/v1/nope");
    expect(notFound.status).toBe(404);
    expect(notFound.json.error.code).toBe("not_found");
    const wrong = await h.api("PUT", `${API}/runs/${runId}`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get("allow")).toBe("GET, DELETE, HEAD");
    expect(wrong.json.error.code).toBe("method_not_allowed");
    const malformed = await h.api("POST", `${API}/runs`, {
      raw: '{"repository": "acme/web",',
      headers: { "content-type": "application/json" },
    });
    expect(malformed.status).toBe(400);
    expect(malformed.json.error.code).toBe("invalid_json");
    // Routes without images keep 1 MB (runs and messages take 72 MB: tested in test/http/images.e2e.test.ts).
    const huge = await h.api("POST", `${API}/runs/${runId}/cancel`, { body: { pad: "x".repeat(1_200_000) } });
    expect(huge.status).toBe(413);
    expect(huge.json.error.code).toBe("payload_too_large");
    const text = await h.api("POST", `${API}/runs`, {
      raw: "repository=acme/web",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect(text.status).toBe(415);
    expect(text.json.error.code).toBe("unsupported_media_type");
  });

  it("refuses unknown fields (no mass assignment), over-long prompts and bad values with 400 naming the field, and creates no run", async () => {
    const before = (await h.api("GET", `${API}/runs?limit=100`)).json.runs.length;
    const cases: [unknown, string][] = [
      [{ repository: "acme/web", prompt: "x", status: "completed" }, "status"],
      [{ repository: "acme/web", prompt: "x", ownerId: "owner-b" }, "ownerId"],
      [{ repository: "acme/web", prompt: "x".repeat(120_001) }, "prompt"],
      [{ repository: "https://evil.example/acme/web", prompt: "x" }, "repository"],
      [{ repository: "acme/../web", prompt: "x" }, "repository"],
      [{ repository: "acme/web", prompt: "x", baseRef: "--upload-pack=evil" }, "baseRef"],
      [{ repository: "acme/web", prompt: "x", billing: { mode: "openrouter" } }, "openRouterApiKey"],
      [{ repository: "acme/web", prompt: "x", validationMode: "everything" }, "validationMode"],
      [{ prompt: "x" }, "repository"],
    ];
    for (const [body, field] of cases) {
      const r = await h.api("POST", `${API}/runs`, { body });
      expect(r.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(r.json.error.message).toContain(field);
    }
    expect((await h.api("GET", `${API}/runs?limit=100`)).json.runs.length).toBe(before);
    const exactly = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "x".repeat(120_000), baseRef: "no-such-branch" },
    });
    expect(exactly.status).toBe(201);
  });

  it("a key over its request rate answers 429 with Retry-After; other keys are unaffected", async () => {
    const base = await h.extraApp({ rateLimitPerMin: 3 });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await h.api("GET", `${base}${API}/models`, { key: h.keys.ro })).status);
    expect(statuses).toEqual([200, 200, 200, 429]);
    const limited = await h.api("GET", `${base}${API}/models`, { key: h.keys.ro });
    expect(limited.json.error.code).toBe("rate_limited");
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
    expect((await h.api("GET", `${base}${API}/models`, { key: h.keys.other })).status).toBe(200);
  });

  it("a key at its active-run cap answers 429 with Retry-After until a run ends", async () => {
    // The cap is the engine's (every front alike), so it takes a Patchbay configured with it.
    const capped = await h.openAnother({ PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: "1" });
    const served = await serveApp(capped);
    const base = served.base;
    const key = (await capped.keys.create({ name: "capped", scopes: ["read:builder", "write:builder"] })).key;
    h.model.script("test/hold", [[{ hang: true }]]);
    const first = await h.api("POST", `${base}${API}/runs`, {
      key,
      body: { repository: "acme/web", prompt: "hold", modelId: "test/hold" },
    });
    expect(first.status).toBe(201);
    try {
      const second = await h.api("POST", `${base}${API}/runs`, {
        key,
        body: { repository: "acme/web", prompt: "again", modelId: "test/hold" },
      });
      expect(second.status).toBe(429);
      expect(second.json.error.code).toBe("too_many_active_runs");
      expect(Number(second.headers.get("retry-after"))).toBeGreaterThan(0);
    } finally {
      expect((await h.api("POST", `${base}${API}/runs/${first.json.id}/cancel`, { key })).json.status).toBe(
        "cancelled",
      );
    }
    const third = await h.api("POST", `${base}${API}/runs`, {
      key,
      body: { repository: "acme/web", prompt: "x", baseRef: "no-such-branch" },
    });
    expect(third.status).toBe(201);
    await served.close();
  });

  it("healthz, readyz and the docs page answer without a key", async () => {
    expect((await h.api("GET", "/healthz", { key: null })).json).toEqual({ ok: true });
    expect((await h.api("GET", "/readyz", { key: null })).json).toEqual({ ready: true });
    const docs = await h.api("GET", "/api/v1/docs", { key: null });
    expect(docs.headers.get("content-type")).toContain("text/html");
    expect(docs.text).not.toMatch(/<script/i);
    for (const p of [
      "/api/v1/coding-agent/runs/{id}/stream",
      "/api/v1/coding-agent/runs/{id}/messages",
      "/api/v1/keys",
    ])
      expect(docs.text).toContain(p);
  });
});
