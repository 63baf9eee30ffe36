/**
 * The webhooks part over a real store, bus, writer and secret box, and real receivers on
 * 127.0.0.1: status changes become signed messages, delivered in order, one at a time per
 * endpoint, retried, resumed after a restart, logged and redelivered on request.
 */
import fs from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { createEventBus } from "../../../src/engine/events/bus.ts";
import { silentLogger } from "../../../src/engine/log.ts";
import { createRunWriter } from "../../../src/engine/run/writer.ts";
import type { RunRecord } from "../../../src/engine/run/schema.ts";
import { createSecretBox } from "../../../src/engine/secrets/secrets.ts";
import { createSqliteStore } from "../../../src/engine/store/sqlite.ts";
import type { RunStore } from "../../../src/engine/store/store.ts";
import { createWebhooks, newWebhookSecret, type WebhooksPart } from "../../../src/engine/webhooks/webhooks.ts";
import { startWebhookReceiver, type WebhookReceiver } from "../../fixtures/webhook-receiver.ts";
import { storeDbText, tempDir, waitFor } from "../../helpers.ts";
import { runRecord } from "../store/fixtures.ts";

const KEY = randomBytes(32);
const config = {
  webhookAllowHttp: true,
  webhookAllowPrivate: true,
  webhookRetryMs: [50, 100, 200, 400, 800],
  webhookTimeoutMs: 5_000,
};

interface Rig {
  store: RunStore;
  hooks: WebhooksPart;
  /** Store a status as the engine does (writer.setStatus: stored, then published on the bus). */
  status(run: RunRecord, status: RunRecord["status"], fields?: Partial<RunRecord>): Promise<RunRecord>;
  close(): Promise<void>;
}

const open: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of open.splice(0).reverse()) await c();
});

async function rig(dataDir: string, over: Partial<typeof config> = {}): Promise<Rig> {
  const store = await createSqliteStore({ dataDir });
  const bus = createEventBus();
  const now = () => new Date();
  const hooks = createWebhooks({
    config: { ...config, ...over },
    store,
    bus,
    box: createSecretBox(KEY),
    log: silentLogger,
    now,
  });
  const writer = createRunWriter({ store, bus, log: silentLogger, now });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await hooks.close();
    await store.close();
  };
  open.push(close);
  await hooks.start();
  return { store, hooks, status: (run, s, fields) => writer.setStatus(run, s, fields), close };
}

async function receiver(opts: Parameters<typeof startWebhookReceiver>[0] = {}): Promise<WebhookReceiver> {
  const rx = await startWebhookReceiver(opts);
  open.push(() => rx.close());
  return rx;
}

/** A stored run with its own webhook, as run creation leaves it. */
async function runWithHook(r: Rig, url: string, secret: string, id = "run_hooked"): Promise<RunRecord> {
  const webhook = await r.hooks.attach("owner-1", id, { url }, secret);
  const run = runRecord({ id, ownerId: "owner-1", status: "queued", webhook });
  await r.store.createRun(run);
  return run;
}

/** One turn: running, then idle with its changes. */
async function turn(r: Rig, run: RunRecord, n: number): Promise<RunRecord> {
  const running = await r.status(run, "running", { turnCount: n });
  return r.status(running, "idle", {
    changedPaths: ["NOTES.md"],
    diffStats: { files: 1, additions: n, deletions: 0 },
    sessionExpiresAt: new Date(Date.now() + 60_000).toISOString(),
  });
}

const kinds = (msgs: { type: string; data: { run: { status: string } } }[]) =>
  msgs.map((m) => (m.type === "run.status" ? m.data.run.status : m.type));

describe("webhooks", () => {
  it("delivers every status change and finished turn in order, once each as 2xx, signed, after two failures", async () => {
    const r = await rig(tempDir("wh"));
    const rx = await receiver({ failFirst: 2, delayMs: 20 });
    const secret = newWebhookSecret();
    let run = await runWithHook(r, rx.url, secret);
    run = await turn(r, run, 1);
    run = await turn(r, run, 2);
    await r.status(run, "completed");
    await waitFor(() => rx.delivered().length === 7, { what: "7 deliveries", timeoutMs: 30_000 });

    const msgs = rx.verified(secret, rx.delivered());
    expect(kinds(msgs)).toEqual(["running", "idle", "turn.finished", "running", "idle", "turn.finished", "completed"]);
    expect(msgs[2]!.data).toMatchObject({ turn: 1, changedPaths: ["NOTES.md"], diffStats: { additions: 1 } });
    expect(msgs[5]!.data).toMatchObject({ turn: 2, diffStats: { additions: 2 } });
    // The body's id is the webhook-id; each id answered 2xx exactly once; one request at a time.
    expect(msgs.map((m) => m.id)).toEqual(rx.delivered().map((d) => d.id));
    expect(new Set(rx.delivered().map((d) => d.id)).size).toBe(7);
    expect(rx.received.length).toBe(9);
    expect(rx.received[0]!.id).toBe(rx.received[2]!.id); // the two failures were the first message, retried
    expect(rx.maxInFlight).toBe(1);
    expect(msgs[0]!.data.run).not.toHaveProperty("patch");
    expect(msgs[0]!.data.run).not.toHaveProperty("events");

    // The receiver answered before Patchbay stored the outcome: read the log once it has caught up.
    const log = await waitFor(async () => {
      const l = await r.hooks.deliveries("owner-1", run.id);
      return l.every((d) => d.status === "delivered") ? l : undefined;
    });
    expect(log.length).toBe(7);
    expect(log[0]!.attempts.map((a) => a.statusCode)).toEqual([500, 500, 204]);
    expect(log[0]!.attempts[0]!.error).toBe("HTTP 500");
    expect(log[0]!.attempts.every((a) => a.latencyMs >= 0)).toBe(true);
    await expect(r.hooks.deliveries("owner-2", run.id)).rejects.toMatchObject({ code: "run_not_found" });
  });

  it("an owner's webhook gets every run of the owner, only the event types it asked for", async () => {
    const r = await rig(tempDir("wh"));
    const all = await receiver();
    const turns = await receiver();
    const a = await r.hooks.create("owner-1", { url: all.url });
    expect(a.secret).toMatch(/^whsec_/);
    const mine = newWebhookSecret();
    const b = await r.hooks.create("owner-1", { url: turns.url, secret: mine, events: ["turn.finished"] });
    expect(b.secret).toBeUndefined();
    expect((await r.hooks.list("owner-1")).map((h) => h.id)).toEqual([a.id, b.id]);
    expect(JSON.stringify(await r.hooks.list("owner-1"))).not.toContain("whsec_");
    const run = runRecord({ id: "run_owned", ownerId: "owner-1", status: "queued" });
    const other = runRecord({ id: "run_other", ownerId: "owner-2", status: "queued" });
    await r.store.createRun(run);
    await r.store.createRun(other);
    await turn(r, run, 1);
    await turn(r, other, 1);
    await waitFor(() => all.delivered().length === 3 && turns.delivered().length === 1, { what: "deliveries" });
    expect(kinds(all.verified(a.secret!))).toEqual(["running", "idle", "turn.finished"]);
    expect(kinds(turns.verified(mine))).toEqual(["turn.finished"]);
    await r.hooks.remove("owner-1", a.id);
    await expect(r.hooks.remove("owner-1", a.id)).rejects.toMatchObject({ code: "webhook_not_found" });
    await expect(r.hooks.remove("owner-2", b.id)).rejects.toMatchObject({ code: "webhook_not_found" });
    await expect(r.hooks.create("owner-1", { url: "ftp://x/" })).rejects.toMatchObject({ code: "invalid_webhook_url" });
    await expect(r.hooks.create("owner-1", { url: all.url, events: ["run.created"] })).rejects.toMatchObject({
      code: "invalid_request",
    });
  });

  it("gives up after the schedule's tries, moves on to the next message, and redelivers on request", async () => {
    const r = await rig(tempDir("wh"), { webhookRetryMs: [20, 20] });
    const rx = await receiver({ mode: "fail" });
    const secret = newWebhookSecret();
    const run = await runWithHook(r, rx.url, secret);
    await r.status(run, "running", { turnCount: 1 });
    await waitFor(async () => (await r.hooks.deliveries("owner-1", run.id))[0]?.status === "failed", {
      what: "the first message to fail",
    });
    const [failed] = await r.hooks.deliveries("owner-1", run.id);
    expect(failed!.attempts.length).toBe(3);
    expect(failed!.nextAttemptAt).toBeNull();
    rx.mode = "ok";
    await r.status({ ...run, turnCount: 1, status: "running" }, "cancelled");
    await waitFor(() => rx.delivered().length === 2, { what: "the next messages" });
    expect(kinds(rx.verified(secret, rx.delivered()))).toEqual(["cancelled", "turn.finished"]);

    const again = await r.hooks.redeliver("owner-1", run.id, failed!.id);
    expect(again.status).toBe("pending");
    await waitFor(() => rx.delivered().length === 3, { what: "the redelivery" });
    expect(rx.delivered()[2]!.id).toBe(failed!.id);
    const log = await waitFor(async () => {
      const l = await r.hooks.deliveries("owner-1", run.id);
      return l[0]!.status === "delivered" ? l : undefined;
    });
    expect(log[0]!.attempts.map((a) => a.attempt)).toEqual([1, 2, 3, 4]);
    await expect(r.hooks.redeliver("owner-1", run.id, "msg_nope")).rejects.toMatchObject({
      code: "delivery_not_found",
    });
  });

  it("a restart on the same store resumes the pending messages, in order; the secret is sealed on disk", async () => {
    const dataDir = tempDir("wh");
    const first = await rig(dataDir);
    const rx = await receiver({ mode: "fail" });
    const secret = newWebhookSecret();
    const run = await turn(first, await runWithHook(first, rx.url, secret), 1);
    await waitFor(() => rx.received.length >= 2, { what: "failing attempts" });
    await first.close();
    const stored = storeDbText(dataDir);
    expect(stored).toContain(rx.url);
    expect(stored).not.toContain(secret);
    expect(stored).not.toContain(secret.slice("whsec_".length));
    // The database keeps each delivery's small record; its body (the run's view) is a file of its own.
    expect(stored).not.toContain('"body"');
    expect(stored).toContain('"attempts"');
    expect(fs.readdirSync(path.join(dataDir, "deliveries")).length).toBe(3);

    rx.mode = "ok";
    const second = await rig(dataDir);
    await waitFor(() => rx.delivered().length === 3, { what: "the resumed deliveries" });
    expect(kinds(rx.verified(secret, rx.delivered()))).toEqual(["running", "idle", "turn.finished"]);
    await waitFor(async () =>
      (await second.hooks.deliveries("owner-1", run.id)).every((d) => d.status === "delivered"),
    );
  });

  it("a chained run keeps its prior run's webhook: same URL and secret, under an id of its own", async () => {
    const r = await rig(tempDir("wh"));
    const rx = await receiver();
    const secret = newWebhookSecret();
    const prior = await runWithHook(r, rx.url, secret, "run_prior");
    const copied = await r.hooks.copy(prior, "run_chained");
    expect(copied!.url).toBe(rx.url);
    expect(copied!.id).not.toBe(prior.webhook!.id);
    expect(await r.hooks.copy(runRecord({ id: "run_plain" }), "run_x")).toBeUndefined();
    const chained = runRecord({ id: "run_chained", ownerId: "owner-1", status: "queued", webhook: copied! });
    await r.store.createRun(chained);
    await r.status(chained, "running", { turnCount: 1 });
    await waitFor(() => rx.delivered().length === 1, { what: "the chained run's message" });
    expect(rx.verified(secret)[0]!.data.run.id).toBe("run_chained");
    // A sealed secret moved onto another webhook does not open: it is bound to its webhook's id.
    const a = (await r.store.getWebhook(prior.webhook!.id))!;
    const b = (await r.store.getWebhook(copied!.id))!;
    await r.store.putWebhook({ ...b, secret: a.secret });
    await r.status({ ...chained, status: "running", turnCount: 1 }, "cancelled");
    const log = await waitFor(async () => {
      const l = await r.hooks.deliveries("owner-1", "run_chained");
      return l.length === 3 && l.every((d) => d.status !== "pending") ? l : undefined;
    });
    expect(log.slice(1).map((d) => d.status)).toEqual(["failed", "failed"]);
    expect(log[1]!.attempts[0]!.error).toMatch(/cannot decrypt/);
  });

  it("a status stored just before a crash, its messages not yet stored, is sent by the next start, once", async () => {
    const dataDir = tempDir("wh");
    const first = await rig(dataDir);
    const rx = await receiver();
    const secret = newWebhookSecret();
    const run = await turn(first, await runWithHook(first, rx.url, secret), 1);
    await waitFor(() => rx.delivered().length === 3, { what: "the turn's messages" });
    // What a crash between the two writes leaves: the status and its event stored, no message
    // (store.transition without the bus, as writer.setStatus does before it publishes).
    await first.store.transition(run.id, { status: "completed", finishedAt: new Date().toISOString() }, (u) => ({
      type: "run.status",
      turn: u.turnCount,
      data: { status: "completed", turn: u.turnCount },
    }));
    await first.close();

    const second = await rig(dataDir);
    await waitFor(() => rx.delivered().length === 4, { what: "the message the crash kept back" });
    expect(kinds(rx.verified(secret))).toEqual(["running", "idle", "turn.finished", "completed"]);
    await second.close();
    // A start that finds nothing missing sends nothing.
    const third = await rig(dataDir);
    await waitFor(async () => (await third.hooks.deliveries("owner-1", run.id)).length === 4);
    expect(rx.received.length).toBe(4);
  });
});
