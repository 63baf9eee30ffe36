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
 * A `.patchbay.json` in the repository overrides any of the three:
 * `{"validation": {"install": [...], "check": [...], "test": [...]}}`, each entry a shell
 * string (run with `sh -c` inside the sandbox) or an argument array.
 */
import * as z from "zod";

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
