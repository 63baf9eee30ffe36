import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { EngineError } from "../../../src/engine/errors.ts";
import { computeDiff, createHostGit, type GitRunner } from "../../../src/engine/git/git.ts";
import { createLocalProvider } from "../../../src/engine/sandbox/local.ts";
import type { Sandbox, SandboxCreateOptions, WarmSandbox } from "../../../src/engine/sandbox/sandbox.ts";
import { startGitHttpServer } from "../../fixtures/git-http-server.ts";
import { git, makeRepo, tempDir, waitFor } from "../../helpers.ts";

const alive = (pid: number) =>
  fs.existsSync(`/proc/${pid}`) &&
  !/^\S+ \S+ Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/\(.*\)/, "x"));

let runSeq = 0;
const sandboxes: (Sandbox | WarmSandbox)[] = [];
afterEach(async () => {
  await Promise.all(sandboxes.splice(0).map((s) => s.kill()));
});

function setup(opts: { gitRunner?: GitRunner } = {}) {
  const repo = makeRepo(
    tempDir("remote"),
    "acme/widget",
    { "README.md": "# widget\n", "src/app.js": "console.log(1);\n" },
    { branches: { feature: { "FEATURE.md": "feature\n" } } },
  );
  const dataDir = tempDir("data");
  const provider = createLocalProvider({ dataDir, killGraceMs: 500, ...opts });
  const base = (over: Partial<SandboxCreateOptions> = {}): SandboxCreateOptions => ({
    runId: `run_${++runSeq}`,
    ownerId: "owner",
    repository: { fullName: "acme/widget", cloneUrl: `${repo.baseUrl}/acme/widget.git` },
    ...over,
  });
  const create = async (over: Partial<SandboxCreateOptions> = {}) => {
    const s = await provider.create(base(over));
    sandboxes.push(s);
    return s;
  };
  return { repo, dataDir, provider, base, create };
}

const read = (s: Sandbox, file: string) => fs.readFileSync(path.join(s.workdir, file), "utf8");

describe("local sandbox: checkout", () => {
  it("checks out the default branch when no ref is given", async () => {
    const { repo, dataDir, create } = setup();
    const s = await create();
    expect(s.provider).toBe("local");
    expect(s.workdir).toBe(path.join(dataDir, "sandboxes", s.id, "repo"));
    expect(s.baseRef).toBe("main");
    expect(s.baseSha).toBe(repo.headSha);
    expect(read(s, "README.md")).toBe("# widget\n");
    expect(git(s.workdir, "symbolic-ref", "--short", "HEAD")).toBe("main");
    // origin is the real remote, without credentials, and not the local mirror.
    expect(git(s.workdir, "remote", "get-url", "origin")).toBe(`${repo.baseUrl}/acme/widget.git`);
  });

  it("checks out a branch as a local branch tracking origin", async () => {
    const { repo, create } = setup();
    const s = await create({ ref: "feature" });
    expect(s.baseRef).toBe("feature");
    expect(s.baseSha).toBe(git(repo.bare, "rev-parse", "refs/heads/feature"));
    expect(read(s, "FEATURE.md")).toBe("feature\n");
    expect(git(s.workdir, "symbolic-ref", "--short", "HEAD")).toBe("feature");
    expect(git(s.workdir, "rev-parse", "--abbrev-ref", "feature@{upstream}")).toBe("origin/feature");
  });

  it("checks out an annotated tag, detached at the tagged commit", async () => {
    const { repo, create } = setup();
    git(repo.bare, "tag", "-a", "v1.0", "-m", "release", repo.headSha);
    const s = await create({ ref: "v1.0" });
    expect(s.baseRef).toBe("v1.0");
    expect(s.baseSha).toBe(repo.headSha);
    expect(git(s.workdir, "rev-parse", "HEAD")).toBe(repo.headSha);
    expect(git(s.workdir, "status", "--porcelain=v2", "--branch").split("\n")[1]).toBe("# branch.head (detached)");
  });

  it("checks out a full and an abbreviated sha", async () => {
    const { repo, create } = setup();
    const featureSha = git(repo.bare, "rev-parse", "refs/heads/feature");
    const full = await create({ ref: featureSha });
    expect(full).toMatchObject({ baseSha: featureSha, baseRef: featureSha });
    expect(read(full, "FEATURE.md")).toBe("feature\n");
    const abbreviated = await create({ ref: featureSha.slice(0, 8) });
    expect(abbreviated.baseSha).toBe(featureSha);
  });

  it("refuses an unknown ref with invalid_ref and leaves no sandbox behind", async () => {
    const { dataDir, create } = setup();
    const err = await create({ ref: "nope", runId: "run_unknown" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: "invalid_ref", message: 'ref "nope" not found in acme/widget' });
    expect(fs.existsSync(path.join(dataDir, "sandboxes", "run_unknown"))).toBe(false);
  });

  it.each(["--upload-pack=x", "a..b", "refs/heads/x;rm -rf /"])(
    "refuses the hostile ref %j before git runs",
    async (ref) => {
      const calls: string[][] = [];
      const real = createHostGit({ home: tempDir("home") });
      const spy: GitRunner = (args, opts) => {
        calls.push(args);
        return real(args, opts);
      };
      const { dataDir, create } = setup({ gitRunner: spy });
      await expect(create({ ref })).rejects.toMatchObject({ code: "invalid_ref" });
      expect(calls).toEqual([]);
      expect(fs.existsSync(path.join(dataDir, "sandboxes"))).toBe(false);
      expect(fs.existsSync(path.join(dataDir, "mirrors"))).toBe(false);
    },
  );

  it("reports an unreachable repository as clone_failed without the credential", async () => {
    const { create, dataDir } = setup();
    const token = "ghs_verysecrettoken42";
    const err = await create({
      runId: "run_unreachable",
      repository: { fullName: "acme/gone", cloneUrl: "http://127.0.0.1:9/acme/gone.git" },
      credential: { authorizationHeader: `Basic ${Buffer.from(`x-access-token:${token}`).toString("base64")}` },
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "clone_failed",
      message: expect.stringMatching(/^could not clone acme\/gone: /),
    });
    expect(JSON.stringify(err)).not.toContain(token);
    expect(fs.existsSync(path.join(dataDir, "sandboxes", "run_unreachable"))).toBe(false);
  });

  it("reuses the mirror for the second run on the same repository, fetching what changed", async () => {
    const { repo, dataDir, create } = setup();
    const first = await create();
    const mirror = path.join(dataDir, "mirrors", "acme", "widget.git");
    fs.writeFileSync(path.join(mirror, "patchbay-marker"), "made by the first run");
    const inode = fs.statSync(mirror).ino;

    // Someone pushes between the two runs.
    const work = path.join(tempDir("push"), "w");
    git(path.dirname(work), "clone", "-q", repo.bare, work);
    fs.writeFileSync(path.join(work, "NEW.md"), "new\n");
    git(work, "add", "-A");
    git(work, "commit", "-q", "-m", "new");
    git(work, "push", "-q", "origin", "main");

    const second = await create();
    expect(fs.readFileSync(path.join(mirror, "patchbay-marker"), "utf8")).toBe("made by the first run");
    expect(fs.statSync(mirror).ino).toBe(inode);
    expect(second.baseSha).toBe(git(work, "rev-parse", "HEAD"));
    expect(second.baseSha).not.toBe(first.baseSha);
    expect(read(second, "NEW.md")).toBe("new\n");
  });

  it("lets the agent commit, and computeDiff sees the work against the base", async () => {
    const { create } = setup();
    const s = await create();
    fs.writeFileSync(path.join(s.workdir, "src/app.js"), "console.log(2);\n");
    const commit = await s.exec(["git", "commit", "-q", "-am", "agent work"]);
    expect(commit).toMatchObject({ exitCode: 0 });
    const diff = await computeDiff(createHostGit({ home: tempDir("home") }), s.workdir, s.baseSha);
    expect(diff.changedPaths).toEqual(["src/app.js"]);
    expect(diff.diffStats).toEqual({ files: 1, additions: 1, deletions: 1 });
  });

  it("a cancelled creation ends as cancelled and leaves nothing behind", async () => {
    const { create, dataDir } = setup();
    const ac = new AbortController();
    ac.abort();
    await expect(create({ runId: "run_cancelled", signal: ac.signal })).rejects.toMatchObject({ code: "cancelled" });
    expect(fs.existsSync(path.join(dataDir, "sandboxes", "run_cancelled"))).toBe(false);
  });

  it("refuses a run id that cannot name a directory", async () => {
    const { create } = setup();
    await expect(create({ runId: "../escape" })).rejects.toMatchObject({ code: "sandbox_failed" });
  });
});

describe("local sandbox: processes", () => {
  it("exec never inherits Patchbay's environment", async () => {
    const { create } = setup();
    const s = await create();
    process.env.PATCHBAY_TEST_CANARY = "canary-api-key-value";
    try {
      const res = await s.exec(["env"], { env: { EXTRA: "given" } });
      expect(res.exitCode).toBe(0);
      expect(res.stdout).not.toContain("canary-api-key-value");
      const env = Object.fromEntries(
        res.stdout
          .trim()
          .split("\n")
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      const root = path.dirname(s.workdir);
      expect(env).toMatchObject({
        HOME: path.join(root, "home"),
        XDG_CONFIG_HOME: path.join(root, "home", ".config"),
        TMPDIR: path.join(root, "tmp"),
        TERM: "dumb",
        EXTRA: "given",
      });
      // Exactly the minimal set: anything else would have leaked from somewhere.
      expect(Object.keys(env).sort()).toEqual([
        "EXTRA",
        "HOME",
        "LANG",
        "PATH",
        "TERM",
        "TMPDIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
      ]);
    } finally {
      delete process.env.PATCHBAY_TEST_CANARY;
    }
  });

  it("exec runs in the workdir, passes stdin, and reports exit codes", async () => {
    const { create } = setup();
    const s = await create();
    expect(await s.exec(["pwd"])).toEqual({ exitCode: 0, stdout: `${s.workdir}\n`, stderr: "" });
    expect((await s.exec(["cat"], { stdin: "piped" })).stdout).toBe("piped");
    expect(await s.exec(["sh", "-c", "echo oops >&2; exit 3"])).toEqual({ exitCode: 3, stdout: "", stderr: "oops\n" });
    expect((await s.exec(["no-such-command-patchbay"])).exitCode).toBe(127);
  });

  it("exec stops a command when its signal aborts (already aborted: at once), the sandbox living on", async () => {
    const { create } = setup();
    const s = await create();
    const ac = new AbortController();
    const running = s.exec(["sh", "-c", "sleep 3000"], { signal: ac.signal });
    ac.abort();
    const res = await running;
    expect(res.exitCode).toBe(128 + 9);
    expect((await s.exec(["sh", "-c", "sleep 3000"], { signal: ac.signal })).exitCode).toBe(128 + 9);
    expect(await s.exec(["echo", "alive"])).toMatchObject({ exitCode: 0, stdout: "alive\n" });
  });

  it("exec kills the whole process group at the timeout", async () => {
    const { create } = setup();
    const s = await create();
    const pidFile = path.join(s.workdir, "..", "tmp", "child.pid");
    const started = Date.now();
    const res = await s.exec(["sh", "-c", `sleep 60 & echo $! > ${pidFile}; wait`], { timeoutMs: 300 });
    expect(res.timedOut).toBe(true);
    expect(res.exitCode).toBe(137);
    expect(Date.now() - started).toBeLessThan(10_000);
    const child = Number(fs.readFileSync(pidFile, "utf8"));
    await waitFor(() => !alive(child), { what: "the backgrounded sleep to die", timeoutMs: 5000 });
  });

  it("exec keeps only the tail of huge output", async () => {
    const { create } = setup();
    const s = await create();
    const res = await s.exec(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' 'a'; echo END"]);
    expect(res.stdout.length).toBeLessThanOrEqual(1024 * 1024);
    expect(res.stdout.endsWith("aEND\n")).toBe(true);
  });

  it("spawn streams output, and kill leaves no process of the tree behind", async () => {
    const { create } = setup();
    const s = await create();
    // The shell ignores SIGTERM, so kill has to escalate to SIGKILL for the group.
    const proc = s.spawn(["sh", "-c", "trap '' TERM; sleep 60 & echo child=$!; wait"]);
    let out = "";
    proc.onOutput((chunk) => (out += chunk));
    const child = Number((await waitFor(() => /child=(\d+)/.exec(out), { what: "the child pid" }))[1]);
    const leader = proc.pid!;
    expect(s.pids?.()).toEqual([leader]);
    expect(alive(leader) && alive(child)).toBe(true);
    await proc.kill();
    expect(alive(leader)).toBe(false);
    await waitFor(() => !alive(child), { what: "the child to die", timeoutMs: 5000 });
    expect(await proc.exited).toMatchObject({ signal: "SIGKILL" });
    expect(s.pids?.()).toEqual([]);
  });

  it("kill ends even when a process left the group holding the output, and kills that one too", async () => {
    const { create } = setup();
    const s = await create();
    // setsid takes the sleeper out of the group (as bwrap's --new-session does to its inner
    // process); it keeps the output pipe open, so the group's end alone never closes it.
    const proc = s.spawn(["sh", "-c", "setsid sleep 600 & echo child=$!; sleep 600"]);
    let out = "";
    proc.onOutput((chunk) => (out += chunk));
    const child = Number((await waitFor(() => /child=(\d+)/.exec(out), { what: "the child pid" }))[1]);
    await waitFor(() => fs.readFileSync(`/proc/${child}/cmdline`, "utf8").startsWith("sleep"), {
      what: "setsid to exec sleep",
    });
    await s.kill();
    await proc.exited;
    await waitFor(() => !alive(child), { what: "the escaped process to die", timeoutMs: 10_000 });
  });

  it("pids() lists a spawned process only while it runs", async () => {
    const { create } = setup();
    const s = await create();
    const proc = s.spawn(["sh", "-c", "exit 0"]);
    expect(s.pids?.()).toEqual([proc.pid]);
    await proc.exited;
    await waitFor(() => s.pids?.().length === 0, { what: "the exited process to leave pids()" });
  });

  it("kill() stops every spawned process, removes the directory, and is idempotent", async () => {
    const { create, dataDir } = setup();
    const s = await create();
    const procs = [s.spawn(["sleep", "60"]), s.spawn(["sh", "-c", "sleep 60"])];
    const pids = procs.map((p) => p.pid!);
    // An agent making parts of its workspace read-only must not keep the sandbox alive.
    fs.mkdirSync(path.join(s.workdir, "locked"));
    fs.writeFileSync(path.join(s.workdir, "locked", "f"), "x");
    fs.chmodSync(path.join(s.workdir, "locked"), 0o500);
    await Promise.all([s.kill(), s.kill()]);
    await s.kill();
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(fs.existsSync(path.join(dataDir, "sandboxes", s.id))).toBe(false);
    await expect(s.exec(["true"])).rejects.toMatchObject({ code: "sandbox_failed" });
  });

  it("freePort gives a port that can be bound, and URLs point at loopback", async () => {
    const { create } = setup();
    const s = await create();
    const port = await s.freePort();
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, "127.0.0.1", resolve));
    await new Promise((r) => server.close(r));
    expect(await s.endpoint(port)).toBe(`http://127.0.0.1:${port}`);
    expect(s.engineUrl(8787)).toBe("http://127.0.0.1:8787");
  });
});

describe("local provider", () => {
  it("reap removes sandboxes no live run owns and kills their processes", async () => {
    const { dataDir, provider } = setup();
    // A sandbox left by a previous Patchbay process: a directory and a process working in it.
    const orphan = path.join(dataDir, "sandboxes", "run_orphan", "repo");
    fs.mkdirSync(orphan, { recursive: true });
    const { spawn } = await import("node:child_process");
    const stray = spawn("sleep", ["60"], { cwd: orphan, stdio: "ignore" });
    const kept = path.join(dataDir, "sandboxes", "run_kept");
    fs.mkdirSync(kept, { recursive: true });
    await provider.reap!(new Set(["run_kept"]));
    expect(fs.existsSync(path.dirname(orphan))).toBe(false);
    expect(fs.existsSync(kept)).toBe(true);
    await new Promise((r) => (stray.exitCode !== null || stray.signalCode !== null ? r(null) : stray.once("exit", r)));
    expect(stray.signalCode).toBe("SIGKILL");
  });
});

describe("local provider: prepare and adopt", () => {
  it("a process started in a warm sandbox keeps its HOME and TMPDIR once adopt renames the sandbox after its run", async () => {
    const { repo, dataDir, provider, base } = setup();
    const warm = await provider.prepare!();
    const warmRoot = path.dirname(warm.workdir);
    expect(fs.readdirSync(warm.workdir)).toEqual([]);
    // Waits for a file in its TMPDIR, then writes into its HOME: paths it was started with.
    const proc = warm.spawn([
      "sh",
      "-c",
      'while [ ! -e "$TMPDIR/go" ]; do sleep 0.05; done; echo seen > "$HOME/seen"; sleep 60',
    ]);
    const opts = base({ ref: "feature" });
    const s = await warm.adopt(opts);
    sandboxes.push(s);
    const root = path.join(dataDir, "sandboxes", opts.runId);
    expect(s.id).toBe(opts.runId);
    expect(s.workdir).toBe(path.join(root, "repo"));
    expect(s.baseSha).toBe(git(repo.bare, "rev-parse", "refs/heads/feature"));
    expect(read(s, "FEATURE.md")).toBe("feature\n");
    expect(fs.readlinkSync(warmRoot)).toBe(root);

    fs.writeFileSync(path.join(root, "tmp", "go"), "");
    await waitFor(() => fs.existsSync(path.join(root, "home", "seen")), { what: "the process to write into its HOME" });
    expect(s.pids?.()).toEqual([proc.pid]);
    // The link at the warm name belongs to the live sandbox: reap leaves both names alone.
    await provider.reap!(new Set());
    expect(fs.readlinkSync(warmRoot)).toBe(root);
    expect(fs.existsSync(s.workdir)).toBe(true);

    await s.kill();
    expect(await proc.exited).toMatchObject({ signal: "SIGTERM" });
    expect(fs.readdirSync(path.join(dataDir, "sandboxes"))).toEqual([]);
  });

  it("refuses to adopt for a run that already has a sandbox, and the warm sandbox stays usable", async () => {
    const { provider, base, create } = setup();
    const taken = await create();
    const warm = await provider.prepare!();
    sandboxes.push(warm);
    await expect(warm.adopt(base({ runId: taken.id }))).rejects.toMatchObject({ code: "sandbox_failed" });
    const s = await warm.adopt(base());
    expect(read(s, "README.md")).toBe("# widget\n");
  });
});

describe("local provider: a private repository over HTTP", () => {
  const TOKEN = "ghs_privateRepoToken0042";
  const basic = (token: string) => ({
    authorizationHeader: `Basic ${Buffer.from(`x-access-token:${token}`).toString("base64")}`,
  });

  it("sends the credential with each request and stores it nowhere on disk", async () => {
    const root = tempDir("remote");
    makeRepo(root, "acme/private", { "README.md": "secret project\n" });
    const server = await startGitHttpServer({ root, authorize: (token) => token === TOKEN });
    try {
      const dataDir = tempDir("data");
      const provider = createLocalProvider({ dataDir });
      const repository = { fullName: "acme/private", cloneUrl: `${server.baseUrl}/acme/private.git` };
      const first = await provider.create({
        runId: "run_private1",
        ownerId: "o",
        repository,
        credential: basic(TOKEN),
      });
      sandboxes.push(first);
      const afterFirst = server.requests.length;
      // The second run fetches into the mirror: those requests must carry the credential too.
      const second = await provider.create({
        runId: "run_private2",
        ownerId: "o",
        repository,
        credential: basic(TOKEN),
      });
      sandboxes.push(second);
      expect(read(second, "README.md")).toBe("secret project\n");
      const served = server.requests.filter((r) => r.status === 200);
      expect(server.requests.slice(afterFirst).filter((r) => r.status === 200).length).toBeGreaterThan(0);
      for (const r of served) expect(r.authorization).toBe(basic(TOKEN).authorizationHeader);

      // Neither the mirror's nor the workspace's files hold the token.
      const b64 = basic(TOKEN).authorizationHeader.slice("Basic ".length);
      const grep = (dir: string) => {
        const hits: string[] = [];
        const walk = (d: string) => {
          for (const e of fs.readdirSync(d, { withFileTypes: true })) {
            const p = path.join(d, e.name);
            if (e.isDirectory()) walk(p);
            else if (e.isFile()) {
              const text = fs.readFileSync(p, "latin1");
              if (text.includes(TOKEN) || text.includes(b64)) hits.push(p);
            }
          }
        };
        walk(dir);
        return hits;
      };
      expect(grep(dataDir)).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it("a refused credential is clone_failed, and the message does not carry it", async () => {
    const root = tempDir("remote");
    makeRepo(root, "acme/private", { "README.md": "secret project\n" });
    const server = await startGitHttpServer({ root, authorize: (token) => token === TOKEN });
    try {
      const provider = createLocalProvider({ dataDir: tempDir("data") });
      const wrong = "ghs_wrongTokenValue9999";
      const err = await provider
        .create({
          runId: "run_refused",
          ownerId: "o",
          repository: { fullName: "acme/private", cloneUrl: `${server.baseUrl}/acme/private.git` },
          credential: basic(wrong),
        })
        .catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: "clone_failed",
        message: expect.stringMatching(/^could not clone acme\/private: /),
      });
      expect(JSON.stringify(err)).not.toContain(wrong);
      expect(JSON.stringify(err)).not.toContain(basic(wrong).authorizationHeader.slice(6));
    } finally {
      await server.close();
    }
  });
});
