import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import { LOCK_FILE } from "../../../src/engine/store/lock.ts";
import { tempDir } from "../../helpers.ts";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const storeModule = path.join(repoRoot, "src/engine/store/sqlite.ts");

/** Start another Node process that opens the store in `dataDir` and then waits forever. */
async function holdStoreInChild(dataDir: string): Promise<ChildProcess> {
  const script = `
    import { createSqliteStore } from ${JSON.stringify(storeModule)};
    const store = await createSqliteStore({ dataDir: ${JSON.stringify(dataDir)} });
    await store.appendEvent("run_1", { type: "run.status", turn: 0, data: { status: "queued", turn: 0 } });
    process.stdout.write("ready\\n");
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
    child.once("exit", (code) => reject(new Error(`child exited with ${code} before opening the store: ${stderr}`)));
  });
  return child;
}

async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

describe("data-dir lock", () => {
  it("a second store on the same data dir is refused with store_locked while the first is open", async () => {
    const dataDir = tempDir("lock");
    const first = await createSqliteStore({ dataDir });
    try {
      await expect(createSqliteStore({ dataDir })).rejects.toMatchObject({
        code: "store_locked",
        message: expect.stringContaining(`pid ${process.pid}`),
      });
    } finally {
      await first.close();
    }
    // Closing released it.
    expect(fs.existsSync(path.join(dataDir, LOCK_FILE))).toBe(false);
    const again = await createSqliteStore({ dataDir });
    await again.close();
  });

  it("another live process's store is refused; after it is killed with -9 its stale lock is taken over", async () => {
    const dataDir = tempDir("lock");
    const child = await holdStoreInChild(dataDir);
    try {
      const refused = createSqliteStore({ dataDir });
      await expect(refused).rejects.toMatchObject({ code: "store_locked" });
      await expect(refused).rejects.toThrow(
        `data dir ${dataDir} is in use by another Patchbay process (pid ${child.pid}); stop it or set PATCHBAY_DATA_DIR to another directory`,
      );

      await killHard(child);
      // The lock file is still there (nobody released it), but its owner is dead.
      expect(JSON.parse(fs.readFileSync(path.join(dataDir, LOCK_FILE), "utf8")).pid).toBe(child.pid);
      const store = await createSqliteStore({ dataDir });
      try {
        expect(JSON.parse(fs.readFileSync(path.join(dataDir, LOCK_FILE), "utf8")).pid).toBe(process.pid);
        // And the dead process's data is ours now.
        expect(await store.lastEventId("run_1")).toBe(1);
      } finally {
        await store.close();
      }
    } finally {
      await killHard(child);
    }
  });

  it("a lock left by an earlier process that had our pid (container restart) is taken over", async () => {
    const dataDir = tempDir("lock");
    const file = path.join(dataDir, LOCK_FILE);
    fs.writeFileSync(
      file,
      JSON.stringify({
        pid: process.pid,
        startedAt: "2020-01-01T00:00:00.000Z",
        procStart: "another-boot:1",
        token: "old",
      }),
    );
    const store = await createSqliteStore({ dataDir });
    try {
      expect(JSON.parse(fs.readFileSync(file, "utf8")).token).not.toBe("old");
    } finally {
      await store.close();
    }
  });

  it("an empty lock file (crash between create and write) is taken over", async () => {
    const dataDir = tempDir("lock");
    fs.writeFileSync(path.join(dataDir, LOCK_FILE), "");
    const store = await createSqliteStore({ dataDir });
    await store.close();
  });

  it("the lock file is created 0600 in a 0700 data dir", async () => {
    const dataDir = path.join(tempDir("lock"), "fresh");
    const store = await createSqliteStore({ dataDir });
    try {
      expect(fs.statSync(dataDir).mode & 0o777).toBe(0o700);
      expect(fs.statSync(path.join(dataDir, LOCK_FILE)).mode & 0o777).toBe(0o600);
    } finally {
      await store.close();
    }
  });
});
