/** MCP session records: private files a new process reads back, idle expiry, pending calls, bad ids. */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../src/engine/index.ts";
import { createSessionRecords, type SessionRecord } from "../../src/mcp/session-records.ts";
import { tempDir } from "../helpers.ts";

const log = createLogger({ level: "error" });
const ID = "3f1c2b9e-8a7d-4c6b-9e5f-1a2b3c4d5e6f";

const record = (id: string, lastSeenAt = new Date().toISOString()): SessionRecord => ({
  id,
  keyId: "key_1",
  protocolVersion: "2025-11-25",
  clientInfo: { name: "c", version: "1" },
  capabilities: {},
  createdAt: lastSeenAt,
  lastSeenAt,
  calls: [],
});

describe("MCP session records", () => {
  it("are 0600 files a new process reads back, with their pending calls", async () => {
    const dir = tempDir("mcp-sessions");
    const first = createSessionRecords({ dir, idleMs: 60_000, log });
    await first.put(record(ID));
    await first.update(ID, (r) => r.calls.push({ requestId: 3, streamId: "s", tool: "start_run" }));
    await first.update(ID, (r) => (r.calls[0]!.runId = "run_1"));
    expect(fs.statSync(path.join(dir, `${ID}.json`)).mode & 0o777).toBe(0o600);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);

    const second = createSessionRecords({ dir, idleMs: 60_000, log });
    expect(await second.get(ID)).toMatchObject({
      keyId: "key_1",
      protocolVersion: "2025-11-25",
      calls: [{ requestId: 3, streamId: "s", tool: "start_run", runId: "run_1" }],
    });
    await second.delete(ID);
    expect(await createSessionRecords({ dir, idleMs: 60_000, log }).get(ID)).toBeUndefined();
  });

  it("a session idle past the limit is gone; one with a call to answer is kept a day", async () => {
    const dir = tempDir("mcp-sessions");
    const old = new Date(Date.now() - 3_600_000).toISOString();
    const waiting = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    const records = createSessionRecords({ dir, idleMs: 60_000, log });
    await records.put(record(ID, old));
    await records.put({ ...record(waiting, old), calls: [{ requestId: 1, streamId: "s", tool: "send_message" }] });
    const abandoned = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff";
    const twoDaysAgo = new Date(Date.now() - 48 * 3_600_000).toISOString();
    await records.put({
      ...record(abandoned, twoDaysAgo),
      calls: [{ requestId: 2, streamId: "s", tool: "start_run" }],
    });
    fs.writeFileSync(path.join(dir, ".x.json.abc.tmp"), "{");
    const next = createSessionRecords({ dir, idleMs: 60_000, log });
    expect(fs.readdirSync(dir)).toEqual([`${waiting}.json`]);
    expect(await next.get(ID)).toBeUndefined();
    expect(await next.get(waiting)).toMatchObject({ id: waiting });
  });

  it("an id that is not a session id names no file", async () => {
    const dir = tempDir("mcp-sessions");
    const records = createSessionRecords({ dir, idleMs: 60_000, log });
    for (const bad of ["../../etc/passwd", "", ID.toUpperCase(), `${ID}/x`])
      expect(await records.get(bad)).toBeUndefined();
  });
});
