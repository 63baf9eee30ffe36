/** Which checks a repository declares: detection from its files alone. */
import { describe, expect, it } from "vitest";
import { detectChecks } from "../../../src/engine/validation/detect.ts";

const labels = (entries: string[], files: Record<string, string> = {}) =>
  detectChecks({ entries, files }).map((c) => `${c.stage}: ${c.label}`);

describe("validation command detection", () => {
  it("reads package.json: install when dependencies are missing, typecheck before build, the test script", () => {
    const pkg = JSON.stringify({
      scripts: { typecheck: "tsc", build: "vite build", test: "vitest run" },
      devDependencies: { vitest: "4" },
    });
    expect(labels(["package.json", "package-lock.json"], { "package.json": pkg })).toEqual([
      "install: npm ci --no-audit --no-fund",
      "check: npm run typecheck",
      "test: npm test",
    ]);
    expect(labels(["package.json", "node_modules", "pnpm-lock.yaml"], { "package.json": pkg })).toEqual([
      "check: pnpm run typecheck",
      "test: pnpm test",
    ]);
    expect(labels(["package.json"], { "package.json": JSON.stringify({ scripts: { build: "x" } }) })).toEqual([
      "check: npm run build",
    ]);
  });

  it("ignores npm's placeholder test script and a malformed package.json", () => {
    expect(
      labels(["package.json"], {
        "package.json": JSON.stringify({ scripts: { test: 'echo "Error: no test specified" && exit 1' } }),
      }),
    ).toEqual([]);
    expect(labels(["package.json"], { "package.json": "{ not json" })).toEqual([]);
  });

  it("knows go, cargo, pytest and make", () => {
    expect(labels(["go.mod"])).toEqual(["check: go build ./...", "test: go test ./..."]);
    expect(labels(["Cargo.toml"])).toEqual(["check: cargo check --quiet", "test: cargo test --quiet"]);
    expect(labels(["pyproject.toml"], { "pyproject.toml": "[tool.pytest.ini_options]\n" })).toEqual([
      "check: python3 -m compileall -q .",
      "test: python3 -m pytest -q",
    ]);
    expect(labels(["setup.cfg", "setup.py"], { "setup.cfg": "[tool:pytest]\n" })).toEqual([
      "check: python3 -m compileall -q .",
      "test: python3 -m pytest -q",
    ]);
    expect(labels(["Makefile"], { Makefile: "build:\n\tcc x.c\n\ntest: build\n\t./x\n" })).toEqual(["test: make test"]);
  });

  it("a .patchbay.json in the repository overrides the detected commands stage by stage", () => {
    const cfg = JSON.stringify({ validation: { test: ["make check-all", ["node", "t.js"]] } });
    const checks = detectChecks({ entries: ["go.mod", ".patchbay.json"], files: { ".patchbay.json": cfg } });
    expect(checks.map((c) => [c.stage, c.label, c.argv])).toEqual([
      ["check", "go build ./...", ["go", "build", "./..."]],
      ["test", "make check-all", ["sh", "-c", "make check-all"]],
      ["test", "node t.js", ["node", "t.js"]],
    ]);
  });
});
