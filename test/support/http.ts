/**
 * A real Patchbay behind the real express app on 127.0.0.1, with a scripted model and a local
 * git repository, plus a small client that records every answer (the canary test scans them).
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import fs from "node:fs";
import path from "node:path";
import type { Config } from "../../src/config.ts";
import { createHttpApp, type HttpAppDeps } from "../../src/http/app.ts";
import { startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.ts";
import { makeRepo, processesUnder, tempDir } from "../helpers.ts";
import { startGitHubApiStub } from "../fixtures/github-api-stub.ts";
import { openTestPatchbay, type TestPatchbay } from "./patchbay.ts";

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

export interface HttpHarness {
  pb: TestPatchbay;
  model: ScriptedModel;
  base: string;
  keys: Keys;
  /** Every response body received through `api` and `sse`, for leak scans. */
  transcript: string[];
  api(
    method: string,
    p: string,
    opts?: { key?: string | null; body?: unknown; raw?: string; headers?: Record<string, string> },
  ): Promise<Answer>;
  /** Open an SSE stream and collect frames until `until` says stop or the server closes it. */
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
  close(): Promise<void>;
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

async function listen(app: http.RequestListener, servers: http.Server[]): Promise<string> {
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

export async function startHarness(
  opts: { env?: Record<string, string>; overrides?: Partial<Config>; deps?: Partial<HttpAppDeps> } = {},
): Promise<HttpHarness> {
  const model = await startScriptedModel();
  const repoBase = tempDir("repos");
  makeRepo(repoBase, "acme/web", {
    "README.md": "# Web\n\nHello.\n",
    "src/app.js": "export function greet() {\n  return 'hello';\n}\n",
    "package.json":
      JSON.stringify({ name: "web", version: "1.0.0", scripts: { test: "node test.js" } }, null, 2) + "\n",
    "test.js": "require('node:fs');\nconsole.log('tests ok');\n",
  });
  // GitHub stand-in, so `publish: draft_pr` (refused without GitHub credentials) works end to end.
  const github = await startGitHubApiStub({
    repositories: [{ id: 1, fullName: "acme/web" }],
    tokens: ["ghp_http_test_token"],
    gitRoot: repoBase,
  });
  const pb = await openTestPatchbay(
    {
      PATCHBAY_GIT_BASE_URL: `file://${repoBase}`,
      PATCHBAY_GITHUB_API_URL: github.baseUrl,
      GITHUB_TOKEN: "ghp_http_test_token",
      PATCHBAY_OPENROUTER_BASE_URL: model.baseUrl,
      OPENROUTER_API_KEY: "sk-managed-test-key-0000",
      PATCHBAY_SESSION_TTL_MS: "120000",
      PATCHBAY_TURN_TIMEOUT_MS: "30000",
      PATCHBAY_WATCHDOG_MS: "2000",
      // Tests poll; the limit itself is tested on an app of its own.
      PATCHBAY_RATE_LIMIT_PER_MIN: "100000",
      ...opts.env,
    },
    opts.overrides,
  );
  const servers: http.Server[] = [];
  const base = await listen(
    createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config: pb.config, ...opts.deps }),
    servers,
  );
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
  const keys: Keys = { admin: adminKey, rw: rw.key, ro, other, revoked: revokedKey.key };
  const transcript: string[] = [];

  const harness: HttpHarness = {
    pb,
    model,
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
      const timer = setTimeout(() => ac.abort(), o.timeoutMs ?? 30_000);
      const headers: Record<string, string> = { authorization: `Bearer ${o.key ?? keys.rw}`, ...o.headers };
      const res = await fetch(base + p, { headers, signal: ac.signal });
      let raw = "";
      let closedByServer = false;
      try {
        if (!res.body) throw new Error("no body");
        const reader = res.body.getReader();
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
      transcript.push(raw);
      return { status: res.status, headers: res.headers, frames: parseSse(raw), raw, closedByServer };
    },
    async extraApp(overrides, deps = {}) {
      const config = Object.freeze({ ...pb.config, ...overrides });
      return listen(createHttpApp({ engine: pb.engine, keys: pb.keys, log: pb.log, config, ...deps }), servers);
    },
    async close() {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
      await pb.close();
      await model.close();
      await github.close();
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
