/**
 * The MCP harnesses: the served app with the /mcp mount over `openHarness` (`serveMcp`), a
 * stdio client transport that keeps every raw stdout line (for the cleanliness check), the
 * scripted turns the runs play, and the stream_events loop.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { JSONRPCMessageSchema, type CallToolResult, type JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { RunEvent } from "../../src/engine/events/schema.ts";
import { createMcpMount, type McpMount } from "../../src/http/mcp-mount.ts";
import type { Step } from "../fixtures/scripted-model.ts";
import { LOADED, openHarness, type Harness, type HarnessOptions } from "./harness.ts";
import { serveApp } from "./http.ts";

export interface McpHarness extends Harness {
  mcp: McpMount;
  /** The /mcp endpoint of the served app. */
  url: URL;
  /** A connected SDK client with `key` as its Bearer key; closed with the harness. */
  connect(key: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }>;
}

/** `openHarness` behind the serve app (REST and the /mcp mount) on 127.0.0.1. */
export async function serveMcp(opts: HarnessOptions = {}): Promise<McpHarness> {
  const h = await openHarness(opts);
  const mcp = createMcpMount({ engine: h.pb.engine, log: h.pb.log, host: "127.0.0.1", dataDir: h.pb.dataDir });
  let served: Awaited<ReturnType<typeof serveApp>>;
  try {
    served = await serveApp(h.pb, { mountMcp: mcp.mount });
  } catch (e) {
    await mcp.close();
    await h.close();
    throw e;
  }
  const clients: Client[] = [];
  const url = new URL(`${served.base}/mcp`);
  return {
    ...h,
    mcp,
    url,
    async connect(key) {
      const client = new Client({ name: "patchbay-test", version: "1.0.0" });
      const transport = new StreamableHTTPClientTransport(url, {
        requestInit: { headers: { Authorization: `Bearer ${key}` } },
      });
      await client.connect(transport);
      clients.push(client);
      return { client, transport };
    },
    async close() {
      for (const c of clients) await c.close().catch(() => undefined);
      await mcp.close();
      await served.close();
      await h.close();
    },
  };
}

/** Options for a tool call that waits on a turn: the SDK's 60 s request timeout is too short on a loaded machine. */
export const TURN_CALL = { timeout: LOADED.turnWaitMs } as const;

/**
 * Like the SDK's StdioClientTransport (spawns the server, one JSON-RPC message per line), but
 * records every stdout line as received, so a test can prove nothing else was printed.
 */
export class RecordingStdioTransport implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: () => void;
  onerror?: (error: Error) => void;
  /** Every complete line the server wrote to stdout. */
  readonly stdoutLines: string[] = [];
  stderr = "";
  private child: ChildProcess | undefined;
  private partial = "";
  private exited: Promise<number | null> | undefined;

  constructor(private readonly opts: { command: string; args: string[]; env: NodeJS.ProcessEnv; cwd?: string }) {}

  async start(): Promise<void> {
    const child = spawn(this.opts.command, this.opts.args, {
      env: this.opts.env,
      cwd: this.opts.cwd,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child = child;
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      this.partial += chunk;
      let nl: number;
      while ((nl = this.partial.indexOf("\n")) >= 0) {
        const line = this.partial.slice(0, nl).replace(/\r$/, "");
        this.partial = this.partial.slice(nl + 1);
        this.stdoutLines.push(line);
        this.deliver(line);
      }
    });
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (this.stderr += chunk));
    child.once("exit", () => this.onclose?.());
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
  }

  private deliver(line: string): void {
    let parsed: JSONRPCMessage;
    try {
      parsed = JSONRPCMessageSchema.parse(JSON.parse(line));
    } catch (e) {
      // Not a frame: the cleanliness test reports it; the client only hears about it.
      this.onerror?.(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    this.onmessage?.(parsed);
  }

  async send(message: JSONRPCMessage): Promise<void> {
    this.child!.stdin!.write(JSON.stringify(message) + "\n");
  }

  /** Close stdin (the server's cue to shut down) and wait for the process to exit. */
  async close(): Promise<void> {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.stdin!.end();
    const timeout = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 20_000).unref());
    if ((await Promise.race([this.exited, timeout])) === "timeout") {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }

  /** Exit code once the process ended. */
  exitCode(): Promise<number | null> {
    return this.exited ?? Promise.resolve(null);
  }
}

/**
 * The model id the main MCP run uses, and its turns: write+edit, then a guide, then more
 * docs, then a slow turn (for a client that stops waiting half-way).
 */
export const MAIN_MODEL = "test/mcp-main";
export const MAIN_SCRIPT: Step[][] = [
  [
    { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "first line\nsecond line\n" } }] },
    {
      toolCalls: [
        {
          name: "edit",
          args: { filePath: "src/app.js", oldString: "return 'hello';", newString: "return 'hello, world';" },
        },
      ],
    },
    { text: "Added NOTES.md and changed the greeting." },
  ],
  [
    { toolCalls: [{ name: "write", args: { filePath: "docs/guide.md", content: "guide\n" } }] },
    { text: "Added a guide." },
  ],
  [
    { toolCalls: [{ name: "write", args: { filePath: "docs/more.md", content: "more\n" } }] },
    { text: "Added more docs." },
  ],
  [
    { toolCalls: [{ name: "write", args: { filePath: "slow.txt", content: "slow\n" } }] },
    { text: "Slow turn done.", delayMs: 1500 },
  ],
];

export const REPO_FILES = {
  "README.md": "# Web\n\nHello.\n",
  "src/app.js": "export function greet() {\n  return 'hello';\n}\n",
};

/** The engine error code an isError tool result carries (in `_meta`), checked against its text. */
export function errorCodeOf(result: CallToolResult): string | undefined {
  if (!result.isError) return undefined;
  const meta = result._meta?.["patchbay/error"] as { code?: string } | undefined;
  const text = result.content[0]?.type === "text" ? result.content[0].text : "";
  if (meta?.code && !text.startsWith(`Error ${meta.code}:`))
    throw new Error(`error text does not carry the code: ${text}`);
  return meta?.code;
}

export interface StreamPage {
  events: RunEvent[];
  nextCursor: number;
  status: string;
  done: boolean;
}

/** Follow a run with stream_events from `after` until `done`, as an assistant would. */
export async function followEvents(
  client: Client,
  runId: string,
  opts: { after?: number; limit?: number; maxCalls?: number } = {},
): Promise<{ events: RunEvent[]; pages: StreamPage[] }> {
  const events: RunEvent[] = [];
  const pages: StreamPage[] = [];
  let cursor = opts.after ?? 0;
  for (let i = 0; i < (opts.maxCalls ?? 200); i++) {
    const result = (await client.callTool({
      name: "stream_events",
      arguments: { runId, after: cursor, waitMs: 5000, limit: opts.limit ?? 100 },
    })) as CallToolResult;
    if (result.isError) throw new Error(`stream_events failed: ${JSON.stringify(result.content)}`);
    const page = result.structuredContent as unknown as StreamPage;
    pages.push(page);
    events.push(...page.events);
    cursor = page.nextCursor;
    if (page.done) return { events, pages };
  }
  throw new Error("stream_events never said done");
}
