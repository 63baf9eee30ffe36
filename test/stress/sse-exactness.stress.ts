/**
 * SSE exactness under a reconnect storm: while a long run streams (about 25 agent steps),
 * 20 clients each disconnect at random byte offsets (often mid-frame) and reconnect with
 * `Last-Event-ID` set to the last complete frame they got, 1,000+ times in all. Every client
 * must end up with exactly the run's stored log: no gap, no duplicate, in order.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Step } from "../fixtures/scripted-model.ts";
import { LOADED } from "../support/harness.ts";
import { API, parseSse, serveHarness, type HttpHarness } from "../support/http.ts";

const CLIENTS = 20;
const DISCONNECTS_PER_CLIENT = 55;
const STEPS = 25;
let h: HttpHarness;

beforeAll(async () => {
  h = await serveHarness();
  const steps: Step[] = Array.from({ length: STEPS }, (_, i) => ({
    toolCalls: [{ name: "bash", args: { command: `echo step ${i}`, description: `step ${i}` } }],
    text: `Step ${i}.`,
    delayMs: 250,
  }));
  h.model.script("test/long", [[...steps, { text: "All steps done." }]]);
}, LOADED.hookMs);
afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

interface Client {
  events: { id: number; raw: string }[];
  disconnects: number;
  connections: number;
}

/** One client: connect, read up to a random number of bytes, drop, resume; until the server ends the stream. */
async function storm(runId: string, rand: () => number): Promise<Client> {
  const c: Client = { events: [], disconnects: 0, connections: 0 };
  const deadline = Date.now() + LOADED.turnWaitMs + 60_000;
  for (;;) {
    if (Date.now() > deadline) throw new Error("client did not finish in time");
    const last = c.events.at(-1)?.id;
    const ac = new AbortController();
    const res = await fetch(`${h.base}${API}/runs/${runId}/stream`, {
      headers: {
        authorization: `Bearer ${h.keys.rw}`,
        ...(last !== undefined ? { "last-event-id": String(last) } : {}),
      },
      signal: ac.signal,
    });
    // As an EventSource would: 429 (this key's streams are capped at 20, and a cut connection's
    // slot comes back once the server sees it close) means wait Retry-After and reconnect;
    // 204 means the stream has nothing more to say (the run ended and the client has it all).
    if (res.status === 429) {
      await res.body?.cancel();
      const wait = Number(res.headers.get("retry-after") ?? "1");
      await new Promise((r) => setTimeout(r, Math.max(1, wait) * 1000));
      continue;
    }
    if (res.status === 204) return c;
    c.connections++;
    expect(res.status).toBe(200);
    // Cut somewhere in the next few frames (a frame is a few hundred bytes), or read to the end.
    const budget = c.disconnects < DISCONNECTS_PER_CLIENT ? Math.floor(rand() * 1500) : Infinity;
    let raw = "";
    let bytes = 0;
    let ended = false;
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          ended = true;
          break;
        }
        raw += dec.decode(value, { stream: true });
        bytes += value.byteLength;
        if (bytes >= budget) {
          // Keep only what arrived up to the cut, as a client whose connection dies mid-frame.
          raw = raw.slice(0, raw.length - (bytes - budget));
          ac.abort();
          c.disconnects++;
          break;
        }
      }
    } catch (e) {
      if (!ac.signal.aborted) throw e;
    }
    // Only complete frames count: the text up to the last blank line.
    const complete = raw.slice(0, raw.lastIndexOf("\n\n") + 2);
    for (const f of parseSse(complete)) {
      if (f.id !== undefined) c.events.push({ id: Number(f.id), raw: f.data! });
    }
    if (ended) return c;
  }
}

describe("SSE exactness", { timeout: LOADED.testMs }, () => {
  it("1,000+ random disconnects across a long run: every client's resumed stream is exactly the stored log", async () => {
    const created = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "many steps", modelId: "test/long", validationMode: "minimal" },
    });
    expect(created.status).toBe(201);
    const runId = created.json.id as string;
    // Seeded per client so a failure can be replayed.
    const clients = Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => {
        let seed = 0x9e3779b9 ^ (i * 7919);
        const rand = () => {
          seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
          return seed / 2 ** 32;
        };
        return storm(runId, rand);
      }),
    );
    // End the session once the turn is over, so streams close after the terminal status.
    const turn = await h.turnOver(runId, { what: "the long run to finish its turn" });
    expect(turn.status).toBe("idle");
    expect((await h.api("POST", `${API}/runs/${runId}/messages`, { body: { endSession: true } })).status).toBe(200);
    const results = await clients;

    const log = (await h.api("GET", `${API}/runs/${runId}?events=1`)).json.events as { id: number }[];
    expect(log.length).toBeGreaterThan(100);
    expect(log.map((e) => e.id)).toEqual(log.map((_, i) => i + 1));
    const expected = log.map((e) => JSON.stringify(e));
    let disconnects = 0;
    for (const c of results) {
      disconnects += c.disconnects;
      expect(c.events.map((e) => e.id)).toEqual(log.map((e) => e.id));
      expect(c.events.map((e) => JSON.stringify(JSON.parse(e.raw)))).toEqual(expected);
    }
    expect(disconnects).toBeGreaterThanOrEqual(1000);
  });
});
