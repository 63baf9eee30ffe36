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
 * Uid 1000 inside is whoever started `bwrap` outside. Under a root Patchbay that would make
 * every file the agent writes root's on the host (`chmod 4755` on a copied binary: a setuid-root
 * program). So a root Patchbay starts `bwrap` as an unprivileged host user (`sandboxUser`,
 * PATCHBAY_SANDBOX_UID) and gives it the sandbox's directories; the data dir and its
 * `sandboxes/` become searchable (not readable) by that user's group, which bwrap needs to
 * find the directories it binds.
 *
 * By default the network namespace is shared: the agent reaches the model gateway on the
 * host's loopback, and so everything else there and the internet (see ARCHITECTURE.md). A run
 * with network `model-only` gets a namespace of its own with only the gateway bridged in
 * (`bwrap-net.ts`).
 *
 * The checkout is made on the host from the mirror cache with `--no-hardlinks`: hard-linked
 * objects would be files the sandbox could rewrite inside the shared mirror. Every later git
 * command (the engine's diff) runs inside the sandbox through `exec`, so a hostile
 * `.git/config` written by the agent never runs anything on the host.
 *
 * Everything but how a command starts (and the sandbox's mounts) is the host base's (`host.ts`).
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { DEFAULT_HOST_PATH } from "../../config.ts";
import { EngineError } from "../errors.ts";
import type { GitRunner } from "../git/git.ts";
import { isolateBwrap } from "./bwrap-net.ts";
import { createHostProvider, sandboxEnv, type HostCommand, type HostProviderOptions } from "./host.ts";
import { chownTree } from "./process.ts";
import type { SandboxProvider } from "./sandbox.ts";

/** Options for {@link createBwrapProvider}. */
export interface BwrapProviderOptions extends HostProviderOptions {
  /** Host path of the `opencode` binary, bound read-only into every sandbox. */
  opencodeBin: string;
  /** The `bwrap` program. Default: found on `path`. */
  bwrapPath?: string;
  /** The host's PATH (`config.hostPath`), searched for `bwrap`. Default: DEFAULT_HOST_PATH. */
  path?: string;
  /**
   * The host user the sandbox runs as when Patchbay runs as root (`config.sandboxUser`);
   * ignored otherwise, the sandbox is then Patchbay's own user. Default 65534:65534 (nobody).
   */
  sandboxUser?: SandboxUser;
}

/** A host user, by number (it needs no entry in the host's `/etc/passwd`). */
export interface SandboxUser {
  uid: number;
  gid: number;
}

/** Where things are inside every sandbox. */
export const BWRAP_PATHS = {
  workdir: "/workspace",
  home: "/home/agent",
  tmp: "/tmp",
  opencode: "/opt/patchbay/bin/opencode",
} as const;

const AGENT_UID = 1000;
const NOBODY: SandboxUser = { uid: 65534, gid: 65534 };
/** Data dir entries other modules make with the default umask (world-readable). */
const CLOSED_DIRS = ["mirrors", "pool-seed"];
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
  const bwrap = opts.bwrapPath ?? findOnPath("bwrap", opts.path ?? DEFAULT_HOST_PATH);
  if (!bwrap)
    throw new EngineError("sandbox_failed", "PATCHBAY_SANDBOX=bwrap needs bubblewrap: apt-get install bubblewrap");
  if (!fs.existsSync(opts.opencodeBin))
    throw new EngineError("sandbox_failed", `the opencode binary ${opts.opencodeBin} does not exist`);
  // Root's processes switch to the sandbox user; anyone else's are already unprivileged.
  const user = process.geteuid?.() === 0 ? (opts.sandboxUser ?? NOBODY) : undefined;
  const sandboxesDir = path.join(path.resolve(opts.dataDir), "sandboxes");
  if (user) openTo(user, sandboxesDir);
  const flags = await probeFlags(bwrap, user);
  if (user) await probeReach(bwrap, flags, user, sandboxesDir, opts.opencodeBin);
  // bwrap hands its own environment to the command: built from nothing, so Patchbay's
  // never enters, and values (passwords, tokens) stay off the process list, where bwrap's
  // arguments are visible to every local user. The host-side working directory is the
  // sandbox directory: that is how `reap` finds the bwrap processes a dead Patchbay left.
  const command = (root: string, argv: string[], cwd: string, extraBinds: string[] = []): HostCommand => ({
    file: bwrap,
    args: [...flags, ...sandboxBinds(root, opts.opencodeBin), ...extraBinds, "--chdir", cwd, "--", ...argv],
    cwd: root,
    env: { ...sandboxEnv({ path: INSIDE_PATH, home: BWRAP_PATHS.home, tmp: BWRAP_PATHS.tmp }), USER: "agent" },
    ...(user ? { user } : {}),
  });
  let netProbe: Promise<void> | undefined;
  return createHostProvider(opts, {
    name: "bwrap",
    // Commands see the sandbox's own paths, bound from directories that a rename moves along.
    hostPaths: false,
    workdir: () => BWRAP_PATHS.workdir,
    tmpdir: () => BWRAP_PATHS.tmp,
    // Hard links would share object files between the mirror and a workspace the sandbox may
    // write: copy them instead (the cost grows with the repository, the safety does not).
    // The workspace directory is the sandbox user's: root's git would call it dubious.
    checkoutGit:
      (git): GitRunner =>
      (args, o) =>
        git(
          [
            ...(user ? ["-c", "safe.directory=*"] : []),
            ...(args[0] === "clone" ? ["clone", "--no-hardlinks", ...args.slice(1)] : args),
          ],
          o,
        ),
    binaryPath: (name) => (name === "opencode" ? BWRAP_PATHS.opencode : undefined),
    layout: (root) => {
      fs.mkdirSync(path.join(root, "etc"), { mode: 0o700 });
      // Tools that ask "who am I" (git, ssh, a shell prompt) need the agent to have a name.
      fs.writeFileSync(
        path.join(root, "etc", "passwd"),
        `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:${AGENT_UID}:${AGENT_UID}:Patchbay agent:${BWRAP_PATHS.home}:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
      );
      fs.writeFileSync(path.join(root, "etc", "group"), `root:x:0:\nagent:x:${AGENT_UID}:\nnogroup:x:65534:\n`);
    },
    ...(user ? { handOver: (dir: string) => chownTree(dir, user) } : {}),
    command: (root, argv, cwd) => command(root, argv, cwd),
    async isolate(root, network) {
      // Checked on first use: a machine where bwrap cannot make a network namespace refuses model-only runs clearly.
      await (netProbe ??= probeIsolation(bwrap, flags, user));
      return isolateBwrap(root, network, {
        command,
        ...(user ? { handOver: (dir: string) => chownTree(dir, user) } : {}),
      });
    },
  });
}

/**
 * The namespace flags this machine's bwrap accepts. `--disable-userns` (bwrap >= 0.8) stops
 * the agent from making a user namespace of its own, where it would be root again; older
 * versions run without it. Fails with a clear message when bwrap cannot run at all (user
 * namespaces disabled, or a container that forbids them).
 */
async function probeFlags(bwrap: string, user: SandboxUser | undefined): Promise<string[]> {
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
    const res = await runOnce(bwrap, [...flags, ...systemBinds(), "--", "/bin/true"], user);
    if (res.code === 0) return flags;
    lastError = res.stderr.trim().split("\n").at(-1) ?? `exit ${res.code}`;
  }
  throw new EngineError("sandbox_failed", `bwrap cannot create a sandbox on this machine: ${lastError}`);
}

/** Fails when bwrap cannot give a sandbox a network namespace of its own here. */
async function probeIsolation(bwrap: string, flags: string[], user: SandboxUser | undefined): Promise<void> {
  const isolated = flags.filter((f) => f !== "--share-net");
  const res = await runOnce(bwrap, [...isolated, ...systemBinds(), "--", "/bin/true"], user);
  if (res.code !== 0)
    throw new EngineError(
      "unsupported_network_policy",
      `bwrap cannot give a sandbox a network of its own on this machine, so network model-only is unavailable: ${res.stderr.trim().split("\n").at(-1) ?? `exit ${res.code}`}`,
    );
}

/**
 * Let the sandbox user's group search (not list) the data dir and `sandboxes/`: bwrap, run as
 * that user, resolves the paths it binds. Nothing else in the data dir is given to it: the
 * store writes its files 0600, and what is made with the default umask (the mirrors, the pool's
 * seed) is closed here.
 */
function openTo(user: SandboxUser, sandboxesDir: string): void {
  const dataDir = path.dirname(sandboxesDir);
  fs.mkdirSync(sandboxesDir, { recursive: true, mode: 0o700 });
  for (const name of CLOSED_DIRS) fs.mkdirSync(path.join(dataDir, name), { mode: 0o700, recursive: true });
  for (const entry of fs.readdirSync(dataDir, { withFileTypes: true })) {
    if (entry.isSymbolicLink() || entry.name === path.basename(sandboxesDir)) continue;
    const p = path.join(dataDir, entry.name);
    const mode = fs.statSync(p).mode;
    if (mode & 0o077) fs.chmodSync(p, mode & 0o7700);
  }
  const searchable = (st: fs.Stats) =>
    (st.mode & 0o001) !== 0 || (st.gid === user.gid && (st.mode & 0o010) !== 0) || st.uid === user.uid;
  if (!searchable(fs.statSync(dataDir))) {
    fs.chownSync(dataDir, fs.statSync(dataDir).uid, user.gid);
    fs.chmodSync(dataDir, (fs.statSync(dataDir).mode & 0o7707) | 0o010);
  }
  fs.chownSync(sandboxesDir, 0, user.gid);
  fs.chmodSync(sandboxesDir, 0o710);
}

/** Fails clearly when the sandbox user cannot reach what every sandbox binds (a parent dir closed to it). */
async function probeReach(
  bwrap: string,
  flags: string[],
  user: SandboxUser,
  sandboxesDir: string,
  opencodeBin: string,
): Promise<void> {
  const binds = ["--ro-bind", sandboxesDir, "/mnt", "--ro-bind", opencodeBin, BWRAP_PATHS.opencode];
  const res = await runOnce(bwrap, [...flags, ...systemBinds(), ...binds, "--", "/bin/true"], user);
  if (res.code === 0) return;
  throw new EngineError(
    "sandbox_failed",
    `bwrap runs sandboxes as uid ${user.uid} (PATCHBAY_SANDBOX_UID), which cannot reach ${sandboxesDir} or ${opencodeBin}: make their parent directories searchable by it (${res.stderr.trim().split("\n").at(-1) ?? `exit ${res.code}`})`,
  );
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

function runOnce(
  file: string,
  args: string[],
  user: SandboxUser | undefined,
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { PATH: INSIDE_PATH },
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.on("error", (e) => {
      stderr += e.message;
    });
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

function findOnPath(name: string, searchPath: string): string | undefined {
  for (const dir of searchPath.split(":")) {
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

/** The sandbox's own mounts (no secrets: those go through the environment). */
function sandboxBinds(root: string, opencodeBin: string): string[] {
  return [
    ...systemBinds(),
    "--ro-bind",
    path.join(root, "etc", "passwd"),
    "/etc/passwd",
    "--ro-bind",
    path.join(root, "etc", "group"),
    "/etc/group",
    "--bind",
    path.join(root, "repo"),
    BWRAP_PATHS.workdir,
    "--bind",
    path.join(root, "home"),
    BWRAP_PATHS.home,
    "--bind",
    path.join(root, "tmp"),
    BWRAP_PATHS.tmp,
    "--ro-bind",
    opencodeBin,
    BWRAP_PATHS.opencode,
  ];
}
