/**
 * The `bwrap` sandbox provider: each sandbox is a set of bubblewrap namespaces (Linux,
 * Debian package `bubblewrap`).
 *
 * On the host a sandbox is `<dataDir>/sandboxes/<id>/` holding the checkout (`repo/`), a
 * private home (`home/`), a private `/tmp` (`tmp/`) and a generated `/etc/passwd`. Every
 * command runs in its own `bwrap` invocation that sees:
 *   - `/usr` (and the merged-usr links `/bin`, `/lib`, …) and a short list of `/etc` files,
 *     read-only;
 *   - `/workspace` (the checkout, the only writable project path), `/home/agent` and `/tmp`,
 *     bound from the sandbox directory, so they persist across the commands of one run;
 *   - the `opencode` binary, read-only, at `/opt/patchbay/bin/opencode`;
 *   - nothing else: not the Patchbay data dir (store, keys, mirrors, other runs' workspaces),
 *     not the host's home, not `/root`, not `/proc` of the host (a fresh PID namespace).
 * It runs as uid 1000 in a new user namespace with every capability dropped, no nested user
 * namespaces, a new session (no TIOCSTI into Patchbay's terminal), and `--die-with-parent`:
 * killing the `bwrap` process kills the whole PID namespace, so nothing outlives the run.
 *
 * The network namespace is shared on purpose: the agent must reach the model gateway on the
 * host's loopback. That is also the main thing this provider does NOT protect against (see
 * ARCHITECTURE.md): loopback services of the host, and the internet, stay reachable.
 *
 * The checkout is made on the host from the mirror cache with `--no-hardlinks`: hard-linked
 * objects would be files the sandbox could rewrite inside the shared mirror. Every later git
 * command (the engine's diff) runs inside the sandbox through `exec`, so a hostile
 * `.git/config` written by the agent never runs anything on the host.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { EngineError } from "../errors.ts";
import { createHostGit, validateRef, type GitRunner } from "../git/git.ts";
import { checkoutFromMirror, createMirrorCache, type MirrorCache } from "../git/mirror.ts";
import type { Logger } from "../log.ts";
import { silentLogger } from "../log.ts";
import type {
  ExecOptions,
  ExecResult,
  ProcessHandle,
  Sandbox,
  SandboxCreateOptions,
  SandboxProvider,
  WarmSandbox,
} from "./sandbox.ts";
import { creationError } from "./sandbox.ts";
import {
  descendants,
  GroupProcess,
  isAlive,
  Tail,
  killStrays,
  removeTree,
  writeStdin,
  freeLoopbackPort,
} from "./process.ts";

/** Options for {@link createBwrapProvider}. */
export interface BwrapProviderOptions {
  /** Sandboxes live in `<dataDir>/sandboxes`, mirrors in `<dataDir>/mirrors`. */
  dataDir: string;
  /** Host path of the `opencode` binary, bound read-only into every sandbox. */
  opencodeBin: string;
  log?: Logger;
  /** Runs git on the host (mirror and checkout only). Default: `createHostGit` with HOME at `<dataDir>/git-home`. */
  gitRunner?: GitRunner;
  /** The `bwrap` program. Default: found on PATH. */
  bwrapPath?: string;
  /** Grace period between SIGTERM and SIGKILL when a process is killed. Default 3 s. */
  killGraceMs?: number;
}

/** Where things are inside every sandbox. */
export const BWRAP_PATHS = {
  workdir: "/workspace",
  home: "/home/agent",
  tmp: "/tmp",
  opencode: "/opt/patchbay/bin/opencode",
} as const;

const OUTPUT_CAP = 1024 * 1024;
const SANDBOX_ID = /^[A-Za-z0-9_-]{1,64}$/;
const AGENT_UID = 1000;
const INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * `/etc` entries a toolchain needs (name resolution, TLS roots, the dynamic linker, the
 * Debian alternatives that `/usr/bin` links point through). Never the whole `/etc`: as the
 * owner of root's files inside the namespace the agent could read `/etc/shadow`.
 */
const ETC_FILES = [
  "hosts",
  "resolv.conf",
  "nsswitch.conf",
  "host.conf",
  "ssl",
  "ca-certificates",
  "ca-certificates.conf",
  "alternatives",
  "localtime",
  "ld.so.cache",
  "ld.so.conf",
  "ld.so.conf.d",
  "os-release",
  "mime.types",
];

/**
 * Create the `bwrap` provider. Checks once that bubblewrap is installed and can create its
 * namespaces here; throws `EngineError("sandbox_failed")` with a one-line reason otherwise.
 */
export async function createBwrapProvider(opts: BwrapProviderOptions): Promise<SandboxProvider> {
  const log = opts.log ?? silentLogger;
  const dataDir = path.resolve(opts.dataDir);
  const sandboxesDir = path.join(dataDir, "sandboxes");
  const hostGit = opts.gitRunner ?? createHostGit({ home: path.join(dataDir, "git-home") });
  // Hard links would share object files between the mirror and a workspace the sandbox may
  // write: copy them instead (the cost grows with the repository, the safety does not).
  const cloneGit: GitRunner = (args, o) =>
    hostGit(args[0] === "clone" ? ["clone", "--no-hardlinks", ...args.slice(1)] : args, o);
  const mirrors: MirrorCache = createMirrorCache({ dataDir, run: hostGit, log });
  const killGraceMs = opts.killGraceMs ?? 3000;
  const bwrap = opts.bwrapPath ?? findOnPath("bwrap");
  if (!bwrap)
    throw new EngineError("sandbox_failed", "PATCHBAY_SANDBOX=bwrap needs bubblewrap: apt-get install bubblewrap");
  if (!fs.existsSync(opts.opencodeBin))
    throw new EngineError("sandbox_failed", `the opencode binary ${opts.opencodeBin} does not exist`);
  const flags = await probeFlags(bwrap);
  const live = new Map<string, BwrapSandbox>();

  /** A sandbox with an empty workspace (the first half of `create`, and what a warm pool keeps). */
  const prepare = async (id: string): Promise<BwrapSandbox> => {
    if (!SANDBOX_ID.test(id))
      throw new EngineError("sandbox_failed", `run id ${JSON.stringify(id)} cannot name a sandbox`);
    if (live.has(id)) throw new EngineError("sandbox_failed", `a sandbox for run ${id} already exists`);
    const root = path.join(sandboxesDir, id);
    await removeTree(root);
    for (const dir of ["repo", "home", "tmp", "etc"])
      fs.mkdirSync(path.join(root, dir), { recursive: true, mode: 0o700 });
    // Tools that ask "who am I" (git, ssh, a shell prompt) need the agent to have a name.
    fs.writeFileSync(
      path.join(root, "etc", "passwd"),
      `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:${AGENT_UID}:${AGENT_UID}:Patchbay agent:${BWRAP_PATHS.home}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    );
    fs.writeFileSync(path.join(root, "etc", "group"), `root:x:0:\nagent:x:${AGENT_UID}:\nnogroup:x:65534:\n`);
    const sandbox = new BwrapSandbox({
      id,
      root,
      bwrap,
      flags,
      opencodeBin: opts.opencodeBin,
      killGraceMs,
      log: log.child({ sandbox: id }),
      onGone: (name) => live.delete(name),
      adopt: (s, c) => adopt(s, c),
    });
    live.set(id, sandbox);
    return sandbox;
  };

  /** Check the run's repository out into a prepared sandbox's (empty) workspace. */
  const adopt = async (sandbox: BwrapSandbox, c: SandboxCreateOptions): Promise<Sandbox> => {
    if (!SANDBOX_ID.test(c.runId))
      throw new EngineError("sandbox_failed", `run id ${JSON.stringify(c.runId)} cannot name a sandbox`);
    if (c.ref !== undefined) await validateRef(hostGit, c.ref);
    if (sandbox.id !== c.runId) {
      if (live.has(c.runId)) throw new EngineError("sandbox_failed", `a sandbox for run ${c.runId} already exists`);
      // Bind mounts hold the directories, not their names: a running sandbox survives the
      // rename, and afterwards its directory is named after its run like any other.
      const target = path.join(sandboxesDir, c.runId);
      await removeTree(target);
      fs.renameSync(sandbox.root, target);
      live.delete(sandbox.id);
      sandbox.rename(c.runId, target);
      live.set(c.runId, sandbox);
    }
    const hostWorkdir = path.join(sandbox.root, "repo");
    const checkout = await mirrors.withMirror(
      { fullName: c.repository.fullName, cloneUrl: c.repository.cloneUrl, credential: c.credential, signal: c.signal },
      (mirrorDir) =>
        checkoutFromMirror({
          run: cloneGit,
          mirrorDir,
          workdir: hostWorkdir,
          cloneUrl: c.repository.cloneUrl,
          fullName: c.repository.fullName,
          ref: c.ref,
          signal: c.signal,
        }),
    );
    if (c.signal?.aborted) throw new EngineError("cancelled", "sandbox creation was cancelled");
    sandbox.setBase(checkout.baseSha, checkout.baseRef);
    log.info("sandbox created", { sandbox: c.runId, repository: c.repository.fullName, baseSha: checkout.baseSha });
    return sandbox;
  };

  return {
    name: "bwrap",

    async create(c: SandboxCreateOptions): Promise<Sandbox> {
      // Checked before anything touches the disk, like the local provider: hostile input never reaches git.
      if (!SANDBOX_ID.test(c.runId))
        throw new EngineError("sandbox_failed", `run id ${JSON.stringify(c.runId)} cannot name a sandbox`);
      if (c.ref !== undefined) await validateRef(hostGit, c.ref);
      const sandbox = await prepare(c.runId);
      try {
        return await adopt(sandbox, c);
      } catch (e) {
        await sandbox.kill();
        throw creationError(e, c.signal);
      }
    },

    async prepare(): Promise<WarmSandbox> {
      return prepare(`warm_${randomBytes(6).toString("hex")}`);
    },

    async reap(liveRunIds: ReadonlySet<string>): Promise<void> {
      let entries: string[];
      try {
        entries = await fs.promises.readdir(sandboxesDir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
        throw e;
      }
      for (const id of entries) {
        if (liveRunIds.has(id) || live.has(id)) continue;
        const root = path.join(sandboxesDir, id);
        // Each bwrap process works in its sandbox directory on the host; killing it takes
        // its whole PID namespace down.
        killStrays(root, log);
        await removeTree(root);
        log.info("reaped sandbox", { sandbox: id });
      }
    },

    async close(): Promise<void> {
      await Promise.all([...live.values()].map((s) => s.kill()));
    },
  };
}

/**
 * The namespace flags this machine's bwrap accepts. `--disable-userns` (bwrap >= 0.8) stops
 * the agent from making a user namespace of its own, where it would be root again; older
 * versions run without it. Fails with a clear message when bwrap cannot run at all (user
 * namespaces disabled, or a container that forbids them).
 */
async function probeFlags(bwrap: string): Promise<string[]> {
  const base = [
    "--unshare-all",
    "--share-net",
    "--unshare-user",
    "--uid",
    String(AGENT_UID),
    "--gid",
    String(AGENT_UID),
    "--cap-drop",
    "ALL",
    "--die-with-parent",
    "--new-session",
    "--hostname",
    "patchbay",
  ];
  let lastError = "";
  for (const extra of [["--disable-userns"], []]) {
    const flags = [...base, ...extra];
    const res = await runOnce(bwrap, [...flags, ...systemBinds(), "--", "/bin/true"]);
    if (res.code === 0) return flags;
    lastError = res.stderr.trim().split("\n").at(-1) ?? `exit ${res.code}`;
  }
  throw new EngineError("sandbox_failed", `bwrap cannot create a sandbox on this machine: ${lastError}`);
}

/** Read-only system directories; merged-usr links are recreated as links. */
function systemBinds(): string[] {
  const args = ["--ro-bind", "/usr", "/usr"];
  for (const dir of ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw e;
    }
    if (st.isSymbolicLink()) args.push("--symlink", fs.readlinkSync(dir), dir);
    else args.push("--ro-bind", dir, dir);
  }
  args.push("--proc", "/proc", "--dev", "/dev");
  for (const name of ETC_FILES) args.push("--ro-bind-try", `/etc/${name}`, `/etc/${name}`);
  return args;
}

function runOnce(file: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ["ignore", "ignore", "pipe"], env: { PATH: INSIDE_PATH } });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.on("error", (e) => {
      stderr += e.message;
    });
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

function findOnPath(name: string): string | undefined {
  // Read once when the provider is made, like the local provider's PATH.
  for (const dir of (process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":")) {
    const p = path.join(dir || ".", name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch (e) {
      if (!["ENOENT", "EACCES", "ENOTDIR"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
    }
  }
  return undefined;
}

interface BwrapSandboxInit {
  id: string;
  root: string;
  bwrap: string;
  flags: string[];
  opencodeBin: string;
  killGraceMs: number;
  log: Logger;
  onGone: (id: string) => void;
  adopt: (s: BwrapSandbox, c: SandboxCreateOptions) => Promise<Sandbox>;
}

class BwrapSandbox implements WarmSandbox, Sandbox {
  readonly provider = "bwrap" as const;
  readonly listenHost = "127.0.0.1";
  readonly workdir = BWRAP_PATHS.workdir;
  private _id: string;
  private _root: string;
  private _baseSha = "";
  private _baseRef = "";
  private readonly procs = new Set<GroupProcess>();
  private killing: Promise<void> | undefined;

  constructor(private readonly init: BwrapSandboxInit) {
    this._id = init.id;
    this._root = init.root;
  }

  get id(): string {
    return this._id;
  }
  get root(): string {
    return this._root;
  }
  get baseSha(): string {
    return this._baseSha;
  }
  get baseRef(): string {
    return this._baseRef;
  }

  /** Called by the provider when a warm sandbox becomes a run's. */
  rename(id: string, root: string): void {
    this._id = id;
    this._root = root;
  }

  setBase(sha: string, ref: string): void {
    this._baseSha = sha;
    this._baseRef = ref;
  }

  adopt(c: SandboxCreateOptions): Promise<Sandbox> {
    this.alive();
    return this.init.adopt(this, c);
  }

  binaryPath(name: "opencode"): string | undefined {
    return name === "opencode" ? BWRAP_PATHS.opencode : undefined;
  }

  private alive(): void {
    if (this.killing) throw new EngineError("sandbox_failed", `sandbox ${this._id} has been killed`);
  }

  /** The bwrap command line for `argv` run inside this sandbox (no secrets: those go through the environment). */
  private bwrapArgs(argv: string[], cwd: string): string[] {
    const r = this._root;
    return [
      ...this.init.flags,
      ...systemBinds(),
      "--ro-bind",
      path.join(r, "etc", "passwd"),
      "/etc/passwd",
      "--ro-bind",
      path.join(r, "etc", "group"),
      "/etc/group",
      "--bind",
      path.join(r, "repo"),
      BWRAP_PATHS.workdir,
      "--bind",
      path.join(r, "home"),
      BWRAP_PATHS.home,
      "--bind",
      path.join(r, "tmp"),
      BWRAP_PATHS.tmp,
      "--ro-bind",
      this.init.opencodeBin,
      BWRAP_PATHS.opencode,
      "--chdir",
      cwd,
      "--",
      ...argv,
    ];
  }

  private start(argv: string[], opts: ExecOptions): ChildProcess {
    if (argv.length === 0 || !argv[0]) throw new EngineError("sandbox_failed", "no command given");
    // bwrap hands its own environment to the command: it is built here from nothing, so
    // Patchbay's environment never enters, and values (passwords, tokens) stay off the
    // process list, where bwrap's arguments are visible to every local user.
    const env: Record<string, string> = {
      PATH: INSIDE_PATH,
      HOME: BWRAP_PATHS.home,
      USER: "agent",
      XDG_CONFIG_HOME: `${BWRAP_PATHS.home}/.config`,
      XDG_CACHE_HOME: `${BWRAP_PATHS.home}/.cache`,
      XDG_DATA_HOME: `${BWRAP_PATHS.home}/.local/share`,
      XDG_STATE_HOME: `${BWRAP_PATHS.home}/.local/state`,
      TMPDIR: BWRAP_PATHS.tmp,
      LANG: "C.UTF-8",
      TERM: "dumb",
      ...opts.env,
    };
    try {
      // The host-side working directory is the sandbox directory: that is how `reap` finds
      // the bwrap processes of a sandbox a previous Patchbay process left behind.
      return spawn(this.init.bwrap, this.bwrapArgs(argv, opts.cwd ?? this.workdir), {
        cwd: this._root,
        env,
        detached: true,
        stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      });
    } catch (e) {
      throw new EngineError("sandbox_failed", `cannot start ${JSON.stringify(argv[0])}: ${(e as Error).message}`);
    }
  }

  async exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.alive();
    const child = this.start(argv, opts);
    const proc = new GroupProcess(child, this.init.killGraceMs, this.init.log);
    this.procs.add(proc);
    const stdout = new Tail(OUTPUT_CAP);
    const stderr = new Tail(OUTPUT_CAP);
    proc.onOutput((chunk, stream) => (stream === "stdout" ? stdout : stderr).push(chunk));
    let timedOut = false;
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            proc.signalGroup("SIGKILL");
          }, opts.timeoutMs);
    writeStdin(child, opts.stdin, this.init.log);
    const { code, signal } = await proc.exited;
    if (timer) clearTimeout(timer);
    // When the command's namespace init exits the kernel kills whatever it left in the
    // background; this catches a bwrap that is somehow still there.
    proc.signalGroup("SIGKILL");
    this.procs.delete(proc);
    return {
      exitCode: code ?? 128 + (os.constants.signals[signal as NodeJS.Signals] ?? 0),
      stdout: stdout.text(),
      stderr: stderr.text() + (proc.spawnError ? `${proc.spawnError.message}\n` : ""),
      ...(timedOut ? { timedOut } : {}),
    };
  }

  spawn(argv: string[], opts: ExecOptions = {}): ProcessHandle {
    this.alive();
    const child = this.start(argv, opts);
    const proc = new GroupProcess(child, this.init.killGraceMs, this.init.log);
    this.procs.add(proc);
    void proc.exited.then(() => this.procs.delete(proc));
    writeStdin(child, opts.stdin, this.init.log);
    if (opts.timeoutMs !== undefined) {
      const timer = setTimeout(() => void proc.kill(), opts.timeoutMs);
      void proc.exited.then(() => clearTimeout(timer));
    }
    return proc;
  }

  freePort(): Promise<number> {
    // The network namespace is the host's: a port free here is free inside.
    return freeLoopbackPort();
  }

  async endpoint(port: number): Promise<string> {
    return `http://127.0.0.1:${port}`;
  }

  engineUrl(port: number): string {
    return `http://127.0.0.1:${port}`;
  }

  pids(): number[] {
    return [...this.procs].filter((p) => p.running && p.pid !== undefined).map((p) => p.pid!);
  }

  kill(): Promise<void> {
    this.killing ??= (async () => {
      const inside = descendants(this.pids());
      await Promise.all([...this.procs].map((p) => p.kill()));
      this.procs.clear();
      // PDEATHSIG and the PID namespace teardown are asynchronous: wait until every process
      // that was inside is really gone before the directory goes.
      const deadline = Date.now() + 5000;
      while (inside.some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      for (const pid of inside.filter(isAlive)) this.init.log.warn("sandbox process survived its namespace", { pid });
      await removeTree(this._root);
      this.init.onGone(this._id);
      this.init.log.info("sandbox removed");
    })();
    return this.killing;
  }
}
