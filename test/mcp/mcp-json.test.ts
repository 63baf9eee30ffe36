/** mcp.json stays pasteable: every stdio entry runs `patchbay mcp` with real variable names, every http entry points at /mcp with a Bearer header. */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ENV_VARIABLES } from "../../src/config.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

interface Entry {
  type?: string;
  command?: string;
  args?: string[];
  env?: Record<string, string>;
  url?: string;
  headers?: Record<string, string>;
}

describe("mcp.json", () => {
  const config = JSON.parse(fs.readFileSync(path.join(ROOT, "mcp.json"), "utf8")) as Record<
    string,
    { mcpServers?: Record<string, Entry> }
  >;

  it("has a block for Claude Desktop, Claude Code and Cursor, each with a stdio entry", () => {
    for (const client of ["claudeDesktop", "claudeCode", "cursor"]) {
      const servers = config[client]?.mcpServers;
      expect(servers?.["patchbay"], client).toBeDefined();
    }
  });

  it("stdio entries run `patchbay mcp` without installing anything, with known variables and an absolute data dir", () => {
    const known = ENV_VARIABLES;
    for (const [client, block] of Object.entries(config)) {
      for (const [name, entry] of Object.entries(block.mcpServers ?? {})) {
        if (entry.url) {
          expect(entry.url, `${client}.${name}`).toMatch(/^http:\/\/127\.0\.0\.1:8787\/mcp$/);
          expect(entry.headers?.["Authorization"], `${client}.${name}`).toMatch(/^Bearer \$\{/);
          continue;
        }
        expect(entry.command).toBe("npx");
        expect(entry.args).toContain("--no-install");
        expect(entry.args!.slice(-2)).toEqual(["patchbay", "mcp"]);
        for (const variable of Object.keys(entry.env ?? {}))
          expect(known, `${client}.${name} env ${variable}`).toContain(variable);
        expect(path.isAbsolute(entry.env!["PATCHBAY_DATA_DIR"]!)).toBe(true);
      }
    }
  });
});
