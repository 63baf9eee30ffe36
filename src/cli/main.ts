/**
 * The `patchbay` command line: `serve`, `mcp`, `keys`, `owners`, `run` (in-process, or against
 * a server), `runs`, `doctor`. The only place that reads argv, binds ports or stdio, and calls
 * process.exit; each command lives in a file of its own beside this one.
 */
import { ConfigError, loadConfig } from "../config.ts";
import { isEngineError } from "../engine/index.ts";
import { keys, owners } from "./admin.ts";
import { EXIT, UsageError } from "./errors.ts";
import { runLocal } from "./local-run.ts";
import { describeApiError, runRemote, wantsRemote } from "./remote.ts";
import { runsCommand } from "./runs.ts";
import { serve } from "./serve.ts";

const USAGE = `Usage: patchbay <command> [options]

Commands:
  serve                                  REST API, /mcp, /metrics and health routes on PATCHBAY_HOST:PORT
  mcp                                    MCP over stdio (engine in-process)
  doctor [--json] [--skip-smoke]         check this set-up: each check ✓ or ✗ with its fix; exit 0 when all pass
  keys create --name NAME [--scopes read:builder,write:builder] [--owner NAME] [--repos owner/*,org/name]
                                         create an API key; prints the key alone on stdout
                                         (--owner: the user it acts as, default PATCHBAY_LOCAL_OWNER;
                                         keys of one owner see the same runs)
                                         (--repos: the only repositories it may start runs on)
  keys list                              list keys (never the keys themselves)
  keys revoke ID                         revoke a key
  owners limits OWNER [--daily-cost-usd USD|none]
                                         show an owner's daily cost cap and today's spend;
                                         with --daily-cost-usd, set it (none: remove it)
  run --repo owner/name --prompt TEXT [--model ID] [--ref REF] [--plan]
                                         run one turn in-process; prints summary and patch
  run --server URL --key KEY --repo owner/name --prompt TEXT [--model ID] [--ref REF] [--plan]
      [--validation minimal|basic|tests] [--draft-pr [--branch NAME]] [--keep] [--json]
                                         run one turn on a server (or PATCHBAY_SERVER, PATCHBAY_API_KEY),
                                         with live progress on stderr; --keep leaves the session warm
  runs list [--limit N]                  the server's runs, newest first
  runs show ID | patch ID | follow ID    a run; its patch; its current turn, followed to its end
  runs message ID --prompt TEXT [--wait] a follow-up (--wait: follow it and print the result)
  runs end ID | cancel ID                end a warm session; cancel a running turn
                                         (runs take --server, --key, --json like run)

Exit codes: 0 done (idle or completed, with a patch), 1 failed, 2 usage, 3 no changes.
Configuration comes from environment variables (see README).`;

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve":
        return await serve(loadConfig());
      case "mcp": {
        const { runStdio } = await import("../mcp/stdio.ts");
        return await runStdio(loadConfig());
      }
      case "keys":
        return await keys(loadConfig(), rest);
      case "owners":
        return await owners(loadConfig(), rest);
      case "run": {
        const config = loadConfig();
        if (wantsRemote(config, rest)) process.exitCode = await runRemote(config, rest);
        else process.exitCode = await runLocal(config, rest);
        return;
      }
      case "runs":
        process.exitCode = await runsCommand(loadConfig(), rest);
        return;
      case "doctor": {
        const { doctorCommand } = await import("./doctor.ts");
        process.exitCode = await doctorCommand(loadConfig(), rest);
        return;
      }
      case undefined:
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(USAGE + "\n");
        return;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof ConfigError) fail(`patchbay: ${e.message}`, EXIT.usage);
    if (e instanceof UsageError) fail(`patchbay: ${e.message}\n\n${USAGE}`, EXIT.usage);
    if (isEngineError(e)) fail(`patchbay: ${e.message} (${e.code})`, EXIT.failed);
    if (e instanceof Error && "code" in e && typeof e.code === "string" && e.code.startsWith("ERR_PARSE_ARGS"))
      fail(`patchbay: ${e.message}`, EXIT.usage);
    const api = describeApiError(e);
    if (api) fail(`patchbay: ${api}`, EXIT.failed);
    throw e;
  }
}

function fail(message: string, code: number): never {
  process.stderr.write(message + "\n");
  process.exit(code);
}
