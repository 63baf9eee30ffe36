/**
 * Abuse of the REST front by one client: a flood of run creations from one key, oversized
 * prompts, bodies and headers, and slow clients (headers trickled byte by byte, SSE readers
 * that never read). The server keeps to the key's caps, refuses what is too big before doing
 * any work, leaks no sandbox, and keeps answering everyone else quickly.
 */
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { API, sandboxPids, serveHarness, type HttpHarness } from "../support/http.ts";

const CAP = 3;
let h: HttpHarness;

beforeAll(async () => {
  h = await serveHarness({ env: { PATCHBAY_MAX_ACTIVE_RUNS_PER_KEY: String(CAP) } });
  h.model.script("test/hang", [[{ hang: true }]]);
}, LOADED.hookMs);
afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

/**
 * /healthz answers 200 to `n` sequential calls, none left waiting. How fast it answers under
 * attack is a figure of `npm run bench -- api-load`, not a timed assertion here.
 */
async function assertHealthy(n = 10): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${h.base}/healthz`, { signal: AbortSignal.timeout(LOADED.hookMs) });
    await res.text();
    expect(res.status).toBe(200);
  }
}

describe("abuse", { timeout: LOADED.testMs }, () => {
  it("1,000 POST /runs in 10 s from one key: at most the key's cap is ever active, the rest get 429 with Retry-After, and no sandbox leaks", async () => {
    const statuses = new Map<number, number>();
    const accepted: string[] = [];
    let peakActive = 0;
    let missingRetryAfter = 0;
    const t0 = Date.now();
    try {
      // 10 waves of 100 concurrent requests, one wave per second.
      for (let wave = 0; wave < 10; wave++) {
        const answers = await Promise.all(
          Array.from({ length: 100 }, () =>
            h.api("POST", `${API}/runs`, {
              body: { repository: "acme/web", prompt: "flood", modelId: "test/hang", validationMode: "minimal" },
            }),
          ),
        );
        for (const a of answers) {
          statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
          if (a.status === 201) accepted.push(a.json.id);
          if (a.status === 429 && !/^\d+$/.test(a.headers.get("retry-after") ?? "")) missingRetryAfter++;
        }
        peakActive = Math.max(peakActive, await h.pb.engine.activeRunCount("owner-a"));
        const next = t0 + (wave + 1) * 1000;
        if (Date.now() < next) await new Promise((r) => setTimeout(r, next - Date.now()));
      }
      expect(accepted.length).toBe(CAP);
      expect(statuses.get(201)).toBe(CAP);
      expect(statuses.get(429)).toBe(1000 - CAP);
      expect(missingRetryAfter).toBe(0);
      expect(peakActive).toBeLessThanOrEqual(CAP);

      for (const id of accepted) expect((await h.api("POST", `${API}/runs/${id}/cancel`)).status).toBe(200);
      for (const id of accepted) {
        await waitFor(() => sandboxPids(h.pb.dataDir, id).length === 0, { what: `run ${id}'s processes to stop` });
      }
      expect(await h.pb.engine.activeRunCount("owner-a")).toBe(0);
      // Refused requests never got as far as a run or a sandbox.
      const page = await h.api("GET", `${API}/runs?limit=100`);
      expect(page.json.runs).toHaveLength(CAP);
    } finally {
      // A failed check above must not leave the key at its cap for the tests after it.
      for (const id of accepted) await h.api("POST", `${API}/runs/${id}/cancel`);
    }
  });

  it("refuses an oversized prompt (400), body (413), header (431) and URL before doing any work, and stays healthy", async () => {
    const before = (await h.api("GET", `${API}/runs?limit=100`)).json.runs.length;
    const longPrompt = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "x".repeat(120_001) },
    });
    expect(longPrompt.status).toBe(400);
    expect(longPrompt.json.error.code).toBe("invalid_request");
    expect(longPrompt.json.error.message).toMatch(/prompt/);

    const bigBody = await h.api("POST", `${API}/runs`, {
      // Over the 72 MB the image-carrying routes take (refused by its Content-Length, unread).
      raw: JSON.stringify({ repository: "acme/web", prompt: "y", pad: "z".repeat(73 * 1024 * 1024) }),
      headers: { "content-type": "application/json" },
    });
    expect(bigBody.status).toBe(413);
    expect(bigBody.json.error.code).toBe("payload_too_large");

    const bigHeader = await rawRequest(
      `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ${"h".repeat(64 * 1024)}\r\nConnection: close\r\n\r\n`,
    );
    expect(bigHeader).toMatch(/^HTTP\/1\.1 431/);
    const manyHeaders = await rawRequest(
      `GET /healthz HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 3000 }, (_, i) => `X-H${i}: v\r\n`).join("")}Connection: close\r\n\r\n`,
    );
    expect(manyHeaders).toMatch(/^HTTP\/1\.1 (431|400)/);
    const bigUrl = await h.api("GET", `${API}/runs/${"r".repeat(100_000)}`);
    expect([404, 414, 431]).toContain(bigUrl.status);

    expect((await h.api("GET", `${API}/runs?limit=100`)).json.runs.length).toBe(before);
    await assertHealthy();
  });

  it("slow-loris clients (trickled headers, SSE readers that never read) do not starve other clients", async () => {
    await assertHealthy();
    const { port } = new URL(h.base);
    const sockets: net.Socket[] = [];
    try {
      // 300 connections that send a header byte now and then and never finish the request.
      for (let i = 0; i < 300; i++) {
        const s = net.connect(Number(port), "127.0.0.1");
        s.on("error", () => s.destroy()); // the server may cut them off: that is the point
        s.write("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
        sockets.push(s);
      }
      const trickle = setInterval(() => {
        for (const s of sockets) if (!s.destroyed) s.write("a");
      }, 200);
      // 200 SSE streams on a finished run whose reader never reads (paused sockets).
      const runId = (await h.api("GET", `${API}/runs?limit=1`)).json.runs[0].id as string;
      for (let i = 0; i < 200; i++) {
        const s = net.connect(Number(port), "127.0.0.1");
        s.on("error", () => s.destroy());
        s.write(`GET ${API}/runs/${runId}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${h.keys.rw}\r\n\r\n`);
        s.pause();
        sockets.push(s);
      }
      await new Promise((r) => setTimeout(r, 1500));
      await assertHealthy(20);
      const api = await h.api("GET", `${API}/runs?limit=5`);
      clearInterval(trickle);
      expect(api.status).toBe(200);
    } finally {
      for (const s of sockets) s.destroy();
    }
    await new Promise((r) => setTimeout(r, 200));
    await assertHealthy();
  });
});

/** Send raw bytes and return what the server answers (until it closes or 5 s pass). */
function rawRequest(text: string): Promise<string> {
  const { port } = new URL(h.base);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), "127.0.0.1");
    let out = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve(out);
    }, 5000);
    s.on("data", (d: Buffer) => (out += d.toString()));
    s.on("end", () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.on("error", (e) => {
      clearTimeout(timer);
      // The server may reset a connection it refuses after answering.
      if (out) resolve(out);
      else reject(e);
    });
    s.write(text);
  });
}
