/**
 * Webhooks over real HTTP on 127.0.0.1, with the real engine, OpenCode and the scripted
 * model: a receiver that never answers does not hold up a run; an owner's webhooks are
 * created, listed and deleted with their secret shown once; bad input and targets the
 * server does not allow (http, loopback) are refused with 4xx and a code; the delivery log
 * and redelivery; and a secret canary that appears nowhere in plain text.
 */
import fs from "node:fs";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWebhookReceiver, type WebhookReceiver } from "../fixtures/webhook-receiver.ts";
import { waitFor } from "../helpers.ts";
import { LOADED } from "../support/harness.ts";
import { serveApp, serveHarness, walkFiles, type HttpHarness } from "../support/http.ts";

const API = "/api/v1/coding-agent";
let h: HttpHarness;
const receivers: WebhookReceiver[] = [];
const CANARY_BYTES = Buffer.concat([Buffer.from("wh-canary-"), randomBytes(22)]);
const CANARY = `whsec_${CANARY_BYTES.toString("base64")}`;
const CANARY_BODY = CANARY_BYTES.toString("base64");

function holds(file: string, needle: string): boolean {
  try {
    return fs.readFileSync(file).includes(needle);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false; // removed while we walked
    throw e;
  }
}

async function receiver(opts: Parameters<typeof startWebhookReceiver>[0] = {}): Promise<WebhookReceiver> {
  const rx = await startWebhookReceiver(opts);
  receivers.push(rx);
  return rx;
}

const runBody = (model: string, extra: Record<string, unknown> = {}) => ({
  repository: "acme/web",
  prompt: "write notes",
  modelId: model,
  validationMode: "minimal",
  ...extra,
});

beforeAll(async () => {
  h = await serveHarness({
    env: {
      PATCHBAY_WEBHOOK_ALLOW_HTTP: "1",
      PATCHBAY_WEBHOOK_ALLOW_PRIVATE: "1",
      PATCHBAY_WEBHOOK_RETRY_MS: "100,200,400,800,1600",
      // An attempt may hang for ten minutes: if a run waited on its webhook, the test would time out.
      PATCHBAY_WEBHOOK_TIMEOUT_MS: "600000",
    },
  });
  for (const model of ["test/hang-hook", "test/canary-hook"])
    h.model.script(model, [
      [
        { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "notes\n" } }] },
        { text: "Wrote NOTES.md." },
      ],
    ]);
}, LOADED.hookMs);

afterAll(async () => {
  for (const rx of receivers) await rx.close();
  await h?.close();
}, LOADED.hookMs);

describe("webhooks over HTTP", { timeout: LOADED.testMs }, () => {
  it("a receiver that never answers does not delay the run; another endpoint of the owner still gets every message", async () => {
    const hang = await receiver({ mode: "hang" });
    const ok = await receiver();
    const owner = await h.api("POST", "/api/v1/webhooks", { body: { url: ok.url } });
    expect(owner.status).toBe(201);
    const t0 = Date.now();
    const started = await h.api("POST", `${API}/runs`, {
      body: runBody("test/hang-hook", { webhook: { url: hang.url } }),
    });
    expect(started.status).toBe(201);
    const run = await h.turnOver(started.json.id);
    const turnMs = Date.now() - t0;
    expect(run.status).toBe("idle");
    // The run's own endpoint holds its first message open (600 s timeout) while the run went idle.
    expect(hang.received.length).toBe(1);
    expect(hang.received[0]!.answered).toBeNull();
    expect(turnMs).toBeLessThan(600_000);
    await waitFor(() => ok.delivered().length === 3, { what: "the owner's endpoint to get 3 messages" });
    const msgs = ok.verified(owner.json.secret);
    expect(msgs.map((m) => (m.type === "run.status" ? m.data.run.status : m.type))).toEqual([
      "running",
      "idle",
      "turn.finished",
    ]);
    expect(msgs[2]!.data.changedPaths).toEqual(["NOTES.md"]);

    const log = await h.api("GET", `${API}/runs/${run.id}/deliveries`);
    expect(log.status).toBe(200);
    const mine = log.json.deliveries.filter((d: { url: string }) => d.url === hang.url);
    expect(mine.map((d: { status: string }) => d.status)).toEqual(["pending", "pending", "pending"]);
    expect(mine[0].attempts).toEqual([]); // in flight: recorded once it ends
    const theirs = log.json.deliveries.filter((d: { url: string }) => d.url === ok.url);
    expect(theirs.length).toBe(3);
    expect((await h.api("DELETE", `/api/v1/webhooks/${owner.json.id}`)).status).toBe(204);
  });

  it("an owner's webhooks: the generated secret once, listed without it, deleted once; other owners see none", async () => {
    const created = await h.api("POST", "/api/v1/webhooks", {
      body: { url: "https://hooks.example.com/patchbay", events: ["run.status"] },
    });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ url: "https://hooks.example.com/patchbay", events: ["run.status"] });
    expect(created.json.id).toMatch(/^wh_/);
    expect(created.json.secret).toMatch(/^whsec_/);
    expect(Buffer.from(created.json.secret.slice(6), "base64").length).toBe(32);
    const given = await h.api("POST", "/api/v1/webhooks", {
      body: { url: "https://hooks.example.com/two", secret: CANARY },
    });
    expect(given.status).toBe(201);
    expect(given.json.secret).toBeUndefined();
    expect(given.json.events).toEqual(["run.status", "turn.finished"]);

    const list = await h.api("GET", "/api/v1/webhooks", { key: h.keys.ro });
    expect(list.status).toBe(200);
    expect(list.json.webhooks.map((w: { id: string }) => w.id)).toEqual([created.json.id, given.json.id]);
    expect(list.text).not.toContain("whsec_");
    expect((await h.api("GET", "/api/v1/webhooks", { key: h.keys.other })).json.webhooks).toEqual([]);

    expect((await h.api("DELETE", `/api/v1/webhooks/${created.json.id}`, { key: h.keys.other })).status).toBe(404);
    expect((await h.api("DELETE", `/api/v1/webhooks/${created.json.id}`, { key: h.keys.ro })).status).toBe(403);
    expect((await h.api("DELETE", `/api/v1/webhooks/${created.json.id}`)).status).toBe(204);
    const again = await h.api("DELETE", `/api/v1/webhooks/${created.json.id}`);
    expect(again.status).toBe(404);
    expect(again.json.error.code).toBe("webhook_not_found");
    expect((await h.api("DELETE", `/api/v1/webhooks/${given.json.id}`)).status).toBe(204);
  });

  it("bad input is a 4xx with a code, and no run or webhook is made", async () => {
    const cases: [unknown, number, string][] = [
      [{}, 400, "invalid_request"],
      [{ url: 42 }, 400, "invalid_request"],
      [{ url: "https://x.example.com/", secret: "not-a-secret" }, 400, "invalid_request"],
      [{ url: "https://x.example.com/", secret: "whsec_c2hvcnQ=" }, 400, "invalid_request"],
      [{ url: "https://x.example.com/", events: ["run.created"] }, 400, "invalid_request"],
      [{ url: "https://x.example.com/", events: [] }, 400, "invalid_request"],
      [{ url: "https://x.example.com/", extra: 1 }, 400, "invalid_request"],
      [{ url: "ftp://x.example.com/" }, 400, "invalid_webhook_url"],
      [{ url: "https://user:pw@x.example.com/" }, 400, "invalid_webhook_url"],
      [{ url: "x".repeat(3000) }, 400, "invalid_request"],
    ];
    for (const [body, status, code] of cases) {
      const r = await h.api("POST", "/api/v1/webhooks", { body });
      expect([JSON.stringify(body).slice(0, 80), r.status, r.json?.error?.code]).toEqual([
        JSON.stringify(body).slice(0, 80),
        status,
        code,
      ]);
    }
    expect(
      (await h.api("POST", "/api/v1/webhooks", { raw: "{", headers: { "content-type": "application/json" } })).status,
    ).toBe(400);
    expect(
      (await h.api("POST", "/api/v1/webhooks", { key: h.keys.ro, body: { url: "https://x.example.com/" } })).status,
    ).toBe(403);
    expect(
      (await h.api("POST", "/api/v1/webhooks", { key: null, body: { url: "https://x.example.com/" } })).status,
    ).toBe(401);
    expect((await h.api("GET", "/api/v1/webhooks")).json.webhooks).toEqual([]);

    const before = (await h.api("GET", `${API}/runs?limit=100`)).json.runs.length;
    for (const webhook of [{ url: "ftp://x/" }, { url: "https://x.example.com/", secret: "whsec_" }, { nope: 1 }]) {
      const r = await h.api("POST", `${API}/runs`, { body: runBody("test/hang-hook", { webhook }) });
      expect(r.status).toBe(400);
      expect(["invalid_request", "invalid_webhook_url"]).toContain(r.json.error.code);
    }
    expect((await h.api("GET", `${API}/runs?limit=100`)).json.runs.length).toBe(before);
    expect((await h.api("GET", `${API}/runs/run_nope/deliveries`)).status).toBe(404);
  });

  it("without PATCHBAY_WEBHOOK_ALLOW_HTTP and _ALLOW_PRIVATE, http and loopback targets are refused with invalid_webhook_url", async () => {
    const strict = await h.openAnother({
      PATCHBAY_WEBHOOK_ALLOW_HTTP: "0",
      PATCHBAY_WEBHOOK_ALLOW_PRIVATE: "0",
      PATCHBAY_RATE_LIMIT_PER_MIN: "100000",
    });
    const served = await serveApp(strict);
    try {
      const key = (await strict.keys.create({ name: "strict", scopes: ["read:builder", "write:builder"] })).key;
      const post = async (p: string, body: unknown) => {
        const res = await fetch(served.base + p, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        return { status: res.status, json: (await res.json()) as { error: { code: string; message: string } } };
      };
      const refusals: [string, RegExp][] = [
        ["http://hooks.example.com/", /https/],
        ["https://127.0.0.1:9/hook", /private/],
        ["https://localhost/hook", /private/],
        ["https://[::1]/hook", /private/],
        ["https://169.254.169.254/latest", /private/],
        ["https://10.0.0.8/", /private/],
      ];
      for (const [url, why] of refusals) {
        const r = await post("/api/v1/webhooks", { url });
        expect([url, r.status, r.json.error.code]).toEqual([url, 400, "invalid_webhook_url"]);
        expect(r.json.error.message).toMatch(why);
        const run = await post(`${API}/runs`, runBody("test/hang-hook", { webhook: { url } }));
        expect([url, run.status, run.json.error.code]).toEqual([url, 400, "invalid_webhook_url"]);
      }
      expect((await post("/api/v1/webhooks", { url: "https://hooks.example.com/" })).status).toBe(201);
    } finally {
      await served.close();
      await strict.close();
    }
  });

  it("a client's secret (canary) is sealed: it appears in no answer, event, log line or stored file; the log and redelivery work", async () => {
    const rx = await receiver();
    const started = await h.api("POST", `${API}/runs`, {
      body: runBody("test/canary-hook", { webhook: { url: rx.url, secret: CANARY } }),
    });
    expect(started.status).toBe(201);
    expect(started.json.webhook).toEqual({ id: expect.stringMatching(/^wh_/), url: rx.url });
    const run = await h.turnOver(started.json.id, { query: "?events=1" });
    expect(run.status).toBe("idle");
    await waitFor(() => rx.delivered().length === 3, { what: "3 messages" });
    expect(rx.verified(CANARY).map((m) => m.type)).toEqual(["run.status", "run.status", "turn.finished"]);

    const log = await waitFor(async () => {
      const l = await h.api("GET", `${API}/runs/${run.id}/deliveries`);
      return l.json.deliveries.length === 3 &&
        l.json.deliveries.every((d: { status: string }) => d.status === "delivered")
        ? l
        : undefined;
    });
    const first = log.json.deliveries[0];
    expect(first.attempts).toEqual([
      { attempt: 1, at: expect.any(String), statusCode: 204, latencyMs: expect.any(Number) },
    ]);
    expect(first.id).toBe(rx.delivered()[0]!.id);
    const redo = await h.api("POST", `${API}/runs/${run.id}/deliveries/${first.id}/redeliver`);
    expect(redo.status).toBe(202);
    expect(redo.json.status).toBe("pending");
    await waitFor(() => rx.delivered().length === 4, { what: "the redelivery" });
    expect(rx.delivered()[3]!.id).toBe(first.id);
    expect(rx.verified(CANARY, [rx.delivered()[3]!])[0]).toEqual(rx.verified(CANARY, [rx.delivered()[0]!])[0]);
    expect((await h.api("POST", `${API}/runs/${run.id}/deliveries/msg_nope/redeliver`)).json.error.code).toBe(
      "delivery_not_found",
    );
    expect(
      (await h.api("POST", `${API}/runs/${run.id}/deliveries/${first.id}/redeliver`, { key: h.keys.other })).status,
    ).toBe(404);
    expect((await h.api("GET", `${API}/runs/${run.id}/deliveries`, { key: h.keys.other })).status).toBe(404);
    expect(
      (await h.api("POST", `${API}/runs/${run.id}/deliveries/${first.id}/redeliver`, { body: { x: 1 } })).status,
    ).toBe(400);

    await h.api("GET", `${API}/runs/${run.id}?events=1`);
    for (const needle of [CANARY, CANARY_BODY]) {
      expect(h.transcript.filter((t) => t.includes(needle))).toEqual([]);
      expect(h.pb.logLines.filter((l) => l.includes(needle))).toEqual([]);
      expect(JSON.stringify(run.events)).not.toContain(needle);
      expect(walkFiles(h.pb.dataDir).filter((f) => holds(f, needle))).toEqual([]);
    }
  });
});
