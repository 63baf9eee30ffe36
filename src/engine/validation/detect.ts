/**
 * Which checks a repository declares, read from its own files. Pure: it takes the top-level
 * file names and the text of the few files it looks at, so it is tested without a sandbox.
 *
 * - install: dependencies the checks need (npm/pnpm/yarn when package.json has dependencies
 *   and no node_modules yet).
 * - check (`basic`): the project's quick checks: `typecheck` (or else `build`) of package.json,
 *   `go build ./...`, `cargo check`, `python3 -m compileall`.
 * - test (`tests`): the test command: package.json `test`, pytest, `go test ./...`,
 *   `cargo test`, `make test`.
 * The install step runs as the run's setup (see {@link planSetup}) before the agent starts;
 * validation runs it only for runs stored before setups existed.
 * A `.patchbay.json` in the repository overrides any of the three:
 * `{"validation": {"install": [...], "check": [...], "test": [...]}}`, each entry a shell
 * string (run with `sh -c` inside the sandbox) or an argument array.
 */
import * as z from "zod";
import { SetupSpec } from "../environment/schema.ts";

export type Stage = "install" | "check" | "test";

export interface PlannedCommand {
  stage: Stage;
  /** How the command is shown in the run's `validation.commands[].command`. */
  label: string;
  argv: string[];
  /** A binary that must exist in the sandbox; when missing the command is reported as skipped. */
  requires?: string;
}

export interface RepoFacts {
  /** Top-level entries of the workdir (names only). */
  entries: string[];
  /** Text of the files read (by top-level name); absent when not present. */
  files: Partial<Record<(typeof FILES_READ)[number], string>>;
}

/** The files detection reads, so the caller knows what to fetch from the sandbox. */
export const FILES_READ = [
  "package.json",
  "Makefile",
  "pyproject.toml",
  "setup.cfg",
  "tox.ini",
  ".patchbay.json",
] as const;

/** The `.patchbay.json` config file; unknown keys are ignored so the file can grow. */
export const RepoValidationConfig = z.object({
  validation: z
    .object({
      install: z.array(z.union([z.string().min(1), z.array(z.string()).min(1)])).optional(),
      check: z.array(z.union([z.string().min(1), z.array(z.string()).min(1)])).optional(),
      test: z.array(z.union([z.string().min(1), z.array(z.string()).min(1)])).optional(),
    })
    .optional(),
});

const PackageJson = z.object({
  scripts: z.record(z.string(), z.string()).optional(),
  dependencies: z.record(z.string(), z.unknown()).optional(),
  devDependencies: z.record(z.string(), z.unknown()).optional(),
  packageManager: z.string().optional(),
});

/**
 * What a run's setup runs, when the run names none: the repository's `.patchbay.json` `setup`
 * (or else its `validation.install`), or else the install step detected from its files.
 */
export interface SetupPlan {
  source: "repository" | "detected";
  spec: SetupSpec;
  /** Detected setups: the tool each command needs; a command whose tool is missing is skipped. */
  requires?: string[];
}

/** Thrown by {@link planSetup} for a `.patchbay.json` whose `setup` does not parse. */
export class InvalidSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidSetupError";
  }
}

const RepoSetupConfig = z.object({ setup: z.unknown().optional() });

/** Quote one argument for `sh -c`. */
const shq = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);

/**
 * The setup of a repository that declares none in the run: `.patchbay.json` `setup`, else its
 * `validation.install`, else what {@link detectChecks} would install (npm/pnpm/yarn, cached by
 * lockfile in `node_modules`), plus `pip install --user -r requirements.txt`, `go mod
 * download` and `cargo fetch` (uncached: they install outside the workspace).
 */
export function planSetup(facts: RepoFacts): SetupPlan | undefined {
  const text = facts.files[".patchbay.json"];
  const declared = parseJson(RepoSetupConfig, text)?.setup;
  if (declared !== undefined) {
    const r = SetupSpec.safeParse(declared);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      throw new InvalidSetupError(
        `.patchbay.json: setup${issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("")}: ${issue.message}`,
      );
    }
    return { source: "repository", spec: r.data };
  }
  const install = parseJson(RepoValidationConfig, text)?.validation?.install;
  if (install?.length)
    return {
      source: "repository",
      spec: { commands: install.map((e) => (typeof e === "string" ? e : e.map(shq).join(" "))) },
    };

  const has = (name: string) => facts.entries.includes(name);
  const commands: string[] = [];
  const requires: string[] = [];
  let cache: SetupSpec["cache"];
  const node = detectChecks({ entries: facts.entries, files: { "package.json": facts.files["package.json"] } }).find(
    (c) => c.stage === "install",
  );
  if (node) {
    commands.push(node.argv.map(shq).join(" "));
    requires.push(node.requires!);
    const lock = ["pnpm-lock.yaml", "yarn.lock", "package-lock.json"].find(has) ?? "package.json";
    cache = { key: [lock], paths: ["node_modules"] };
  }
  if (has("requirements.txt")) {
    // Debian's Python refuses --user installs without this (PEP 668); older pips ignore it.
    commands.push("PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user -q -r requirements.txt");
    requires.push("python3");
  }
  if (has("go.mod")) {
    commands.push("go mod download");
    requires.push("go");
  }
  if (has("Cargo.toml")) {
    commands.push("cargo fetch");
    requires.push("cargo");
  }
  if (commands.length === 0) return undefined;
  // The cache holds the workspace's paths only: a setup that also installs elsewhere is not cached.
  return { source: "detected", spec: { commands, ...(cache && commands.length === 1 ? { cache } : {}) }, requires };
}

/** npm's placeholder test script (`npm init`), which always fails: not a test command. */
const NPM_PLACEHOLDER = /no test specified/;

function parseJson<T>(schema: z.ZodType<T>, text: string | undefined): T | undefined {
  if (text === undefined) return undefined;
  try {
    const r = schema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch (e) {
    // A malformed file declares nothing; the checks that do exist still run.
    if (e instanceof SyntaxError) return undefined;
    throw e;
  }
}

const fromConfig = (stage: Stage, entries: (string | string[])[]): PlannedCommand[] =>
  entries.map((e) =>
    typeof e === "string"
      ? { stage, label: e, argv: ["sh", "-c", e], requires: "sh" }
      : { stage, label: e.join(" "), argv: e, requires: e[0]! },
  );

/** Plan the commands of all three stages; the caller picks stages by validation mode. */
export function detectChecks(facts: RepoFacts): PlannedCommand[] {
  const has = (name: string) => facts.entries.includes(name);
  const install: PlannedCommand[] = [];
  const check: PlannedCommand[] = [];
  const test: PlannedCommand[] = [];

  const pkg = parseJson(PackageJson, facts.files["package.json"]);
  if (pkg) {
    const pm = has("pnpm-lock.yaml") ? "pnpm" : has("yarn.lock") ? "yarn" : "npm";
    const deps = Object.keys(pkg.dependencies ?? {}).length + Object.keys(pkg.devDependencies ?? {}).length;
    if (deps > 0 && !has("node_modules")) {
      const argv =
        pm === "pnpm"
          ? ["pnpm", "install", "--frozen-lockfile"]
          : pm === "yarn"
            ? ["yarn", "install", "--frozen-lockfile"]
            : has("package-lock.json")
              ? ["npm", "ci", "--no-audit", "--no-fund"]
              : ["npm", "install", "--no-audit", "--no-fund", "--no-save"];
      install.push({ stage: "install", label: argv.join(" "), argv, requires: pm });
    }
    const scripts = pkg.scripts ?? {};
    const script = scripts.typecheck !== undefined ? "typecheck" : scripts.build !== undefined ? "build" : undefined;
    if (script) check.push({ stage: "check", label: `${pm} run ${script}`, argv: [pm, "run", script], requires: pm });
    if (scripts.test !== undefined && !NPM_PLACEHOLDER.test(scripts.test))
      test.push({ stage: "test", label: `${pm} test`, argv: [pm, "test"], requires: pm });
  }
  if (has("go.mod")) {
    check.push({ stage: "check", label: "go build ./...", argv: ["go", "build", "./..."], requires: "go" });
    test.push({ stage: "test", label: "go test ./...", argv: ["go", "test", "./..."], requires: "go" });
  }
  if (has("Cargo.toml")) {
    check.push({
      stage: "check",
      label: "cargo check --quiet",
      argv: ["cargo", "check", "--quiet"],
      requires: "cargo",
    });
    test.push({ stage: "test", label: "cargo test --quiet", argv: ["cargo", "test", "--quiet"], requires: "cargo" });
  }
  const python = has("pyproject.toml") || has("setup.py") || has("requirements.txt");
  if (python)
    check.push({
      stage: "check",
      label: "python3 -m compileall -q .",
      argv: ["python3", "-m", "compileall", "-q", "."],
      requires: "python3",
    });
  const pytest =
    has("pytest.ini") ||
    has("conftest.py") ||
    /\[tool\.pytest/.test(facts.files["pyproject.toml"] ?? "") ||
    /pytest/.test(facts.files["pyproject.toml"] ?? "") ||
    /\[tool:pytest\]/.test(facts.files["setup.cfg"] ?? "") ||
    /\[pytest\]/.test(facts.files["tox.ini"] ?? "");
  if (pytest)
    test.push({
      stage: "test",
      label: "python3 -m pytest -q",
      argv: ["python3", "-m", "pytest", "-q"],
      requires: "python3",
    });
  if (test.length === 0 && /^test\s*:/m.test(facts.files.Makefile ?? ""))
    test.push({ stage: "test", label: "make test", argv: ["make", "test"], requires: "make" });

  const cfg = parseJson(RepoValidationConfig, facts.files[".patchbay.json"])?.validation;
  return [
    ...(cfg?.install ? fromConfig("install", cfg.install) : install),
    ...(cfg?.check ? fromConfig("check", cfg.check) : check),
    ...(cfg?.test ? fromConfig("test", cfg.test) : test),
  ];
}
