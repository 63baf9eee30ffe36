/**
 * Webhooks across a crash: a real `patchbay serve` delivers a run's messages to a receiver on
 * 127.0.0.1 that fails the first two deliveries, then takes one, then refuses everything;
 * serve is killed with SIGKILL while messages are pending. The next serve on the same data
 * dir sends them: every message reaches the receiver as a 2xx exactly once, in the run's
 * order, each signature verified with `standardwebhooks`, and the generated secret is
 * nowhere in plain text (answers after the first, logs, data dir).
 */
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWebhookReceiver, type WebhookReceiver } from "../fixtures/webhook-receiver.ts";
import { tempDir, waitFor } from "../helpers.ts";
import { LOADED, startFixtures, type Fixtures } from "../support/harness.ts";
import { walkFiles } from "../support/http.ts";
import { pollUntilTurnOver } from "../support/poll.ts";
import { API, startServe, type ServeChild } from "../support/serve.ts";

let fx: Fixtures;
let rx: WebhookReceiver;
const children: ServeChild[] = [];

beforeAll(async () => {
  fx = await startFixtures({
    repos: { "acme/web": { "README.md": "# web\n" } },
    model: {
      scripts: {
        "test/ok": [
          [
            { toolCalls: [{ name: "write", args: { filePath: "NOTES.md", content: "notes\n" } }] },
            { text: "Wrote NOTES.md." },
          ],
        ],
      },
    },
  });
  rx = await startWebhookReceiver({ failFirst: 2, failAfter: 1 });
}, LOADED.hookMs);

afterAll(async () => {
  for (const c of children) await c.stop();
  await rx?.close();
  await fx?.close();
}, LOADED.hookMs);

describe("webhooks across kill -9 of patchbay serve", { timeout: LOADED.testMs }, () => {
  it("every message arrives as a 2xx exactly once, in order, signed, after two failures and a SIGKILL between deliveries", async () => {
    const dataDir = tempDir("data");
    const env = {
      ...fx.env,
      PATCHBAY_DATA_DIR: dataDir,
      PATCHBAY_WEBHOOK_ALLOW_HTTP: "1",
      PATCHBAY_WEBHOOK_ALLOW_PRIVATE: "1",
      // Short on purpose; enough tries that the kill and restart fit inside them.
      PATCHBAY_WEBHOOK_RETRY_MS: "200,400,800,1600,3200,5000,5000,5000,5000,5000,5000,5000,5000,5000,5000,5000",
    };
    const a = await startServe(env);
    children.push(a);
    const key = a.adminKey!;
    const started = await a.api("POST", `${API}/runs`, {
      body: {
        repository: "acme/web",
        prompt: "write notes",
        modelId: "test/ok",
        validationMode: "minimal",
        webhook: { url: rx.url },
      },
    });
    expect(started.status).toBe(201);
    const runId: string = started.json.id;
    const secret: string = started.json.webhook.secret;
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(started.json.webhook.url).toBe(rx.url);

    const idle = await pollUntilTurnOver(() => a.api("GET", `${API}/runs/${runId}`), {
      timeoutMs: LOADED.turnWaitMs,
      what: "the run to be idle",
    });
    expect(idle.status).toBe("idle");
    expect(idle.webhook).toEqual({ id: started.json.webhook.id, url: rx.url }); // never the secret again
    // Failed twice, took one (`running`), and now refuses: the rest is pending when serve dies.
    await waitFor(() => rx.delivered().length === 1 && rx.received.length >= 4, {
      timeoutMs: 60_000,
      what: "a refused delivery after the first one taken",
    });
    const log = await a.api("GET", `${API}/runs/${runId}/deliveries`);
    expect(log.status).toBe(200);
    expect(log.json.deliveries[0].attempts.map((t: { statusCode: number }) => t.statusCode)).toEqual([500, 500, 204]);
    expect(log.json.deliveries.slice(1).some((d: { status: string }) => d.status === "pending")).toBe(true);

    a.proc.kill("SIGKILL");
    await a.exited;
    const before = rx.received.length;
    rx.mode = "ok";

    const b = await startServe(env);
    children.push(b);
    // The restart ends the idle run (completed): one more message, behind the pending ones.
    await waitFor(() => rx.delivered().length === 4, { timeoutMs: 120_000, what: "the resumed deliveries" });
    expect(rx.received.length).toBeGreaterThan(before);

    const delivered = rx.delivered();
    const ids = delivered.map((d) => d.id);
    expect(new Set(ids).size).toBe(ids.length); // each message answered 2xx exactly once
    const messages = rx.verified(secret, delivered);
    expect(messages.map((m) => (m.type === "run.status" ? m.data.run.status : m.type))).toEqual([
      "running",
      "idle",
      "turn.finished",
      "completed",
    ]);
    expect(messages.map((m) => m.id)).toEqual(ids);
    expect(messages[2]!.data).toMatchObject({ turn: 1, changedPaths: ["NOTES.md"], diffStats: { files: 1 } });
    expect(messages.every((m) => m.data.run.id === runId && !("patch" in m.data.run))).toBe(true);
    // Every request the receiver saw belongs to one of those messages: nothing else was sent.
    expect(new Set(rx.received.map((r) => r.id))).toEqual(new Set(ids));

    const after = await waitFor(
      async () => {
        const l = await b.api("GET", `${API}/runs/${runId}/deliveries`, { key });
        return l.json.deliveries.every((d: { status: string }) => d.status === "delivered") ? l : undefined;
      },
      { what: "the log to record every delivery" },
    );
    expect(after.json.deliveries.map((d: { id: string }) => d.id)).toEqual(ids);
    expect(after.json.deliveries[0].attempts.at(-1).latencyMs).toBeGreaterThanOrEqual(0);

    const body = secret.slice("whsec_".length);
    for (const text of [a.stderr(), b.stderr(), JSON.stringify(after.json), JSON.stringify(idle)])
      expect(text.includes(body)).toBe(false);
    const holding = walkFiles(dataDir).filter((f) => {
      try {
        return fs.readFileSync(f).includes(body);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
        throw e;
      }
    });
    expect(holding).toEqual([]);
    await b.stop();
  });
});
