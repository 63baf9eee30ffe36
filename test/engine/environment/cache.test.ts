/**
 * The setup cache against real sandboxes (`local`, `bwrap` where it runs, and `e2b` through
 * the E2B stand-in of test/fixtures/e2b-cloud.ts): a layer saved from one sandbox restores
 * into the next as a copy, keys follow the key files at the commit, least recently used
 * layers are evicted, and the engine never reads through a link the sandbox planted.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bundledOpencodeBin } from "../../../src/engine/agent/opencode.ts";
import { createEnvironmentCache } from "../../../src/engine/environment/cache.ts";
import type { SetupSpec } from "../../../src/engine/environment/schema.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import { createBwrapProvider } from "../../../src/engine/sandbox/bwrap.ts";
import { createE2bProvider } from "../../../src/engine/sandbox/e2b.ts";
import { createLocalProvider } from "../../../src/engine/sandbox/local.ts";
import type { Sandbox, SandboxProvider } from "../../../src/engine/sandbox/sandbox.ts";
import { e2bCloud } from "../../fixtures/e2b-cloud.ts";
import { makeRepo, tempDir } from "../../helpers.ts";

const hasBwrap =
  process.platform === "linux" &&
  ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"].some((p) => fs.existsSync(p));

const CASES: { name: string; skip?: boolean; make(dataDir: string): Promise<SandboxProvider> }[] = [
  { name: "local", make: async (dataDir) => createLocalProvider({ dataDir, killGraceMs: 500 }) },
  {
    name: "bwrap",
    skip: !hasBwrap,
    make: (dataDir) => createBwrapProvider({ dataDir, opencodeBin: bundledOpencodeBin(), killGraceMs: 500 }),
  },
  {
    name: "e2b (stand-in)",
    make: async () =>
      createE2bProvider({
        apiKey: "e2b_test_key",
        template: "patchbay-opencode",
        publicGatewayUrl: "https://patchbay.example.com/gateway",
        sessionTtlMs: 60_000,
        turnTimeoutMs: 60_000,
        sdk: e2bCloud(tempDir("e2b-cloud")).sdk,
        log: silentLogger,
      }),
  },
];

const SETUP: SetupSpec & { cache: NonNullable<SetupSpec["cache"]> } = {
  commands: ["sh make-deps.sh"],
  cache: { key: ["deps.lock"], paths: ["deps", "vendor/lib"] },
};

let repo: ReturnType<typeof makeRepo>;
beforeAll(() => {
  repo = makeRepo(
    tempDir("remote"),
    "acme/cache",
    { "README.md": "# cache\n", "deps.lock": "v1\n" },
    {
      branches: { bumped: { "deps.lock": "v2\n" }, readme: { "README.md": "# other readme\n" } },
    },
  );
});

for (const c of CASES) {
  describe.skipIf(c.skip)(`setup cache: ${c.name}`, { timeout: 180_000 }, () => {
    let provider: SandboxProvider;
    let dataDir: string;
    const live: Sandbox[] = [];
    let n = 0;
    /** A sandbox keeping archive layers (an e2b VM without snapshots: a warm pool's). */
    const sandbox = async (ref?: string) => Object.assign(await snapshotting({ ref }), { snapshots: undefined });
    /** A sandbox as `create` makes it (on e2b: with snapshots, started from `fromSnapshot`). */
    const snapshotting = async (o: { ref?: string; fromSnapshot?: string } = {}) => {
      const s = await provider.create({
        runId: `run_cache${++n}`,
        ownerId: "o",
        repository: { fullName: "acme/cache", cloneUrl: `${repo.baseUrl}/acme/cache.git` },
        ...(o.ref ? { ref: o.ref } : {}),
        ...(o.fromSnapshot ? { fromSnapshot: o.fromSnapshot } : {}),
      });
      live.push(s);
      return s;
    };
    const sh = async (s: Sandbox, script: string) => {
      const r = await s.exec(["sh", "-c", script]);
      expect(r.exitCode, r.stderr).toBe(0);
      return r.stdout;
    };
    beforeAll(async () => {
      dataDir = tempDir("data");
      provider = await c.make(dataDir);
    });
    afterAll(async () => {
      await Promise.all(live.map((s) => s.kill()));
      await provider?.close?.();
    });

    it("a saved layer restores into another sandbox as a copy the first one's later changes never reach", async () => {
      const cache = createEnvironmentCache({ dataDir, maxBytes: 1e9, log: silentLogger });
      const a = await sandbox();
      const key = await cache.key({ repository: "acme/cache", setup: SETUP, commit: a.baseSha, sandbox: a });
      expect(key).toMatch(/^[0-9a-f]{40}$/);
      await sh(a, "mkdir -p deps/pkg vendor/lib && echo one > deps/pkg/index.js && ln -s pkg/index.js deps/main.js");
      await sh(a, "printf '#!/bin/sh\\necho tool\\n' > vendor/lib/tool && chmod 755 vendor/lib/tool");
      const saved = await cache.save(key, "acme/cache", a, SETUP.cache.paths);
      expect(saved).toMatchObject({ key });
      expect(fs.existsSync(path.join(dataDir, "cache", "env", `${key}.tar`))).toBe(true);
      // Nothing left in the sandbox's scratch dir, nothing but the layer in the cache dir.
      expect(await sh(a, `ls -A ${a.scratchDir} 2>/dev/null || true`)).toBe("");
      expect(fs.readdirSync(path.join(dataDir, "cache", "env"))).toEqual([`${key}.tar`]);

      await sh(a, "echo changed > deps/pkg/index.js && rm -rf vendor");
      const b = await sandbox();
      expect(await cache.key({ repository: "acme/cache", setup: SETUP, commit: b.baseSha, sandbox: b })).toBe(key);
      expect(await cache.restore(key, b)).toBe(true);
      expect(await sh(b, "cat deps/main.js && vendor/lib/tool && readlink deps/main.js")).toBe(
        "one\ntool\npkg/index.js\n",
      );
      // b deletes and rewrites what it got; the next sandbox still gets the layer whole.
      await sh(b, "rm -rf deps && echo mine > vendor/lib/tool");
      const d = await sandbox();
      expect(await cache.restore(key, d)).toBe(true);
      expect(await sh(d, "cat deps/pkg/index.js && vendor/lib/tool")).toBe("one\ntool\n");
      expect(await cache.restore("0".repeat(40), d)).toBe(false);
    });

    it("the key follows the key files at the commit, not other files", async () => {
      const cache = createEnvironmentCache({ dataDir, maxBytes: 1e9, log: silentLogger });
      const keyAt = async (ref?: string) => {
        const s = await sandbox(ref);
        return cache.key({ repository: "acme/cache", setup: SETUP, commit: s.baseSha, sandbox: s });
      };
      const [main, bumped, readme] = [await keyAt(), await keyAt("bumped"), await keyAt("readme")];
      expect(bumped).not.toBe(main);
      expect(readme).toBe(main);
      const s = live.at(-1)!;
      const other = await cache.key({
        repository: "acme/cache",
        setup: { ...SETUP, commands: ["sh make-deps.sh --fast"] },
        commit: s.baseSha,
        sandbox: s,
      });
      expect(other).not.toBe(main);
    });

    it("keeps the total under the bound by evicting the least recently used layer; a restore counts as a use", async () => {
      const dir = tempDir("lru");
      const a = await sandbox();
      await sh(a, "mkdir -p deps && head -c 200000 /dev/zero > deps/blob");
      // Three layers of ~200 KB under a bound of ~450 KB: the third save evicts one.
      const cache = createEnvironmentCache({ dataDir: dir, maxBytes: 450_000, log: silentLogger });
      const [k1, k2, k3] = ["1", "2", "3"].map((d) => d.repeat(40));
      await cache.save(k1!, "acme/cache", a, ["deps"]);
      await cache.save(k2!, "acme/cache", a, ["deps"]);
      // k1 was used after k2 was saved: k2 is now the least recently used.
      const past = new Date(Date.now() - 60_000);
      fs.utimesSync(path.join(dir, "cache", "env", `${k2}.tar`), past, past);
      expect(await cache.restore(k1!, a)).toBe(true);
      await cache.save(k3!, "acme/cache", a, ["deps"]);
      expect((await cache.list()).map((l) => l.key).sort()).toEqual([k1, k3]);
      expect(await cache.drop(k1!)).toBe(true);
      expect(await cache.drop(k1!)).toBe(false);
      // A layer larger than the whole bound is not kept.
      const tiny = createEnvironmentCache({ dataDir: tempDir("tiny"), maxBytes: 1000, log: silentLogger });
      expect(await tiny.save(k1!, "acme/cache", a, ["deps"])).toBeUndefined();
      expect(await tiny.list()).toEqual([]);
    });

    it.runIf(c.name.startsWith("e2b"))(
      "a snapshot layer: the next VM starts in it with the paths in place, each VM's copy its own; bounded in count, dropped at the provider",
      async () => {
        const dropped: string[] = [];
        const cache = createEnvironmentCache({
          dataDir: tempDir("snapshots"),
          maxBytes: 1e9,
          maxSnapshots: 2,
          dropSnapshot: async (id) => {
            dropped.push(id);
            await provider.dropSnapshot!(id);
          },
          log: silentLogger,
        });
        const a = await snapshotting();
        expect(a.snapshots).toBeDefined();
        const key = await cache.key({ repository: "acme/cache", setup: SETUP, commit: a.baseSha, sandbox: a });
        await sh(a, "mkdir -p deps/pkg vendor/lib && echo one > deps/pkg/index.js && ln -s pkg/index.js deps/main.js");
        await sh(a, "printf '#!/bin/sh\\necho tool\\n' > vendor/lib/tool && chmod 755 vendor/lib/tool");
        expect(await cache.save(key, "acme/cache", a, SETUP.cache.paths)).toMatchObject({ key, storage: "snapshot" });
        // The sandbox keeps its own paths (moved out for the snapshot and back).
        expect(await sh(a, "cat deps/main.js && vendor/lib/tool")).toBe("one\ntool\n");
        const snapshot = await cache.baseFor("acme/cache");
        expect(snapshot).toBeDefined();
        expect(await cache.baseFor("acme/other")).toBeUndefined();

        const b = await snapshotting({ fromSnapshot: snapshot! });
        expect(b.snapshots?.from).toBe(snapshot);
        expect(await cache.restore(key, b)).toBe(true);
        expect(
          await sh(b, "cat deps/main.js && vendor/lib/tool && readlink deps/main.js && git status --porcelain"),
        ).toBe("one\ntool\npkg/index.js\n?? deps/\n?? vendor/\n");
        await sh(b, "rm -rf deps && echo mine > vendor/lib/tool");
        const d = await snapshotting({ fromSnapshot: snapshot! });
        expect(await cache.restore(key, d)).toBe(true);
        expect(await sh(d, "cat deps/pkg/index.js && vendor/lib/tool")).toBe("one\ntool\n");
        // Another key on a VM from the snapshot: its stale paths go, nothing is restored.
        const e = await snapshotting({ fromSnapshot: snapshot! });
        expect(await cache.restore("0".repeat(40), e)).toBe(false);
        expect(await sh(e, "ls -A deps vendor 2>/dev/null; ls -A ../.patchbay | grep -c env-layer || true")).toBe(
          "0\n",
        );

        // Two more layers under a bound of two: the least recently used goes, with its snapshot.
        await cache.save("1".repeat(40), "acme/cache", a, ["deps"]);
        await cache.save("2".repeat(40), "acme/cache", a, ["deps"]);
        expect((await cache.list()).map((l) => l.key).sort()).toEqual(["1".repeat(40), "2".repeat(40)]);
        expect(dropped).toEqual([snapshot]);
        expect(await cache.drop("1".repeat(40))).toBe(true);
        expect(dropped).toHaveLength(2);
        expect(await cache.drop("1".repeat(40))).toBe(false);
      },
    );

    it.skipIf(c.name.startsWith("e2b"))(
      "copyOut refuses a link the sandbox put in place of its archive, so no host file is read",
      async () => {
        const a = await sandbox();
        const secret = path.join(tempDir("host"), "secret.txt");
        fs.writeFileSync(secret, "host secret\n");
        await sh(a, `mkdir -p ${a.scratchDir} && ln -sf /etc/hostname ${a.scratchDir}/planted.tar`);
        const out = path.join(tempDir("out"), "x.tar");
        await expect(a.copyOut("planted.tar", out)).rejects.toMatchObject({ code: "sandbox_failed" });
        expect(fs.existsSync(out)).toBe(false);
        await expect(a.copyOut("../repo/README.md", out)).rejects.toMatchObject({ code: "sandbox_failed" });
        // copyIn never writes through a name that exists (a link the sandbox left there).
        await sh(a, `ln -sf ${secret} ${a.scratchDir}/in.tar`);
        await expect(a.copyIn(secret, "in.tar")).rejects.toThrow();
        expect(fs.readFileSync(secret, "utf8")).toBe("host secret\n");
      },
    );
  });
}
