/**
 * `/api/v1/environments` (admin): the setup cache's layers listed least recently used first,
 * dropped one by one; other keys are refused. Layers here are files put where the cache keeps
 * them (the cache itself is tested in test/engine/environment/).
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOADED } from "../support/harness.ts";
import { serveHarness, type HttpHarness } from "../support/http.ts";

let h: HttpHarness;
beforeAll(async () => {
  h = await serveHarness();
}, LOADED.hookMs);
afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("environments (admin)", () => {
  it("lists cached layers oldest use first, drops one, and answers 404 for a layer it does not hold", async () => {
    const dir = path.join(h.pb.dataDir, "cache", "env");
    fs.mkdirSync(dir, { recursive: true });
    const [older, newer] = ["a".repeat(40), "b".repeat(40)];
    fs.writeFileSync(path.join(dir, `${newer}.tar`), Buffer.alloc(2048));
    fs.writeFileSync(path.join(dir, `${older}.tar`), Buffer.alloc(1024));
    const past = new Date(Date.now() - 3_600_000);
    fs.utimesSync(path.join(dir, `${older}.tar`), past, past);

    const list = await h.api("GET", "/api/v1/environments", { key: h.keys.admin });
    expect(list.status).toBe(200);
    expect(list.json.environments).toEqual([
      { key: older, bytes: 1024, lastUsedAt: past.toISOString(), storage: "archive" },
      { key: newer, bytes: 2048, lastUsedAt: expect.any(String), storage: "archive" },
    ]);
    for (const key of [h.keys.rw, h.keys.ro])
      expect((await h.api("GET", "/api/v1/environments", { key })).status).toBe(403);
    expect((await h.api("DELETE", `/api/v1/environments/${older}`, { key: h.keys.rw })).status).toBe(403);

    expect((await h.api("DELETE", `/api/v1/environments/${older}`, { key: h.keys.admin })).status).toBe(204);
    expect(fs.existsSync(path.join(dir, `${older}.tar`))).toBe(false);
    const again = await h.api("DELETE", `/api/v1/environments/${older}`, { key: h.keys.admin });
    expect(again.status).toBe(404);
    expect(again.json.error.code).toBe("environment_not_found");
    const hostile = await h.api("DELETE", "/api/v1/environments/..%2F..%2Fstore.db", { key: h.keys.admin });
    expect(hostile.status).toBe(404);
    expect(fs.existsSync(path.join(h.pb.dataDir, "store.db"))).toBe(true);
  });
});
