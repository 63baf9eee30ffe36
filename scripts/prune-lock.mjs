#!/usr/bin/env node
// npm records optional dependencies it could not fetch (opencode-ai lists a binary package
// per platform; a registry mirror may serve only some of them) as edges in the lockfile
// without entries, and `npm ci` then refuses the lockfile as out of sync. This drops the
// edges that have no entry, so `npm ci` works against the registry the lockfile was made
// with. Run it after `npm install` changes package-lock.json: `npm run lock:prune`.
import fs from "node:fs";

const file = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(fs.readFileSync(file, "utf8"));
let dropped = 0;
for (const [where, entry] of Object.entries(lock.packages ?? {})) {
  if (!entry.optionalDependencies) continue;
  const base = where ? `${where}/node_modules/` : "node_modules/";
  for (const name of Object.keys(entry.optionalDependencies)) {
    if (!lock.packages[`${base}${name}`] && !lock.packages[`node_modules/${name}`]) {
      delete entry.optionalDependencies[name];
      dropped++;
    }
  }
}
fs.writeFileSync(file, JSON.stringify(lock, null, 2) + "\n");
process.stderr.write(`prune-lock: dropped ${dropped} optional dependency edge(s) with no lockfile entry\n`);
