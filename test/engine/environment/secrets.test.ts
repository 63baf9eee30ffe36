/**
 * Run secrets without a sandbox: masking (one pass, longest first, every string of a value),
 * the checks a new run's secrets pass, owner secrets sealed under the owner, a run's copies
 * read back after a restart, the log's redaction of them, and the network policy a run gets.
 */
import crypto from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { runNetworkPolicy } from "../../../src/engine/environment/network.ts";
import {
  createOwnerSecrets,
  createRunSecrets,
  masker,
  type RunSecrets,
} from "../../../src/engine/environment/secrets.ts";
import { createLogger } from "../../../src/engine/log.ts";
import { createSecretBox } from "../../../src/engine/secrets/secrets.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { tempDir } from "../../helpers.ts";
import { runRecord } from "../store/fixtures.ts";

describe("masking", () => {
  it("replaces every value with [secret:NAME] in one pass, the longest first", () => {
    const mask = masker([
      { name: "SHORT", value: "abc" },
      { name: "LONG", value: "abcdef" },
      { name: "WORD", value: "secret" },
    ]);
    expect(mask("x abcdef y abc z")).toBe("x [secret:LONG] y [secret:SHORT] z");
    // A replacement is never masked again, though it holds another secret's value.
    expect(mask("secret")).toBe("[secret:WORD]");
    expect(mask("a.b*c")).toBe("a.b*c");
    expect(mask("")).toBe("");
  });

  it("treats values as text, not patterns", () => {
    const mask = masker([{ name: "RE", value: "a.b*(c)" }]);
    expect(mask("aXbbb(c) a.b*(c)")).toBe("aXbbb(c) [secret:RE]");
  });
});

describe("run secrets", () => {
  let store: RunStore;
  let dir: string;
  const box = createSecretBox(crypto.randomBytes(32));
  const lines: string[] = [];
  const log = createLogger({ level: "debug", write: (l) => lines.push(l) });
  let secrets: RunSecrets;

  beforeEach(async () => {
    dir = tempDir("env-secrets");
    store = await createSqliteStore({ dataDir: dir });
    secrets = createRunSecrets({ store, box, log });
  });
  afterEach(async () => {
    await store.close();
  });

  it("checks names before a run exists: stored ones must exist, none twice, none of Patchbay's own", async () => {
    await expect(secrets.resolve("own_a", { secretNames: ["MISSING"] })).rejects.toMatchObject({
      code: "secret_not_found",
    });
    await expect(
      secrets.resolve("own_a", { secrets: { A_TOKEN: "x" }, secretNames: ["A_TOKEN"] }),
    ).rejects.toMatchObject({ code: "invalid_request" });
    await expect(secrets.resolve("own_a", { secrets: { PATH: "/evil" } })).rejects.toMatchObject({
      code: "invalid_request",
    });
    await expect(secrets.resolve("own_a", { secrets: { OPENCODE_CONFIG_CONTENT: "{}" } })).rejects.toMatchObject({
      code: "invalid_request",
    });
    expect((await secrets.resolve("own_a", undefined)).entries).toEqual([]);
  });

  it("an owner's secret is sealed under its owner: another owner cannot name it, a moved record does not open", async () => {
    const owners = createOwnerSecrets({ store, box, now: () => new Date("2026-01-01T00:00:00Z") });
    const view = await owners.put("own_a", { name: "NPM_TOKEN", value: "npm-secret-value" });
    expect(view).toEqual({
      name: "NPM_TOKEN",
      createdAt: "2026-01-01T00:00:00.000Z",
      updatedAt: "2026-01-01T00:00:00.000Z",
    });
    expect(JSON.stringify(await store.getOwnerSecret("own_a", "NPM_TOKEN"))).not.toContain("npm-secret-value");
    await expect(secrets.resolve("own_b", { secretNames: ["NPM_TOKEN"] })).rejects.toMatchObject({
      code: "secret_not_found",
    });
    await store.putOwnerSecret({ ...(await store.getOwnerSecret("own_a", "NPM_TOKEN"))!, ownerId: "own_b" });
    await expect(secrets.resolve("own_b", { secretNames: ["NPM_TOKEN"] })).rejects.toMatchObject({ code: "internal" });
    const resolved = await secrets.resolve("own_a", {
      secretNames: ["NPM_TOKEN"],
      secrets: { RUN_KEY: "run-value-1" },
    });
    expect(resolved.entries).toEqual([
      { name: "RUN_KEY", value: "run-value-1" },
      { name: "NPM_TOKEN", value: "npm-secret-value" },
    ]);
    await expect(owners.put("own_a", { name: "X", value: "" })).rejects.toMatchObject({ code: "invalid_request" });
  });

  it("a run's copies give its env and mask its text and the log; a new process reads them back; forget drops them", async () => {
    const run = runRecord({ id: "run_env", environment: { secretNames: ["API_KEY"], network: "open" } });
    await store.createRun(run);
    await secrets.seal(run.id, { entries: [{ name: "API_KEY", value: "key-value-123456" }] });
    expect(await secrets.env(run)).toEqual({ API_KEY: "key-value-123456" });
    expect(secrets.mask("got key-value-123456", run)).toBe("got [secret:API_KEY]");
    expect(secrets.maskDeep(run.id, { a: ["key-value-123456", 3], b: { c: "key-value-123456" } })).toEqual({
      a: ["[secret:API_KEY]", 3],
      b: { c: "[secret:API_KEY]" },
    });
    log.info("output", { text: "key-value-123456" });
    expect(lines.at(-1)).toContain("[secret:API_KEY]");
    expect(lines.at(-1)).not.toContain("key-value-123456");

    // Another process (a restart): nothing in memory, the sealed copy read back on first use.
    const again = createRunSecrets({ store, box, log: createLogger({ level: "silent" }) });
    expect(again.mask("key-value-123456", run)).toBe("key-value-123456");
    expect(await again.env(run)).toEqual({ API_KEY: "key-value-123456" });
    expect(again.mask("key-value-123456", run)).toBe("[secret:API_KEY]");

    secrets.forget(run.id);
    expect(secrets.mask("key-value-123456", run)).toBe("key-value-123456");
    log.info("output", { text: "key-value-123456" });
    expect(lines.at(-1)).toContain("key-value-123456");
    // The session ended: its copies are gone with the run's other secrets.
    await store.deleteSecrets(run.id);
    expect(await createRunSecrets({ store, box, log }).env(run)).toEqual({});
  });
});

describe("the log's redaction", () => {
  it("is counted per value, and covers a value as JSON escapes it", () => {
    const lines: string[] = [];
    const log = createLogger({ write: (l) => lines.push(l) });
    const multi = 'line one\n"two"';
    log.redact(multi, "[secret:M]");
    log.redact("shared-value-1", "[secret:S]");
    log.redact("shared-value-1", "[secret:S]");
    log.info("x", { a: multi, b: "shared-value-1" });
    expect(lines.at(-1)).toContain('"a":"[secret:M]"');
    log.unredact("shared-value-1");
    log.info("x", { b: "shared-value-1" });
    expect(lines.at(-1)).toContain("[secret:S]");
    log.unredact("shared-value-1");
    log.info("x", { b: "shared-value-1" });
    expect(lines.at(-1)).toContain("shared-value-1");
  });
});

describe("network policy", () => {
  const config = (env: Record<string, string>) => ({ ...loadConfig({ PATCHBAY_DATA_DIR: tempDir("cfg"), ...env }) });

  it("a run gets what it asks, else the server's default; local refuses model-only", () => {
    expect(runNetworkPolicy({ ...config({}), sandbox: "bwrap" }, undefined)).toBe("open");
    expect(runNetworkPolicy({ ...config({}), sandbox: "bwrap" }, "model-only")).toBe("model-only");
    expect(runNetworkPolicy({ ...config({ PATCHBAY_NETWORK: "model-only" }), sandbox: "e2b" }, undefined)).toBe(
      "model-only",
    );
    expect(() => runNetworkPolicy({ ...config({}), sandbox: "local" }, "model-only")).toThrow(
      expect.objectContaining({ code: "unsupported_network_policy" }),
    );
  });

  it("a forced server gives every run its policy and refuses another", () => {
    const forced = {
      ...config({ PATCHBAY_NETWORK: "model-only", PATCHBAY_NETWORK_FORCE: "1" }),
      sandbox: "bwrap" as const,
    };
    expect(runNetworkPolicy(forced, undefined)).toBe("model-only");
    expect(runNetworkPolicy(forced, "model-only")).toBe("model-only");
    expect(() => runNetworkPolicy(forced, "open")).toThrow(
      expect.objectContaining({ code: "unsupported_network_policy" }),
    );
  });
});
