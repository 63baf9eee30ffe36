/**
 * `patchbay mcp`: MCP over stdio with the engine in-process, for Claude Desktop, Claude
 * Code, Cursor and friends. The local user (`PATCHBAY_LOCAL_OWNER`) owns every run; no key.
 *
 * stdout carries protocol frames and nothing else: the engine logs to stderr, and stray
 * `console.log` calls from any library are sent to stderr as well.
 */
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { Config } from "../config.ts";
import { openPatchbay } from "../engine/index.ts";
import { createMcpServer } from "./server.ts";

/** Serve MCP on stdin/stdout until stdin closes or a signal arrives, then shut the engine down. */
export async function runStdio(config: Config): Promise<void> {
  // A library printing to stdout would corrupt the JSON-RPC stream the client parses.
  console.log = console.error;
  console.info = console.error;
  console.debug = console.error;

  const pb = await openPatchbay(config);
  const { server, dispose, connect } = createMcpServer(pb.engine, { ownerId: config.localOwner, log: pb.log });
  const transport = new StdioServerTransport();

  let stopping: Promise<void> | undefined;
  const stop = (reason: string) =>
    (stopping ??= (async () => {
      pb.log.info("MCP stdio server stopping", { reason });
      dispose();
      await server.close().catch((e: unknown) => pb.log.warn("MCP server did not close cleanly", { error: e }));
      // Runs keep their state in the store; live sessions end with the process.
      await pb.close();
      process.exit(0);
    })());

  // The client closing our stdin is the normal way an MCP stdio session ends.
  process.stdin.once("end", () => void stop("stdin closed"));
  process.stdin.once("close", () => void stop("stdin closed"));
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));

  await connect(transport);
  pb.log.info("MCP stdio server ready", { owner: config.localOwner, sandbox: config.sandbox, dataDir: config.dataDir });
}
