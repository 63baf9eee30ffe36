/**
 * MCP sessions as files, so a session outlives the process that opened it: what `initialize`
 * settled (protocol version, client info and capabilities), the key that opened it, when it
 * was last used, and the tool calls that wait on a turn (`start_run` / `send_message` with
 * `wait`) not yet answered. A new process serves a known session id by replaying its
 * `initialize` to a fresh transport (`http.ts`), and answers those calls (`resume.ts`).
 *
 * One file per session, `<dir>/<session id>.json`, written whole (temp file, fsync, rename,
 * 0600); writes of one session go one at a time, in order. A session unused for the idle
 * period is gone, as it is in the process: its file is deleted when next looked up, and at
 * start; one with a call to answer is kept a day, for its client to come back for the answer.
 */
import fs from "node:fs";
import path from "node:path";
import type { RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { Logger, SharedDocuments } from "../engine/index.ts";
import { readIfExists, writePrivateFile } from "../engine/store/private-file.ts";

/** A tool call that waits on a turn, until its answer is written. */
export interface PendingCall {
  requestId: RequestId;
  /** The SSE stream its answer goes on. */
  streamId: string;
  tool: string;
  /** The run it waits on, once the tool knows it. */
  runId?: string;
}

export interface SessionRecord {
  id: string;
  keyId: string;
  protocolVersion: string;
  clientInfo: { name: string; version: string; [k: string]: unknown };
  capabilities: Record<string, unknown>;
  createdAt: string;
  lastSeenAt: string;
  calls: PendingCall[];
}

export interface SessionRecords {
  /** The session's record, unless unknown, unreadable or idle past the limit (then deleted). */
  get(id: string): Promise<SessionRecord | undefined>;
  put(record: SessionRecord): Promise<void>;
  /** Change a known session's record; nothing when it is not known (ended meanwhile). */
  update(id: string, change: (r: SessionRecord) => void): Promise<void>;
  /** Note a request now, written at most once a minute. */
  touch(id: string): Promise<void>;
  delete(id: string): Promise<void>;
}

const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TOUCH_EVERY_MS = 60_000;
/** How long a session with a call to answer is kept without a request: a day. */
const PENDING_KEPT_MS = 24 * 60 * 60_000;

export function createSessionRecords(opts: { dir: string; idleMs: number; log: Logger }): SessionRecords {
  const { dir, idleMs, log } = opts;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cache = new Map<string, SessionRecord>();
  const queues = new Map<string, Promise<void>>();
  const file = (id: string) => path.join(dir, `${id}.json`);
  // A session with a call still to answer is not idle while its client may still come back for it.
  const expired = (r: SessionRecord) =>
    Date.parse(r.lastSeenAt) + (r.calls.length > 0 ? Math.max(idleMs, PENDING_KEPT_MS) : idleMs) < Date.now();

  /** Run `op` after every earlier write of the session. */
  const serial = (id: string, op: () => Promise<void>): Promise<void> => {
    const next = (queues.get(id) ?? Promise.resolve()).then(op);
    const settled = next.catch(() => undefined);
    queues.set(id, settled);
    void settled.then(() => queues.get(id) === settled && queues.delete(id));
    return next;
  };
  const write = (r: SessionRecord) => serial(r.id, () => writePrivateFile(file(r.id), JSON.stringify(r)));
  const remove = (id: string) => {
    cache.delete(id);
    return serial(id, () => fs.promises.rm(file(id), { force: true }));
  };

  // What a previous process left: sessions idle past the limit end now.
  for (const name of fs.readdirSync(dir)) {
    const p = path.join(dir, name);
    if (!name.endsWith(".json") || !SESSION_ID.test(name.slice(0, -5))) {
      // A temp file a kill left behind.
      if (name.endsWith(".tmp")) fs.rmSync(p, { force: true });
      continue;
    }
    try {
      if (expired(JSON.parse(fs.readFileSync(p, "utf8")) as SessionRecord)) fs.rmSync(p, { force: true });
    } catch (e) {
      log.warn("an MCP session file is unreadable; the session is gone", { file: name, error: e });
      fs.rmSync(p, { force: true });
    }
  }

  return {
    async get(id) {
      if (!SESSION_ID.test(id)) return undefined;
      let r = cache.get(id);
      if (!r) {
        // A write or delete of the session still under way lands first (DELETE, then a request).
        await queues.get(id);
        r = cache.get(id);
      }
      if (!r) {
        const text = await readIfExists(file(id));
        if (text === undefined) return undefined;
        try {
          r = JSON.parse(text) as SessionRecord;
        } catch (e) {
          log.warn("an MCP session file is unreadable; the session is gone", { sessionId: id.slice(0, 8), error: e });
          await remove(id);
          return undefined;
        }
        cache.set(id, r);
      }
      if (!expired(r)) return r;
      await remove(id);
      return undefined;
    },
    async put(r) {
      cache.set(r.id, r);
      await write(r);
    },
    async update(id, change) {
      const r = cache.get(id) ?? (await this.get(id));
      if (!r) return;
      change(r);
      await write(r);
    },
    async touch(id) {
      const r = cache.get(id);
      if (!r) return;
      const now = Date.now();
      if (now - Date.parse(r.lastSeenAt) < TOUCH_EVERY_MS) return;
      r.lastSeenAt = new Date(now).toISOString();
      await write(r);
    },
    delete: remove,
  };
}

/**
 * Session records shared by replicas (PATCHBAY_DATABASE_URL): the same records in the database,
 * read each time (another replica may have changed one), so a request may reach any replica.
 */
export function createSharedSessionRecords(opts: { docs: SharedDocuments; idleMs: number }): SessionRecords {
  const { docs, idleMs } = opts;
  const expired = (r: SessionRecord) =>
    Date.parse(r.lastSeenAt) + (r.calls.length > 0 ? Math.max(idleMs, PENDING_KEPT_MS) : idleMs) < Date.now();
  const records: SessionRecords = {
    async get(id) {
      if (!SESSION_ID.test(id)) return undefined;
      const r = (await docs.get(id)) as SessionRecord | undefined;
      if (!r || !expired(r)) return r;
      await docs.delete(id);
      return undefined;
    },
    put: (r) => docs.put(r.id, r),
    async update(id, change) {
      const r = await records.get(id);
      if (!r) return;
      change(r);
      await docs.put(id, r);
    },
    async touch(id) {
      const r = await records.get(id);
      if (!r || Date.now() - Date.parse(r.lastSeenAt) < TOUCH_EVERY_MS) return;
      r.lastSeenAt = new Date().toISOString();
      await docs.put(id, r);
    },
    delete: (id) => docs.delete(id),
  };
  return records;
}
