import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createSecretBox, loadOrCreateSecretKey, SECRET_KEY_FILE } from "../../../src/engine/secrets/secrets.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import { storeDbText, tempDir } from "../../helpers.ts";

const PLAINTEXT = "sk-or-v1-0123456789abcdef-very-secret";

describe("per-run secrets", () => {
  it("round-trips a secret for its run", () => {
    const box = createSecretBox(crypto.randomBytes(32));
    const sealed = box.seal("run_1", "openrouter", PLAINTEXT);
    expect(sealed).toMatchObject({ runId: "run_1", name: "openrouter" });
    expect(sealed.data).not.toContain(PLAINTEXT);
    expect(box.open(sealed)).toBe(PLAINTEXT);
    // A fresh IV each time: the same secret never gives the same ciphertext.
    expect(box.seal("run_1", "openrouter", PLAINTEXT).data).not.toBe(sealed.data);
  });

  it("a ciphertext moved to another run, or renamed, fails to decrypt", () => {
    const box = createSecretBox(crypto.randomBytes(32));
    const sealed = box.seal("run_1", "openrouter", PLAINTEXT);
    expect(() => box.open({ ...sealed, runId: "run_2" })).toThrow(
      expect.objectContaining({ code: "internal", message: expect.stringContaining("moved from another run") }),
    );
    expect(() => box.open({ ...sealed, name: "github" })).toThrow(expect.objectContaining({ code: "internal" }));
  });

  it("a wrong key, an altered ciphertext or a truncated tag fails to decrypt", () => {
    const sealed = createSecretBox(crypto.randomBytes(32)).seal("run_1", "openrouter", PLAINTEXT);
    const box = createSecretBox(crypto.randomBytes(32));
    expect(() => box.open(sealed)).toThrow(expect.objectContaining({ code: "internal" }));
    const other = createSecretBox(crypto.randomBytes(32));
    const mine = other.seal("run_1", "openrouter", PLAINTEXT);
    const data = Buffer.from(mine.data, "base64");
    data[0]! ^= 1;
    expect(() => other.open({ ...mine, data: data.toString("base64") })).toThrow(
      expect.objectContaining({ code: "internal" }),
    );
    const shortTag = Buffer.from(mine.tag, "base64").subarray(0, 4).toString("base64");
    expect(() => other.open({ ...mine, tag: shortTag })).toThrow(
      expect.objectContaining({ code: "internal", message: expect.stringContaining("malformed") }),
    );
  });

  it("the plaintext never reaches the store's database", async () => {
    const dataDir = tempDir("secrets");
    const store = await createSqliteStore({ dataDir });
    try {
      const box = createSecretBox(loadOrCreateSecretKey({ dataDir }));
      await store.putSecret(box.seal("run_1", "openrouter", PLAINTEXT));
      const json = storeDbText(dataDir);
      expect(json).toContain("openrouter");
      expect(json).not.toContain(PLAINTEXT);
      expect(box.open((await store.getSecret("run_1", "openrouter"))!)).toBe(PLAINTEXT);
    } finally {
      await store.close();
    }
  });

  it("generates the key once into <dataDir>/secret.key (0600) and reuses it", () => {
    const dataDir = tempDir("secrets");
    const key = loadOrCreateSecretKey({ dataDir });
    const file = path.join(dataDir, SECRET_KEY_FILE);
    expect(key).toHaveLength(32);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(loadOrCreateSecretKey({ dataDir }).equals(key)).toBe(true);
  });

  it("prefers the configured key, and refuses one of the wrong size or a corrupt key file", () => {
    const dataDir = tempDir("secrets");
    const configured = crypto.randomBytes(32);
    expect(loadOrCreateSecretKey({ dataDir, secretKey: configured.toString("base64") }).equals(configured)).toBe(true);
    expect(fs.existsSync(path.join(dataDir, SECRET_KEY_FILE))).toBe(false);
    expect(() => loadOrCreateSecretKey({ dataDir, secretKey: crypto.randomBytes(16).toString("base64") })).toThrow(
      expect.objectContaining({ code: "invalid_request" }),
    );
    fs.writeFileSync(path.join(dataDir, SECRET_KEY_FILE), "short");
    expect(() => loadOrCreateSecretKey({ dataDir })).toThrow(
      expect.objectContaining({ code: "internal", message: expect.stringContaining("corrupt") }),
    );
  });
});
