import { describe, expect, it } from "vitest";
import { repositoryAllowed } from "../../../src/engine/keys/allow-list.ts";
import { createKeyService, hashKey } from "../../../src/engine/keys/keys.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { storeDbText, tempDir } from "../../helpers.ts";

async function withStore(fn: (store: RunStore, dataDir: string) => Promise<void>): Promise<void> {
  const dataDir = tempDir("keys");
  const store = await createSqliteStore({ dataDir });
  try {
    await fn(store, dataDir);
  } finally {
    await store.close();
  }
}

describe("API keys", () => {
  it("creates a pb_ key that verifies, with default scopes, acting as the instance's owner unless it names another", async () => {
    await withStore(async (store) => {
      const keys = createKeyService({ store, defaultOwnerId: "local" });
      expect(await keys.hasAnyKey()).toBe(false);
      const a = await keys.create({ name: "ci" });
      const b = await keys.create({ name: "laptop" });
      expect(a.key).toMatch(/^pb_[A-Za-z0-9_-]{43}$/);
      expect(a.record.scopes).toEqual(["read:builder", "write:builder"]);
      // Keys act as their user: two keys of the instance's user see the same runs.
      expect([a.record.ownerId, b.record.ownerId]).toEqual(["local", "local"]);
      expect(a.key.startsWith(a.record.prefix)).toBe(true);
      expect(await keys.verify(a.key)).toMatchObject({ id: a.record.id, name: "ci" });
      expect(await keys.hasAnyKey()).toBe(true);

      const shared = await keys.create({ name: "admin", ownerId: "own_team", scopes: ["admin", "read:builder"] });
      expect(shared.record).toMatchObject({ ownerId: "own_team", scopes: ["admin", "read:builder"] });
    });
  });

  it("keeps a repository allow-list on the key; owner/* matches that owner's repositories only, in any case", async () => {
    await withStore(async (store) => {
      const keys = createKeyService({ store, defaultOwnerId: "local" });
      const { key, record } = await keys.create({ name: "ci", repos: ["acme/*", "org/name", "acme/*"] });
      expect(record.repos).toEqual(["acme/*", "org/name"]);
      expect((await keys.verify(key))!.repos).toEqual(["acme/*", "org/name"]);
      expect((await keys.create({ name: "any" })).record.repos).toBeUndefined();
      for (const repos of [[], ["acme"], ["*/*"], ["acme/web/x"], ["https://github.com/acme/web"], ["acme/.."]]) {
        await expect(keys.create({ name: "bad", repos }), JSON.stringify(repos)).rejects.toMatchObject({
          code: "invalid_request",
        });
      }
    });
    const list = ["acme/*", "org/name"];
    expect(repositoryAllowed(list, "acme/web")).toBe(true);
    expect(repositoryAllowed(list, "ACME/Web")).toBe(true);
    expect(repositoryAllowed(list, "org/name")).toBe(true);
    expect(repositoryAllowed(list, "org/other")).toBe(false);
    expect(repositoryAllowed(list, "acmex/web")).toBe(false);
    expect(repositoryAllowed(list, "other/acme")).toBe(false);
    expect(repositoryAllowed(undefined, "anyone/anything")).toBe(true);
  });

  it("stores only the key's hash: the plaintext never appears in the store's database", async () => {
    await withStore(async (store, dataDir) => {
      const { key, record } = await createKeyService({ store, defaultOwnerId: "local" }).create({ name: "ci" });
      const json = storeDbText(dataDir);
      expect(json).not.toContain(key);
      expect(json).not.toContain(key.slice(record.prefix.length));
      expect(json).toContain(hashKey(key));
    });
  });

  it("refuses unknown, malformed and near-miss keys", async () => {
    await withStore(async (store) => {
      const keys = createKeyService({ store, defaultOwnerId: "local" });
      const { key } = await keys.create({ name: "ci" });
      const flipped = key.slice(0, -1) + (key.endsWith("A") ? "B" : "A");
      for (const k of [flipped, key + "x", key.slice(0, -1), "", "pb_", key.slice(3), "x".repeat(10_000)]) {
        expect(await keys.verify(k)).toBeUndefined();
      }
    });
  });

  it("compares the full hash in constant time, even when the store's lookup returns a wrong record", async () => {
    await withStore(async (store) => {
      const keys = createKeyService({ store, defaultOwnerId: "local" });
      const { key, record } = await keys.create({ name: "ci" });
      // A store whose lookup matches loosely (say, on a prefix of the hash) must not let a key in.
      const loose: RunStore = { ...store, findKeyByHash: async () => ({ ...record, hash: "0".repeat(64) }) };
      expect(await createKeyService({ store: loose, defaultOwnerId: "local" }).verify(key)).toBeUndefined();
      const short: RunStore = { ...store, findKeyByHash: async () => ({ ...record, hash: record.hash.slice(0, 32) }) };
      expect(await createKeyService({ store: short, defaultOwnerId: "local" }).verify(key)).toBeUndefined();
    });
  });

  it("a revoked key no longer verifies; revoking an unknown id is key_not_found", async () => {
    await withStore(async (store) => {
      let now = new Date("2026-01-01T00:00:00.000Z");
      const keys = createKeyService({ store, defaultOwnerId: "local", clock: () => now });
      const { key, record } = await keys.create({ name: "ci" });
      const revoked = await keys.revoke(record.id);
      expect(revoked.revokedAt).toBe("2026-01-01T00:00:00.000Z");
      expect(await keys.verify(key)).toBeUndefined();
      now = new Date("2026-02-01T00:00:00.000Z");
      expect((await keys.revoke(record.id)).revokedAt).toBe("2026-01-01T00:00:00.000Z");
      await expect(keys.revoke("key_missing")).rejects.toMatchObject({ code: "key_not_found" });
      // A revoked key still counts: the first-start admin key is not issued again.
      expect(await keys.hasAnyKey()).toBe(true);
      expect((await keys.list()).map((k) => k.id)).toEqual([record.id]);
    });
  });

  it("verifies by hash as by key (a dashboard session's re-check): unknown, malformed and revoked hashes refused", async () => {
    await withStore(async (store) => {
      const keys = createKeyService({ store, defaultOwnerId: "local" });
      const { key, record } = await keys.create({ name: "dash" });
      expect(record.hash).toBe(hashKey(key));
      expect((await keys.verifyHash(record.hash))?.id).toBe(record.id);
      for (const bad of ["", "zz", record.hash.toUpperCase(), record.hash.slice(1), hashKey("pb_other")])
        expect(await keys.verifyHash(bad)).toBeUndefined();
      await keys.revoke(record.id);
      expect(await keys.verifyHash(record.hash)).toBeUndefined();
    });
  });

  it("records lastUsedAt at most once a minute", async () => {
    await withStore(async (store) => {
      let now = new Date("2026-01-01T00:00:00.000Z");
      const keys = createKeyService({ store, defaultOwnerId: "local", clock: () => now });
      const { key, record } = await keys.create({ name: "ci" });
      expect((await keys.verify(key))!.lastUsedAt).toBe("2026-01-01T00:00:00.000Z");
      now = new Date("2026-01-01T00:00:59.000Z");
      expect((await keys.verify(key))!.lastUsedAt).toBe("2026-01-01T00:00:00.000Z");
      now = new Date("2026-01-01T00:01:00.000Z");
      await keys.verify(key);
      expect((await store.findKeyByHash(record.hash))!.lastUsedAt).toBe("2026-01-01T00:01:00.000Z");
    });
  });

  it("refuses a key without a name or with an unknown scope", async () => {
    await withStore(async (store) => {
      const keys = createKeyService({ store, defaultOwnerId: "local" });
      await expect(keys.create({ name: " " })).rejects.toMatchObject({ code: "invalid_request" });
      await expect(keys.create({ name: "x", scopes: ["root" as never] })).rejects.toMatchObject({
        code: "invalid_request",
      });
      await expect(keys.create({ name: "x", scopes: [] })).rejects.toMatchObject({ code: "invalid_request" });
    });
  });
});
