/** Which checks a repository declares: detection from its files alone. */
import { describe, expect, it } from "vitest";
import { detectChecks, InvalidSetupError, planSetup } from "../../../src/engine/validation/detect.ts";

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

describe("setup planning (the install step, run before the agent starts)", () => {
  const pkg = JSON.stringify({ dependencies: { "left-pad": "1.3.0" } });

  it("a repository's .patchbay.json setup wins over its validation.install and over detection", () => {
    const setup = { commands: ["npm ci"], cache: { key: ["package-lock.json"], paths: ["node_modules"] } };
    const files = {
      ".patchbay.json": JSON.stringify({ setup, validation: { install: ["make deps"] } }),
      "package.json": pkg,
    };
    expect(planSetup({ entries: [".patchbay.json", "package.json"], files })).toEqual({
      source: "repository",
      spec: setup,
    });
    const onlyInstall = JSON.stringify({ validation: { install: ["make deps", ["sh", "-c", "echo it's"]] } });
    expect(planSetup({ entries: [".patchbay.json"], files: { ".patchbay.json": onlyInstall } })).toEqual({
      source: "repository",
      spec: { commands: ["make deps", `sh -c 'echo it'\\''s'`] },
    });
  });

  it("an invalid .patchbay.json setup is an error naming the field, not a silent skip", () => {
    const files = { ".patchbay.json": JSON.stringify({ setup: { commands: [], cache: { key: ["../x"] } } }) };
    expect(() => planSetup({ entries: [".patchbay.json"], files })).toThrow(InvalidSetupError);
    expect(() => planSetup({ entries: [".patchbay.json"], files })).toThrow(/^\.patchbay\.json: setup\.commands/);
  });

  it("detects npm, pnpm and yarn installs cached by their lockfile in node_modules", () => {
    expect(planSetup({ entries: ["package.json", "package-lock.json"], files: { "package.json": pkg } })).toEqual({
      source: "detected",
      spec: {
        commands: ["npm ci --no-audit --no-fund"],
        cache: { key: ["package-lock.json"], paths: ["node_modules"] },
      },
      requires: ["npm"],
    });
    expect(planSetup({ entries: ["package.json", "pnpm-lock.yaml"], files: { "package.json": pkg } })?.spec).toEqual({
      commands: ["pnpm install --frozen-lockfile"],
      cache: { key: ["pnpm-lock.yaml"], paths: ["node_modules"] },
    });
    // Nothing to install: no dependencies, or node_modules is in the repository.
    expect(planSetup({ entries: ["package.json"], files: { "package.json": "{}" } })).toBeUndefined();
    expect(planSetup({ entries: ["package.json", "node_modules"], files: { "package.json": pkg } })).toBeUndefined();
  });

  it("pip, go and cargo installs run uncached; mixed with npm, nothing is cached", () => {
    const plan = planSetup({
      entries: ["package.json", "yarn.lock", "requirements.txt", "go.mod", "Cargo.toml"],
      files: { "package.json": pkg },
    })!;
    expect(plan.spec.cache).toBeUndefined();
    expect(plan.spec.commands).toEqual([
      "yarn install --frozen-lockfile",
      "PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user -q -r requirements.txt",
      "go mod download",
      "cargo fetch",
    ]);
    expect(plan.requires).toEqual(["yarn", "python3", "go", "cargo"]);
  });
});
