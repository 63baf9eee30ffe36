// The model-only network bridge, run by `node` inside a bwrap sandbox whose network namespace
// is its own (nothing but its loopback). It listens on 127.0.0.1:<gateway port> and forwards
// to the gateway's Unix socket bound in from the host, listens on a Unix socket for each port
// the engine must reach (OpenCode's server) and forwards it to 127.0.0.1:<port>, then runs the
// command after `--` and exits with it. Plain CommonJS with no dependencies: it runs on the
// host's node binary, bound read-only into the sandbox.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";

const spec = JSON.parse(process.argv[2]);
const argv = process.argv.slice(process.argv.indexOf("--", 3) + 1);

function pipe(a, b) {
  a.pipe(b);
  b.pipe(a);
  for (const [x, y] of [
    [a, b],
    [b, a],
  ]) {
    x.on("error", () => y.destroy());
    x.on("close", () => y.destroy());
  }
}

function listen(server, ...where) {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(...where, () => resolve());
  });
}

const servers = [
  listen(
    net.createServer((c) => pipe(c, net.connect(spec.gateway.socket))),
    spec.gateway.port,
    "127.0.0.1",
  ),
];
for (const e of spec.expose) {
  fs.rmSync(e.socket, { force: true });
  servers.push(
    listen(
      net.createServer((c) => pipe(c, net.connect(e.port, "127.0.0.1"))),
      e.socket,
    ),
  );
}

Promise.all(servers).then(
  () => {
    const child = spawn(argv[0], argv.slice(1), { stdio: "inherit" });
    for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) process.on(sig, () => child.kill(sig));
    child.on("error", (e) => {
      process.stderr.write(`patchbay bridge: cannot start ${argv[0]}: ${e.message}\n`);
      process.exit(127);
    });
    child.on("exit", (code, signal) => process.exit(code ?? 128 + (os.constants.signals[signal] || 0)));
  },
  (e) => {
    process.stderr.write(`patchbay bridge: ${e.message}\n`);
    process.exit(70);
  },
);
