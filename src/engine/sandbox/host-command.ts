/**
 * What a command of a host sandbox (`local`, `bwrap`) starts with: its environment, the
 * command line a provider builds, the isolated network of a `model-only` sandbox, and the
 * two ways a file crosses between the host and the sandbox's scratch dir (`tmp/`).
 */
import fs from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { EngineError } from "../errors.ts";
import { checkScratchName } from "./sandbox.ts";

/**
 * How a command starts on the host: the program, its arguments, its host directory, whole
 * environment and, when Patchbay may switch users, the host user it runs as.
 */
export interface HostCommand {
  file: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  user?: { uid: number; gid: number };
}

/** How a host provider holds one sandbox's processes to the model gateway. */
export interface IsolatedNetwork {
  /**
   * How `argv` starts with a network namespace of its own: with the gateway bridged in and
   * `ports` bridged out to the engine (`bridged`, the agent's server), or with nothing at all.
   */
  command(root: string, argv: string[], cwd: string, o: { bridged: boolean; ports: number[] }): HostCommand;
  /** The engine's URL of a port a bridged command listens on (undefined for any other). */
  endpoint(port: number): Promise<string | undefined>;
  /** Stop the host side of the bridges. */
  close(): Promise<void>;
}

/**
 * The whole environment of a sandboxed command before the caller's additions: nothing is
 * inherited from Patchbay (API keys), and the home's XDG dirs are the sandbox's own.
 */
export function sandboxEnv(paths: { path: string; home: string; tmp: string }): Record<string, string> {
  return {
    PATH: paths.path,
    HOME: paths.home,
    XDG_CONFIG_HOME: `${paths.home}/.config`,
    XDG_CACHE_HOME: `${paths.home}/.cache`,
    XDG_DATA_HOME: `${paths.home}/.local/share`,
    XDG_STATE_HOME: `${paths.home}/.local/state`,
    TMPDIR: paths.tmp,
    LANG: "C.UTF-8",
    TERM: "dumb",
  };
}

/** Copy `name` from the sandbox's scratch dir (under `root`) to a new host file. */
export async function copyOutOfScratch(root: string, name: string, hostFile: string): Promise<void> {
  checkScratchName(name);
  const file = path.join(root, "tmp", name);
  // The directory is the sandbox's: what it put at `name` may be a link (to the host's files)
  // or a FIFO. Open without following, without blocking, and read only a regular file.
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new EngineError("sandbox_failed", `cannot read ${name} from the sandbox: ${(e as Error).message}`);
  }
  try {
    if (!(await fh.stat()).isFile()) throw new EngineError("sandbox_failed", `${name} in the sandbox is not a file`);
    await pipeline(
      fh.createReadStream({ autoClose: false }),
      fs.createWriteStream(hostFile, { flags: "wx", mode: 0o600 }),
    );
  } finally {
    await fh.close();
  }
}

/** Copy a host file into the sandbox's scratch dir as `name` (which must not exist yet). */
export async function copyIntoScratch(hostFile: string, root: string, name: string): Promise<void> {
  checkScratchName(name);
  const file = path.join(root, "tmp", name);
  // EXCL: a link the sandbox left at `name` is never written through.
  await fs.promises.copyFile(hostFile, file, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
  await fs.promises.chmod(file, 0o644);
}
