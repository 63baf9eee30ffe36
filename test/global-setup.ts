/**
 * Every test puts its data under one per-suite root (see test/helpers.ts `tempDir`).
 * After the whole suite, no `opencode` process whose environment, command line or working
 * directory points into that root may be left running.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const root = path.join(os.tmpdir(), `patchbay-test-${process.pid}-${Date.now()}`);

function leftovers(): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmd = "";
    let env = "";
    let cwd = "";
    try {
      cmd = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
      env = fs.readFileSync(`/proc/${entry}/environ`, "utf8");
      cwd = fs.readlinkSync(`/proc/${entry}/cwd`);
    } catch (e) {
      // The process ended while we looked (ENOENT, ESRCH), or is not ours to read (EACCES).
      if (!["ENOENT", "ESRCH", "EACCES"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
    }
    if (!/opencode/.test(cmd)) continue;
    if (cmd.includes(root) || env.includes(root) || cwd.startsWith(root)) found.push({ pid: Number(entry), cmd });
  }
  return found;
}

export default function setup() {
  fs.mkdirSync(root, { recursive: true });
  process.env.PATCHBAY_TEST_ROOT = root;
  return async () => {
    // Give processes that were just stopped time to be reaped (up to 30 s: a loaded machine is slow to).
    for (let i = 0; i < 120 && leftovers().length; i++) await new Promise((r) => setTimeout(r, 250));
    const left = leftovers();
    for (const p of left) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
        continue;
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
    if (left.length) {
      throw new Error(
        `opencode processes left running after the suite: ${left.map((p) => `${p.pid} ${p.cmd}`).join("; ")}`,
      );
    }
  };
}
