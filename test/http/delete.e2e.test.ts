/**
 * `DELETE /runs/{id}` end to end: real HTTP, the real engine and OpenCode, the scripted model.
 * A finished run goes with everything the store kept for it; a live one is refused.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOADED } from "../support/harness.ts";
import { serveHarness, walkFiles, type HttpHarness } from "../support/http.ts";

const API = "/api/v1/coding-agent";
const CANARY = "canary-7c1d9e2b44";
let h: HttpHarness;

beforeAll(async () => {
  h = await serveHarness();
  h.model.script("test/canary", [
    [
      { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: `${CANARY} in the patch\n` } }] },
      { text: `Wrote the notes (${CANARY} in the summary).` },
    ],
  ]);
  h.model.script("test/plain", [
    [
      { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "plain notes\n" } }] },
      { text: "Wrote plain notes." },
    ],
  ]);
  h.model.script("test/hang", [[{ hang: true }]]);
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

/** Start a run on the scripted model and wait until its turn is over. */
async function idleRun(prompt: string, modelId: string): Promise<string> {
  const r = await h.api("POST", `${API}/runs`, {
    body: {
      repository: "acme/web",
      prompt,
      modelId,
      validationMode: "minimal",
      environment: { secrets: { CANARY_TOKEN: "not-in-plaintext-anywhere" } },
    },
  });
  expect(r.status).toBe(201);
  expect((await h.turnOver(r.json.id, { what: "the turn to end" })).status).toBe("idle");
  return r.json.id;
}

/** Files of the store (database, logs, patches, summaries, delivery bodies) holding `text`. */
function storeFilesWith(text: string): string[] {
  const dir = h.pb.dataDir;
  const files = [
    ...["store.db", "store.db-wal"].map((f) => path.join(dir, f)).filter((f) => fs.existsSync(f)),
    ...["events", "patches", "summaries", "deliveries"].flatMap((d) => walkFiles(path.join(dir, d))),
  ];
  return files.filter((f) => fs.readFileSync(f).includes(text));
}

describe("DELETE /runs/{id}", { timeout: LOADED.testMs }, () => {
  it("refuses a run with its session open (409 run_active), then deletes it once ended: 204, and every route answers 404", async () => {
    const id = await idleRun(`write the notes, ${CANARY} in the prompt`, "test/canary");
    const kept = await idleRun("another run that stays", "test/plain");
    expect(storeFilesWith(CANARY).length).toBeGreaterThan(0);
    expect(await h.pb.store.getSecret(id, "env:CANARY_TOKEN")).toBeDefined();

    const live = await h.api("DELETE", `${API}/runs/${id}`);
    expect(live.status).toBe(409);
    expect(live.json.error.code).toBe("run_active");
    // Another owner's run is not found, as on every other route; a read-only key may not delete.
    expect((await h.api("DELETE", `${API}/runs/${id}`, { key: h.keys.other })).json.error.code).toBe("run_not_found");
    expect((await h.api("DELETE", `${API}/runs/${id}`, { key: h.keys.ro })).status).toBe(403);

    expect((await h.api("POST", `${API}/runs/${id}/messages`, { body: { endSession: true } })).status).toBe(200);
    const keptEventsBefore = (await h.api("GET", `${API}/runs/${kept}?events=1`)).json.events;
    const deleted = await h.api("DELETE", `${API}/runs/${id}`);
    expect(deleted.status).toBe(204);
    expect(deleted.text).toBe("");

    for (const p of [`/runs/${id}`, `/runs/${id}?patch=1`, `/runs/${id}/stream`, `/runs/${id}/deliveries`]) {
      const r = await h.api("GET", `${API}${p}`);
      expect([p, r.status, r.json?.error?.code]).toEqual([p, 404, "run_not_found"]);
    }
    expect((await h.api("DELETE", `${API}/runs/${id}`)).status).toBe(404);
    expect((await h.api("GET", `${API}/runs?limit=100`)).json.runs.map((r: { id: string }) => r.id)).not.toContain(id);
    // Nothing of it is left in the store: record, turns, events, patch, summary, sealed secret.
    expect(await h.pb.store.listTurns(id)).toEqual([]);
    expect(await h.pb.store.lastEventId(id)).toBe(0);
    expect(await h.pb.store.getSecret(id, "env:CANARY_TOKEN")).toBeUndefined();
    expect(storeFilesWith(CANARY)).toEqual([]);

    // The other run is untouched.
    const other = await h.api("GET", `${API}/runs/${kept}?events=1&patch=1`);
    expect(other.status).toBe(200);
    expect(other.json.events).toEqual(keptEventsBefore);
    expect(other.json.patch).toContain("NOTES.md");
    expect(await h.pb.store.getSecret(kept, "env:CANARY_TOKEN")).toBeDefined();
  });

  it("refuses a run with a turn in flight (409 run_active); after a cancel it can go", async () => {
    const seen = h.model.nextRequest("test/hang");
    const r = await h.api("POST", `${API}/runs`, {
      body: { repository: "acme/web", prompt: "hang", modelId: "test/hang", validationMode: "minimal" },
    });
    expect(r.status).toBe(201);
    await seen;
    const busy = await h.api("DELETE", `${API}/runs/${r.json.id}`);
    expect([busy.status, busy.json.error.code]).toEqual([409, "run_active"]);
    expect((await h.api("POST", `${API}/runs/${r.json.id}/cancel`)).json.status).toBe("cancelled");
    expect((await h.api("DELETE", `${API}/runs/${r.json.id}`)).status).toBe(204);
    expect((await h.api("GET", `${API}/runs/${r.json.id}`)).status).toBe(404);
  });
});
