/**
 * `patchbay run` and `patchbay runs` against a real `patchbay serve` (child process, real
 * OpenCode, the scripted model): progress lines on stderr, the patch or one JSON document on
 * stdout, and the exit codes a CI job branches on (0 patch, 1 failed, 2 usage, 3 no changes).
 */
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createProgress } from "../../src/cli/progress.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { startServe, type ServeChild } from "../support/serve.ts";
import { tempDir } from "../helpers.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
let fx: Fixtures;
let serve: ServeChild;

beforeAll(async () => {
  fx = await startFixtures();
  fx.model.script("cli/patch", [
    [
      { toolCalls: [{ name: "write", args: { filePath: "cli.txt", content: "from the cli\n" } }] },
      { text: "Wrote it." },
    ],
    [{ toolCalls: [{ name: "write", args: { filePath: "more.txt", content: "more\n" } }] }, { text: "More." }],
  ]);
  fx.model.script("cli/json", [
    [{ toolCalls: [{ name: "write", args: { filePath: "json.txt", content: "json\n" } }] }, { text: "JSON done." }],
  ]);
  fx.model.script("cli/nothing", [[{ text: "Nothing to change." }]]);
  serve = await startServe({ ...fx.env, PATCHBAY_DATA_DIR: tempDir("cli-serve"), PATCHBAY_WARM_POOL_SIZE: "0" });
}, LOADED.hookMs);

afterAll(async () => {
  await serve?.stop();
  await fx?.close();
}, LOADED.hookMs);

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `patchbay ...` as a child process (stdout and stderr are pipes: not a terminal). */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      ["bin/patchbay.mjs", ...args],
      {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...env },
        timeout: LOADED.turnWaitMs,
      },
      (_err, stdout, stderr) => resolve({ code: child.exitCode, stdout, stderr }),
    );
  });
}

const remote = () => ["--server", serve.url, "--key", serve.adminKey!];

describe("patchbay run against a server", { timeout: LOADED.testMs }, () => {
  it("runs turns with progress, prints patches or JSON, and exits 0, 1 or 3 by the outcome", async () => {
    const [kept, json, nothing, failed] = await Promise.all([
      cli(["run", ...remote(), "--repo", "acme/web", "--prompt", "Write cli.txt", "--model", "cli/patch", "--keep"]),
      // The server and key from the environment, as a CI job sets them.
      cli(["run", "--repo", "acme/web", "--prompt", "Write json.txt", "--model", "cli/json", "--json"], {
        PATCHBAY_SERVER: serve.url,
        PATCHBAY_API_KEY: serve.adminKey!,
      }),
      cli(["run", ...remote(), "--repo", "acme/web", "--prompt", "Change nothing", "--model", "cli/nothing"]),
      cli(["run", ...remote(), "--repo", "acme/web", "--prompt", "x", "--ref", "no-such-branch"]),
    ]);

    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toContain("# Summary\n\nWrote it.");
    expect(kept.stdout).toContain("+++ b/cli.txt");
    // Not a terminal: plain progress lines, one per step, no spinner control characters.
    expect(kept.stderr).toMatch(/^run run_\S+ on acme\/web with cli\/patch$/m);
    expect(kept.stderr).toMatch(/^\[#\d+\] edited cli\.txt$/m);
    expect(kept.stderr).toMatch(/^\[#\d+\] status: idle$/m);
    expect(kept.stderr).not.toContain("\x1b[");

    expect(json.code, json.stderr).toBe(0);
    const view = JSON.parse(json.stdout);
    expect(view).toMatchObject({ status: "completed", summary: "JSON done.", changedPaths: ["json.txt"] });
    expect(view.patch).toContain("+json");
    expect(json.stderr).toBe("");

    expect(nothing.code, nothing.stderr).toBe(3);
    expect(nothing.stdout).toContain("(no changes)");

    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/run failed: /);

    // The kept run is idle: follow it up, read it, end it.
    const runId = /^run (run_\S+) on/m.exec(kept.stderr)![1]!;
    const more = await cli(["runs", "message", runId, "--prompt", "Write more.txt", "--wait", ...remote()]);
    expect(more.code, more.stderr).toBe(0);
    expect(more.stdout).toContain("+++ b/more.txt");

    const listed = await cli(["runs", "list", "--json", ...remote()]);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout).runs.map((r: { id: string }) => r.id)).toContain(runId);
    const shown = await cli(["runs", "show", runId, ...remote()]);
    expect(shown.stdout).toMatch(/status: +idle/);
    expect(shown.stdout).toMatch(/turns: +2/);
    const patch = await cli(["runs", "patch", runId, ...remote()]);
    expect(patch.code).toBe(0);
    expect(patch.stdout).toContain("more.txt");
    const ended = await cli(["runs", "end", runId, ...remote()]);
    expect(ended.stdout).toBe(`${runId}\tcompleted\n`);
    // A finished run: follow replays it and reports how it ended.
    const followed = await cli(["runs", "follow", runId, "--json", ...remote()]);
    expect(followed.code).toBe(0);
    expect(JSON.parse(followed.stdout).status).toBe("completed");
  });

  it("exits 2 on bad usage and 1 with the server's message on a refused request", async () => {
    const noPrompt = await cli(["run", ...remote(), "--repo", "acme/web"]);
    expect(noPrompt.code).toBe(2);
    expect(noPrompt.stderr).toContain("run needs --repo owner/name and --prompt TEXT");
    const noKey = await cli(["runs", "list", "--server", serve.url]);
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toContain("no API key");
    const badSub = await cli(["runs", "frobnicate", ...remote()]);
    expect(badSub.code).toBe(2);
    const badKey = await cli(["runs", "list", "--server", serve.url, "--key", "pb_not_a_key"]);
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toMatch(/HTTP 401/);
    const unknown = await cli(["runs", "show", "run_nope", ...remote()]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/run_not_found, HTTP 404/);
  });
});

describe("progress on a terminal", () => {
  it("draws a spinner line and prints each step above it", () => {
    let written = "";
    const out = { isTTY: true, write: (s: string) => ((written += s), true) } as unknown as NodeJS.WritableStream;
    const progress = createProgress({ out, tty: true });
    progress.event({
      id: 3,
      runId: "run_x",
      at: new Date().toISOString(),
      turn: 1,
      type: "builder.event",
      data: { kind: "file.edited", path: "a.txt" },
    });
    progress.stop();
    expect(written).toContain("\r\x1b[2K  edited a.txt\n");
    expect(written).toMatch(/\r\x1b\[2K[⠋-⠏] starting/);
  });
});
