/**
 * The typed client (patchbay/client) against the real server, the real OpenCode and the
 * scripted model: a round trip through openapi-fetch, and follow() cut off mid-run by a
 * dropped connection, resuming with Last-Event-ID without losing or repeating an event.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPatchbayClient, PatchbayApiError, type RunEvent } from "patchbay/client";
import { startCutProxy } from "../support/cut-proxy.ts";
import { LOADED } from "../support/harness.ts";
import { API, serveHarness, type HttpHarness } from "../support/http.ts";

const MODEL = "test/client-resume";
let h: HttpHarness;

beforeAll(async () => {
  h = await serveHarness();
  h.model.script(MODEL, [
    [
      { toolCalls: [{ name: "write", args: { filePath: "one.txt", content: "one\n" } }] },
      // Slow enough that the turn is still going when the test cuts the connection.
      { toolCalls: [{ name: "write", args: { filePath: "two.txt", content: "two\n" } }], delayMs: 1500 },
      { text: "Both written.", delayMs: 500 },
    ],
    [{ toolCalls: [{ name: "write", args: { filePath: "three.txt", content: "three\n" } }] }, { text: "Third." }],
  ]);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("the typed client", { timeout: LOADED.testMs }, () => {
  it("follow() resumes after a cut connection with every event once, in order; waitForTurn waits a follow-up", async () => {
    const url = new URL(h.base);
    const proxy = await startCutProxy({ host: url.hostname, port: Number(url.port) });
    try {
      const client = createPatchbayClient({ baseUrl: proxy.base, apiKey: h.keys.rw });
      const run = await client.startRun({ repository: "acme/web", prompt: "Write two files", modelId: MODEL });
      expect(run.status).toMatch(/queued|running/);

      const seen: RunEvent[] = [];
      const reconnects: number[] = [];
      let cut = false;
      for await (const ev of client.follow(run.id, {
        onReconnect: ({ lastEventId }) => reconnects.push(lastEventId),
      })) {
        seen.push(ev);
        // Drop the connection once the first file is written, with the second still to come.
        if (!cut && ev.type === "builder.event" && ev.data.kind === "file.edited") {
          cut = true;
          proxy.cut();
        }
        if (ev.type === "run.status" && ev.data.status === "idle") break;
      }
      expect(cut).toBe(true);
      expect(proxy.resumes()).toBeGreaterThanOrEqual(1);
      expect(reconnects.length).toBeGreaterThanOrEqual(1);

      // Exactly the stored log up to the idle status: nothing lost, nothing twice.
      const full = await h.api("GET", `${API}/runs/${run.id}?events=1`);
      const ids = seen.map((e) => e.id);
      expect(ids).toEqual(full.json.events.slice(0, ids.length).map((e: { id: number }) => e.id));
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids[0]).toBe(1);
      expect(
        seen.some((e) => e.type === "builder.event" && e.data.kind === "file.edited" && e.data.path === "two.txt"),
      ).toBe(true);

      const first = await client.getRun(run.id, { patch: true });
      expect(first).toMatchObject({ status: "idle", summary: "Both written." });
      expect(first.patch).toContain("two.txt");

      const sent = await client.sendMessage(run.id, { prompt: "Write three.txt" });
      expect(sent.status).toBe(202);
      const second = await client.waitForTurn(run.id);
      expect(second).toMatchObject({ status: "idle", summary: "Third.", turnCount: 2 });
      expect(second.patch).toContain("three.txt");

      const listed = await client.listRuns({ limit: 5 });
      expect(listed.runs.map((r) => r.id)).toContain(run.id);
      expect((await client.endSession(run.id)).status).toBe("completed");
      // A finished run: follow replays its log and ends after the terminal status.
      const replayed: RunEvent[] = [];
      for await (const ev of client.follow(run.id)) replayed.push(ev);
      expect(replayed.at(-1)).toMatchObject({ type: "run.status", data: { status: "completed" } });
    } finally {
      await proxy.close();
    }
  });

  it("throws PatchbayApiError with the server's code", async () => {
    const client = createPatchbayClient({ baseUrl: h.base, apiKey: h.keys.rw });
    const err = await client.getRun("run_missing").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PatchbayApiError);
    expect(err).toMatchObject({ status: 404, code: "run_not_found" });
    const refused = createPatchbayClient({ baseUrl: h.base, apiKey: "pb_wrong" });
    const follow = refused.follow("run_missing");
    await expect(follow.next()).rejects.toMatchObject({ status: 401 });
  });
});
