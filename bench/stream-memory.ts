/**
 * Stalled SSE readers (issue 12, finding 4): a run whose agent said 50 MB of text (300 steps
 * of 100 KB, then a 20 MB answer), and 20 clients that request its stream and never read.
 * Reports the server's RSS with them connected against its RSS before they came (same run),
 * and what the text left in the run and turn records and in the largest event. The server is
 * `bench/stream-memory-server.ts` in its own process; the clients are raw sockets here.
 */
import Database from "better-sqlite3";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { row, type BenchModule } from "./harness.ts";
import { startServerProcess } from "./server-process.ts";

const CLIENTS = 20;
const API = "/api/v1/coding-agent";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const streamMemory: BenchModule = {
  name: "stream-memory",
  async run() {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "pb-stream-memory-"));
    const dataDir = path.join(root, "data");
    const server = await startServerProcess({
      env: {},
      script: ["--import", "tsx", "bench/stream-memory-server.ts", dataDir],
    });
    const sockets: net.Socket[] = [];
    try {
      const [url, key] = /listening (\S+) (\S+)/.exec(server.output())!.slice(1) as [string, string];
      const auth = { authorization: `Bearer ${key}` };
      const created = await fetch(`${url}${API}/runs`, {
        method: "POST",
        headers: { ...auth, "content-type": "application/json" },
        body: JSON.stringify({ repository: "acme/talk", prompt: "talk" }),
      });
      const { id } = (await created.json()) as { id: string };
      for (let status = ""; status !== "idle"; await sleep(200)) {
        status = ((await (await fetch(`${url}${API}/runs/${id}`, { headers: auth })).json()) as { status: string })
          .status;
        if (status === "failed") throw new Error("the bench run failed");
      }
      const records = storedRecordBytes(dataDir, id);
      const log = fs.readFileSync(path.join(dataDir, "events", `${id}.jsonl`), "utf8").split("\n");
      const largestEvent = Math.max(...log.map((l) => Buffer.byteLength(l)));
      const logBytes = log.reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);

      await sleep(2000);
      const before = server.rssMb();
      const { port } = new URL(url);
      for (let i = 0; i < CLIENTS; i++) {
        const s = net.connect(Number(port), "127.0.0.1");
        s.on("error", () => undefined);
        s.write(`GET ${API}/runs/${id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n\r\n`);
        sockets.push(s);
      }
      // The server writes what the kernel takes and then waits (or, before the fix, buffers the rest).
      let peak = before;
      for (let i = 0; i < 20; i++, await sleep(500)) peak = Math.max(peak, server.rssMb());
      return {
        name: "stream-memory",
        rows: [
          row(
            `server RSS with ${CLIENTS} clients that never read`,
            before,
            peak,
            "MB",
            `log ${(logBytes / 1e6).toFixed(1)} MB`,
          ),
          row("largest stored event (20 MB answer)", 20 * 1024 * 1024, largestEvent, "B"),
          row("run + turn records after the run", 2 * 20 * 1024 * 1024, records, "B", "baseline: answer on run + turn"),
        ],
      };
    } finally {
      for (const s of sockets) s.destroy();
      await server.stop();
      fs.rmSync(root, { recursive: true, force: true });
    }
  },
};

/** The bytes of a run's record and its turns' in store.db (read beside the server: WAL allows readers). */
function storedRecordBytes(dataDir: string, runId: string): number {
  const db = new Database(path.join(dataDir, "store.db"), { readonly: true });
  try {
    const q = "SELECT coalesce(sum(length(data)), 0) AS n FROM";
    const run = db.prepare(`${q} runs WHERE id = ?`).get(runId) as { n: number };
    const turns = db.prepare(`${q} turns WHERE run_id = ?`).get(runId) as { n: number };
    return run.n + turns.n;
  } finally {
    db.close();
  }
}
