/**
 * The served-HTTP harness: a Patchbay with repositories and the scripted model (./harness.ts)
 * behind the real express app on 127.0.0.1, keys for every role, and a small client that
 * records every answer (the canary test scans them).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../../src/config.ts";
import type { Patchbay } from "../../src/engine/index.ts";
import { createHttpApp, createHttpServer, type HttpAppDeps } from "../../src/http/app.ts";
import { processesUnder } from "../helpers.ts";
import { LOADED, openHarness, type Harness, type HarnessOptions } from "./harness.ts";
import { pollUntilTurnOver, type HttpAnswer, type PollOptions } from "./poll.ts";

export const API = "/api/v1/coding-agent";

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // Tests read arbitrary fields of answers; typing each would restate the response schemas.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  json: any;
}

export interface Keys {
  admin: string;
  rw: string;
  ro: string;
  /** Same scopes as rw, another owner. */
  other: string;
  revoked: string;
}

export interface HttpHarness extends Harness {
  base: string;
  keys: Keys;
  /** Every response body received through `api` and `sse`, for leak scans. */
  transcript: string[];
  api(
    method: string,
    p: string,
    opts?: { key?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> },
  ): Promise<Answer>;
  /**
   * Open an SSE stream and collect frames until `until` says stop or the server closes it;
   * throws if neither happens within `timeoutMs` (default: a turn on a loaded machine).
   */
  sse(
    p: string,
    opts?: {
      key?: string;
      headers?: Record<string, string>;
      until?: (frames: SseFrame[]) => boolean;
      timeoutMs?: number;
    },
  ): Promise<{ status: number; headers: Headers; frames: SseFrame[]; raw: string; closedByServer: boolean }>;
  /** Start another app over the same engine (other limits, heartbeat). */
  extraApp(overrides: Partial<Config>, deps?: Partial<HttpAppDeps>): Promise<string>;
  /**
   * Poll `GET /runs/{id}` (plus `query`, e.g. `?patch=1`) as a client would, until the turn is
   * over; returns the run as that answer gave it.
   */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  turnOver(id: string, opts?: { key?: string; query?: string } & Partial<PollOptions>): Promise<any>;
}

export interface SseFrame {
  id?: string;
  event?: string;
  data?: string;
  comment?: string;
  retry?: string;
}

export function parseSse(raw: string): SseFrame[] {
  const frames: SseFrame[] = [];
  for (const block of raw.split("\n\n")) {
    if (!block.trim()) continue;
    const f: SseFrame = {};
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) f.comment = line.slice(1).trim();
      else {
        const i = line.indexOf(":");
        const field = line.slice(0, i);
        const value = line.slice(i + 1).replace(/^ /, "");
        if (field === "id" || field === "event" || field === "data" || field === "retry") f[field] = value;
      }
    }
    frames.push(f);
  }
  return frames;
}

/** A server on 127.0.0.1:0 for `app`; `close` ends its open connections too. */
export async function listen(app: http.RequestListener): Promise<{ base: string; close(): Promise<void> }> {
  const server = createHttpServer(app);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** The real app over a Patchbay's engine (its config unless `config` is given), served on 127.0.0.1. */
export function serveApp(
  pb: Patchbay,
  deps: Partial<HttpAppDeps> = {},
  config: Config = pb.config,
): Promise<{ base: string; close(): Promise<void> }> {
  return listen(createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config, ...deps }));
}

/** A key for every role the tests play: admin, read-write and read-only of owner-a, another owner, a revoked one. */
async function makeKeys(pb: Patchbay): Promise<Keys> {
  const mk = async (name: string, scopes: ("read:builder" | "write:builder" | "admin")[], ownerId?: string) =>
    (await pb.keys.create({ name, scopes, ...(ownerId ? { ownerId } : {}) })).key;
  const adminKey = await mk("admin", ["admin"]);
  const rw = await pb.keys.create({ name: "rw", scopes: ["read:builder", "write:builder"], ownerId: "owner-a" });
  const ro = await mk("ro", ["read:builder"], "owner-a");
  const other = await mk("other", ["read:builder", "write:builder"], "owner-b");
  const revokedKey = await pb.keys.create({
    name: "revoked",
    scopes: ["read:builder", "write:builder", "admin"],
    ownerId: "owner-a",
  });
  await pb.keys.revoke(revokedKey.record.id);
  return { admin: adminKey, rw: rw.key, ro, other, revoked: revokedKey.key };
}

/**
 * The served harness: `openHarness` (default repository `acme/web`, with the GitHub stand-in
 * so `publish: draft_pr` works end to end) behind the real app, and keys for every role.
 */
export async function serveHarness(opts: HarnessOptions & { deps?: Partial<HttpAppDeps> } = {}): Promise<HttpHarness> {
  const h = await openHarness({
    github: { repositories: [{ id: 1, fullName: "acme/web" }], tokens: ["ghp_http_test_token"] },
    ...opts,
    env: {
      GITHUB_TOKEN: "ghp_http_test_token",
      OPENROUTER_API_KEY: "sk-managed-test-key-0000",
      // Tests poll; the limit itself is tested on an app of its own.
      PATCHBAY_RATE_LIMIT_PER_MIN: "100000",
      ...opts.env,
    },
  });
  const { pb } = h;
  const servers: { close(): Promise<void> }[] = [];
  const served = async (config: Config, deps: Partial<HttpAppDeps>) => {
    const s = await serveApp(pb, deps, config);
    servers.push(s);
    return s.base;
  };
  let base: string;
  let keys: Keys;
  try {
    base = await served(pb.config, opts.deps ?? {});
    keys = await makeKeys(pb);
  } catch (e) {
    for (const s of servers) await s.close();
    await h.close();
    throw e;
  }
  const transcript: string[] = [];

  const harness: HttpHarness = {
    ...h,
    base,
    keys,
    transcript,
    async api(method, p, o = {}) {
      const headers: Record<string, string> = { ...o.headers };
      const key = o.key === undefined ? keys.rw : o.key;
      if (key !== null) headers.authorization = `Bearer ${key}`;
      let body: string | undefined;
      if (o.raw !== undefined) body = o.raw;
      else if (o.body !== undefined) {
        body = JSON.stringify(o.body);
        headers["content-type"] ??= "application/json";
      }
      const res = await fetch(p.startsWith("http") ? p : base + p, {
        method,
        headers,
        ...(body !== undefined ? { body } : {}),
      });
      const text = await res.text();
      transcript.push(text);
      let json: unknown;
      try {
        json = text ? JSON.parse(text) : undefined;
      } catch {
        json = undefined;
      }
      return { status: res.status, headers: res.headers, text, json };
    },
    async sse(p, o = {}) {
      const ac = new AbortController();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
      }, o.timeoutMs ?? LOADED.turnWaitMs);
      const headers: Record<string, string> = { authorization: `Bearer ${o.key ?? keys.rw}`, ...o.headers };
      const res = await fetch(base + p, { headers, signal: ac.signal });
      let raw = "";
      let closedByServer = false;
      try {
        // 204: the stream has nothing more to say (a finished run resumed at its end).
        if (res.status === 204) closedByServer = true;
        else if (!res.body) throw new Error("no body");
        const reader = res.body?.getReader();
        if (!reader) return { status: res.status, headers: res.headers, frames: [], raw, closedByServer };
        const dec = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) {
            closedByServer = true;
            break;
          }
          raw += dec.decode(value, { stream: true });
          if (o.until?.(parseSse(raw))) {
            ac.abort();
            break;
          }
        }
      } catch (e) {
        if (!ac.signal.aborted) throw e;
      } finally {
        clearTimeout(timer);
      }
      // Frames cut off by the deadline are not what the test waited for: say so, do not return them.
      if (timedOut) throw new Error(`SSE ${p}: neither \`until\` nor the server ended the stream in time`);
      transcript.push(raw);
      return { status: res.status, headers: res.headers, frames: parseSse(raw), raw, closedByServer };
    },
    async extraApp(overrides, deps = {}) {
      return served(Object.freeze({ ...pb.config, ...overrides }), deps);
    },
    turnOver(id, o = {}) {
      const { key, query = "", ...poll } = o;
      return pollUntilTurnOver(() => harness.api("GET", `${API}/runs/${id}${query}`, key ? { key } : {}), {
        timeoutMs: LOADED.turnWaitMs,
        what: `run ${id}'s turn to end`,
        ...poll,
      });
    },
    async close() {
      for (const s of servers) await s.close();
      await h.close();
    },
  };
  return harness;
}

/** Every file under a directory, recursively (symlinks not followed). */
export function walkFiles(dir: string): string[] {
  const out: string[] = [];
  if (!fs.existsSync(dir)) return out;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...walkFiles(p));
    else if (entry.isFile()) out.push(p);
  }
  return out;
}

/** PIDs of every process working inside a run's sandbox. */
export const sandboxPids = (dataDir: string, runId: string) => processesUnder(path.join(dataDir, "sandboxes", runId));

/** A JSON request to a served Patchbay with a bearer key, as a client makes it; the answer's text kept. */
export async function callApi(
  origin: string | URL,
  key: string,
  method: string,
  p: string,
  body?: unknown,
): Promise<HttpAnswer & { text: string }> {
  const res = await fetch(new URL(p, origin), {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: text ? JSON.parse(text) : undefined };
}
