/**
 * The Dockerfile and compose.yaml, checked without a Docker engine (none runs here, so they are
 * not built): every path the Dockerfile copies exists, the runtime's imports are all production
 * dependencies (`npm ci --omit=dev`), the image runs as a non-root user on the Node the package
 * supports, and compose wires Patchbay to its Postgres.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const read = (p: string) => fs.readFileSync(path.join(ROOT, p), "utf8");
const dockerfile = read("Dockerfile");
const pkg = JSON.parse(read("package.json")) as {
  engines: { node: string };
  dependencies: Record<string, string>;
  scripts: Record<string, string>;
};

/** Instructions of the Dockerfile, continuation lines joined. */
const instructions = dockerfile
  .replace(/\\\n/g, " ")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith("#"));

/** Bare package names a source tree imports (not `node:` builtins, not relative paths). */
function packagesImported(dir: string): Set<string> {
  const found = new Set<string>();
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(ts|mjs|js)$/.test(e.name))
        for (const m of fs.readFileSync(p, "utf8").matchAll(/(?:from |import\()"([^".][^"]*)"/g)) {
          const spec = m[1]!;
          if (spec.startsWith("node:")) continue;
          found.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!);
        }
    }
  };
  walk(path.join(ROOT, dir));
  return found;
}

describe("the Docker image", () => {
  it("copies only paths that exist, and what it copies holds the runtime", () => {
    const copies = instructions.filter((l) => l.startsWith("COPY "));
    expect(copies.length).toBeGreaterThan(0);
    const sources = copies.flatMap((l) =>
      l
        .split(/\s+/)
        .slice(1, -1)
        .filter((a) => !a.startsWith("--")),
    );
    for (const s of sources) expect(fs.existsSync(path.join(ROOT, s)), `COPY ${s}`).toBe(true);
    // bin/patchbay.mjs imports src/, the CLI imports client/, and npm ci runs the postinstall script.
    for (const needed of ["bin", "src", "client", "package-lock.json"]) expect(sources).toContain(needed);
    const postinstall = /node (\S+)/.exec(pkg.scripts.postinstall ?? "")?.[1];
    if (postinstall) expect(sources).toContain(postinstall);
  });

  it("installs production dependencies only, and every package the runtime imports is one", () => {
    expect(instructions.some((l) => /npm ci --omit=dev/.test(l))).toBe(true);
    const imported = new Set([...packagesImported("src"), ...packagesImported("client"), ...packagesImported("bin")]);
    const missing = [...imported].filter((p) => !(p in pkg.dependencies));
    expect(missing).toEqual([]);
    expect(pkg.dependencies).toHaveProperty("tsx");
    expect(pkg.dependencies).toHaveProperty("opencode-ai");
  });

  it("runs as a non-root user on the Node the package supports, with git and bubblewrap", () => {
    const from = instructions.find((l) => l.startsWith("FROM "))!;
    expect(from).toMatch(new RegExp(`node:${pkg.engines.node.replace(">=", "")}\\b`));
    const user = instructions.filter((l) => l.startsWith("USER ")).at(-1);
    expect(user).toBeDefined();
    expect(user).not.toMatch(/USER (root|0)\b/);
    const apt = instructions.find((l) => l.includes("apt-get install"))!;
    for (const p of ["git", "bubblewrap"]) expect(apt).toMatch(new RegExp(`\\b${p}\\b`));
    expect(instructions).toContain('CMD ["serve"]');
  });
});

describe("compose.yaml", () => {
  it("runs Patchbay from this Dockerfile on Postgres, with one secret key for every replica", () => {
    // No YAML parser among the dependencies: the file's service blocks, by indentation.
    const compose = read("compose.yaml");
    const service = (name: string) =>
      new RegExp(`^  ${name}:\\n((?:    .*\\n|\\s*\\n)+)`, "m").exec(compose)?.[1] ?? "";
    const patchbay = service("patchbay");
    expect(service("postgres")).toMatch(/image: postgres:/);
    expect(patchbay).toMatch(/^    build: \.$/m);
    expect(patchbay).toMatch(/PATCHBAY_DATABASE_URL: postgres:\/\/[^@\s]+@postgres:5432\/patchbay$/m);
    expect(patchbay).toMatch(/PATCHBAY_SECRET_KEY: \$\{PATCHBAY_SECRET_KEY:\?/);
    expect(patchbay).toMatch(/depends_on:\n\s+postgres:/);
  });
});
