/**
 * Property: malformed and hostile requests on every route — random JSON bodies, raw junk,
 * prototype-pollution keys, bad query strings and headers, odd ids — always answer a 4xx
 * JSON error, never take the server down, and never create a run or a key.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CreateKeyInput } from "../../src/engine/keys/keys.ts";
import { CreateRunInput, MessageInput } from "../../src/engine/run/schema.ts";
import { createHttpApp, declaredRoutes } from "../../src/http/app.ts";
import { LOADED } from "../support/harness.ts";
import { serveHarness, type HttpHarness } from "../support/http.ts";

let h: HttpHarness;

beforeAll(async () => {
  h = await serveHarness();
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

async function counts() {
  const runs = await Promise.all(
    ["owner-a", "owner-b"].map(async (o) => (await h.pb.store.listRuns(o, { limit: 100 })).runs.length),
  );
  return { runs, keys: (await h.pb.keys.list()).length };
}

const hostileString = fc.oneof(
  fc.string(),
  fc.constantFrom(
    "",
    " ",
    "-1",
    "0",
    "101",
    "1e3",
    "NaN",
    "null",
    "[]",
    "{}",
    "../..",
    "%00",
    "\u0000",
    "🙂".repeat(50),
    "a".repeat(5000),
    "<script>",
    "' OR 1=1 --",
    "__proto__",
    "999999999999999999999",
  ),
);
const hostileJson = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.dictionary(
    fc.constantFrom(
      "__proto__",
      "constructor",
      "prototype",
      "status",
      "ownerId",
      "id",
      "prompt",
      "repository",
      "endSession",
      "publish",
      "billing",
      "limit",
    ),
    fc.jsonValue({ maxDepth: 2 }),
  ),
  fc.record({ prompt: hostileString, repository: hostileString }, { requiredKeys: [] }),
);
const rawBody = fc.oneof(
  hostileJson.map((v) => ({ raw: JSON.stringify(v), type: "application/json" })),
  fc.string().map((s) => ({ raw: s, type: "application/json" })),
  fc
    .constantFrom('{"__proto__":{"admin":true}}', '{"a":', "[1,2", "nul", '{"prompt":"x"}garbage', "\uFEFF{}")
    .map((raw) => ({ raw, type: "application/json" })),
  fc.string().map((s) => ({ raw: s, type: "text/plain" })),
  fc.string().map((s) => ({ raw: s, type: "application/x-www-form-urlencoded" })),
);
const hostileQuery = fc.oneof(
  fc
    .dictionary(fc.string({ minLength: 1, maxLength: 10 }), hostileString, { minKeys: 1, maxKeys: 3 })
    .map((d) => new URLSearchParams(d).toString()),
  fc.constantFrom(
    "limit=0",
    "limit=-5",
    "limit=abc",
    "limit=1&limit=2",
    "cursor=",
    "after=-1",
    "after=x",
    "after=1.5",
    "patch=yes",
    "events=2",
    "after=99999999",
    "%zz=1",
    "a[b]=c",
    "limit=101",
  ),
);
const hostileId = fc.oneof(
  fc.string({ minLength: 1, maxLength: 80 }).map(encodeURIComponent),
  fc.constantFrom("run_nope", "%E0%A4%A", "..%2F..%2Fetc", "a".repeat(300), "run_" + "x".repeat(60)),
);

/** A body is hostile only if the route's own schema refuses it (a random valid body is no attack). */
function refusedBy(route: string, body: unknown): boolean {
  if (route === "post /api/v1/coding-agent/runs") return !CreateRunInput.safeParse(body).success;
  if (route === "post /api/v1/coding-agent/runs/:id/messages") return !MessageInput.safeParse(body).success;
  if (route === "post /api/v1/keys") return !CreateKeyInput.safeParse(body).success;
  return true;
}

describe("hostile requests", { timeout: LOADED.testMs }, () => {
  it("every route answers malformed bodies, query strings, headers and ids with a 4xx JSON error, stays up and creates nothing", async () => {
    const app = createHttpApp({ engine: h.pb.engine, keys: h.pb.keys, log: h.pb.log, config: h.pb.config });
    const routes = declaredRoutes(app);
    const before = await counts();
    let requests = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        fc.record({
          body: rawBody,
          query: hostileQuery,
          id: hostileId,
          header: fc.constantFrom("none", "last-event-id", "idempotency-key", "authorization"),
        }),
        fc.string({ maxLength: 40 }),
        async (route, req, junk) => {
          const name = `${route.method} ${route.path}`;
          let parsed: unknown = undefined;
          try {
            parsed = JSON.parse(req.body.raw);
          } catch {
            parsed = undefined; // not JSON at all: hostile by construction
          }
          fc.pre(
            req.body.type !== "application/json" ||
              parsed === undefined ||
              refusedBy(name, parsed) ||
              route.method !== "post",
          );
          const path = route.path.replace(":id", req.id);
          // GETs get a hostile query; POST/DELETE a hostile body (and the query too).
          const url = `${h.base}${path}?${req.query}`;
          const headers: Record<string, string> = {
            authorization: `Bearer ${name.includes("/keys") ? h.keys.admin : h.keys.rw}`,
          };
          if (req.header === "last-event-id") headers["last-event-id"] = junk.replace(/[^\x20-\x7e]/g, "") || "x";
          if (req.header === "idempotency-key")
            headers["idempotency-key"] = junk.replace(/[^\x20-\x7e]/g, "") + " with space";
          if (req.header === "authorization") headers.authorization = `Bearer ${junk.replace(/[^\x21-\x7e]/g, "")}x`;
          const init: RequestInit = { method: route.method.toUpperCase(), headers };
          if (route.method !== "get") {
            headers["content-type"] = req.body.type;
            init.body = req.body.raw;
          }
          requests++;
          const res = await fetch(url, init);
          const text = await res.text();
          expect(
            res.status,
            `${name} ${url} ${req.body.raw.slice(0, 80)} -> ${text.slice(0, 200)}`,
          ).toBeGreaterThanOrEqual(400);
          expect(res.status, `${name} ${url} ${req.body.raw.slice(0, 80)} -> ${text.slice(0, 200)}`).toBeLessThan(500);
          expect(res.headers.get("content-type")).toContain("application/json");
          const json = JSON.parse(text) as { error: { code: string; message: string } };
          expect(typeof json.error.code).toBe("string");
          expect(typeof json.error.message).toBe("string");
        },
      ),
      { numRuns: 400, seed: Number(process.env.PATCHBAY_PROPERTY_SEED ?? 20240601) },
    );
    expect(requests).toBeGreaterThan(200);
    expect((await fetch(`${h.base}/healthz`)).status).toBe(200);
    expect(await counts()).toEqual(before);
  });
});
