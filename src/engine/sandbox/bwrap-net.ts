/**
 * `model-only` for bwrap: the sandbox's processes get a network namespace of their own
 * (`--unshare-net`: only a loopback, which bwrap brings up), so they reach neither the
 * internet nor anything on the host's loopback (Patchbay's API, other runs' OpenCode
 * servers, other services). Two bridges cross it, both through Unix sockets in the sandbox's
 * directory (a socket file crosses namespaces, a TCP port does not):
 *   - in: the model gateway. The host listens on `<root>/net/gw/gateway.sock` and forwards to
 *     the gateway's loopback port; inside, `bwrap-bridge.mjs` listens on 127.0.0.1:<that port>
 *     (OpenCode speaks TCP) and forwards to the socket.
 *   - out: the agent's server. Inside, the bridge listens on `/run/patchbay/ports/<port>` and
 *     forwards to 127.0.0.1:<port>; the host listens on a loopback port of its own and
 *     forwards to that socket: `endpoint(port)` is that URL.
 * The bridge wraps the agent's server only; other commands in a restricted sandbox
 * (validation, the engine's git) get the namespace with nothing in it.
 */
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EngineError } from "../errors.ts";
import type { HostCommand, IsolatedNetwork } from "./host-command.ts";
import type { SandboxNetwork } from "./sandbox.ts";

/** Where the bridge and its sockets are inside the sandbox. */
const INSIDE = {
  node: "/opt/patchbay/bin/node",
  bridge: "/opt/patchbay/bridge.mjs",
  gateway: "/run/patchbay/gw",
  ports: "/run/patchbay/ports",
} as const;
/** A Unix socket path holds at most 107 bytes; longer host paths go through a short link. */
const MAX_SOCKET_PATH = 100;
const BRIDGE_SOURCE = fileURLToPath(new URL("./bwrap-bridge.mjs", import.meta.url));

export interface BwrapIsolationOptions {
  /** How a command starts in the sandbox with the host's network (bwrap's own `command`), to be isolated here. */
  command(root: string, argv: string[], cwd: string, extraBinds: string[]): HostCommand;
  /** Give what Patchbay made under `dir` to the sandbox's user (root Patchbay). */
  handOver?(dir: string): void;
}

/** Isolate one bwrap sandbox at `root` (see the file header). */
export async function isolateBwrap(
  root: string,
  network: SandboxNetwork,
  o: BwrapIsolationOptions,
): Promise<IsolatedNetwork> {
  const netDir = path.join(root, "net");
  const gwDir = path.join(netDir, "gw");
  const portsDir = path.join(netDir, "ports");
  fs.mkdirSync(gwDir, { recursive: true, mode: 0o711 });
  fs.mkdirSync(portsDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(netDir, 0o711);
  fs.chmodSync(gwDir, 0o711);
  fs.copyFileSync(BRIDGE_SOURCE, path.join(netDir, "bridge.mjs"));
  fs.chmodSync(path.join(netDir, "bridge.mjs"), 0o644);
  // The sandbox's user makes the outward sockets; the gateway's is Patchbay's.
  o.handOver?.(portsDir);
  const hostSide = shortPath(netDir);
  const sockets = new Set<net.Socket>();
  const servers: net.Server[] = [];
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  };

  const gatewaySocket = path.join(hostSide.path, "gw", "gateway.sock");
  const gateway = net.createServer((c) => {
    track(c);
    const up = net.connect(network.gatewayPort, "127.0.0.1");
    track(up);
    pipe(c, up);
  });
  await listen(gateway, gatewaySocket);
  servers.push(gateway);
  // The sandbox's user (another uid under a root Patchbay) must be able to connect.
  fs.chmodSync(gatewaySocket, 0o666);

  const exposed = new Map<number, Promise<string>>();
  const bwrapBinds = [
    "--ro-bind",
    gwDir,
    INSIDE.gateway,
    "--bind",
    portsDir,
    INSIDE.ports,
    "--ro-bind",
    path.join(netDir, "bridge.mjs"),
    INSIDE.bridge,
    "--ro-bind",
    process.execPath,
    INSIDE.node,
  ];

  return {
    command(r, argv, cwd, c) {
      if (!c.bridged) return isolated(o.command(r, argv, cwd, []));
      const spec = {
        gateway: { port: network.gatewayPort, socket: `${INSIDE.gateway}/gateway.sock` },
        expose: c.ports.map((port) => ({ port, socket: `${INSIDE.ports}/${port}` })),
      };
      return isolated(o.command(r, [INSIDE.node, INSIDE.bridge, JSON.stringify(spec), "--", ...argv], cwd, bwrapBinds));
    },

    endpoint(port) {
      const socket = path.join(hostSide.path, "ports", String(port));
      let url = exposed.get(port);
      if (!url) {
        const server = net.createServer((c) => {
          track(c);
          const inside = net.connect(socket);
          track(inside);
          pipe(c, inside);
        });
        servers.push(server);
        url = listen(server, 0, "127.0.0.1").then(
          () => `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
        );
        exposed.set(port, url);
      }
      return url;
    },

    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      hostSide.remove();
    },
  };
}

/** The command with the host's network taken away: bwrap's `--unshare-all` then unshares it too. */
function isolated(cmd: HostCommand): HostCommand {
  const end = cmd.args.indexOf("--");
  return {
    ...cmd,
    args: [...cmd.args.slice(0, end).filter((a) => a !== "--share-net"), ...cmd.args.slice(end)],
  };
}

/** `dir` as a path short enough for the sockets in it: itself, or a link to it in the temp dir. */
function shortPath(dir: string): { path: string; remove(): void } {
  // The longest name under it: `ports/65535`, `gw/gateway.sock`.
  if (Buffer.byteLength(dir) + 16 <= MAX_SOCKET_PATH) return { path: dir, remove: () => undefined };
  const holder = fs.mkdtempSync(path.join(os.tmpdir(), "pbnet-"));
  const link = path.join(holder, "n");
  fs.symlinkSync(dir, link);
  if (Buffer.byteLength(link) + 16 > MAX_SOCKET_PATH)
    throw new EngineError("sandbox_failed", `no path short enough for a Unix socket (${link})`);
  return { path: link, remove: () => fs.rmSync(holder, { recursive: true, force: true }) };
}

function listen(server: net.Server, ...where: [string] | [number, string]): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", (e) =>
      reject(new EngineError("sandbox_failed", `could not bridge the sandbox's network: ${e.message}`)),
    );
    server.listen(...(where as [number, string]), () => resolve());
  });
}

function pipe(a: net.Socket, b: net.Socket): void {
  a.pipe(b);
  b.pipe(a);
  a.on("error", () => b.destroy());
  b.on("error", () => a.destroy());
  a.on("close", () => b.destroy());
  b.on("close", () => a.destroy());
}
