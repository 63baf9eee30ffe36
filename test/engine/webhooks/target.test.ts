/**
 * Webhook targets: what a URL may be at creation, and what an attempt may connect to (the
 * resolved address, checked in the socket's own lookup), against a real receiver on 127.0.0.1.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config.ts";
import { EngineError } from "../../../src/engine/errors.ts";
import { sendWebhook } from "../../../src/engine/webhooks/send.ts";
import { checkWebhookUrl, isPrivateAddress } from "../../../src/engine/webhooks/target.ts";
import { newWebhookSecret } from "../../../src/engine/webhooks/webhooks.ts";
import { startWebhookReceiver, type WebhookReceiver } from "../../fixtures/webhook-receiver.ts";

const strict = { allowHttp: false, allowPrivate: false };
const local = { allowHttp: true, allowPrivate: true };

function refusal(url: string, policy = strict): string | undefined {
  try {
    checkWebhookUrl(url, policy);
    return undefined;
  } catch (e) {
    expect(e).toBeInstanceOf(EngineError);
    expect((e as EngineError).code).toBe("invalid_webhook_url");
    return (e as EngineError).message;
  }
}

describe("webhook URLs at creation", () => {
  it("accepts a public https URL and refuses http, other schemes, credentials and relative URLs", () => {
    expect(refusal("https://hooks.example.com/patchbay?x=1")).toBeUndefined();
    expect(refusal("http://hooks.example.com/")).toMatch(/https/);
    expect(refusal("http://hooks.example.com/", { allowHttp: true, allowPrivate: false })).toBeUndefined();
    expect(refusal("ftp://hooks.example.com/")).toBeDefined();
    expect(refusal("file:///etc/passwd", local)).toBeDefined();
    expect(refusal("https://user:pw@hooks.example.com/")).toMatch(/credentials/);
    expect(refusal("/relative")).toBeDefined();
    expect(refusal("not a url")).toBeDefined();
  });

  it("refuses private, loopback and link-local hosts unless allowed", () => {
    for (const url of [
      "https://127.0.0.1/",
      "https://localhost:8080/",
      "https://api.localhost/",
      "https://10.1.2.3/",
      "https://192.168.1.1/",
      "https://172.20.0.1/",
      "https://169.254.169.254/latest/meta-data",
      "https://[::1]/",
      "https://[fe80::1]/",
      "https://[fd00::1]/",
      "https://[::ffff:127.0.0.1]/",
      "https://0.0.0.0/",
      "https://2130706433/", // 127.0.0.1 written as one number
    ])
      expect(refusal(url), url).toMatch(/private/);
    expect(refusal("https://127.0.0.1/", { allowHttp: false, allowPrivate: true })).toBeUndefined();
  });

  it("judges addresses by range, IPv4-mapped IPv6 as its IPv4 address", () => {
    expect(isPrivateAddress("8.8.8.8")).toBe(false);
    expect(isPrivateAddress("2606:4700::1111")).toBe(false);
    expect(isPrivateAddress("100.64.0.1")).toBe(true);
    expect(isPrivateAddress("::ffff:7f00:1")).toBe(true);
    expect(isPrivateAddress("::ffff:8.8.8.8")).toBe(false);
    expect(isPrivateAddress("not-an-ip")).toBe(true);
  });
});

describe("a delivery attempt", () => {
  let rx: WebhookReceiver;
  beforeAll(async () => {
    rx = await startWebhookReceiver();
  });
  afterAll(async () => {
    await rx.close();
  });
  const secret = newWebhookSecret();
  const attempt = (url: string, policy = local, timeoutMs = 10_000) =>
    sendWebhook({ url, secret, messageId: "msg_test1", body: '{"type":"run.status"}', timeoutMs, policy });

  it("is signed per Standard Webhooks: the standardwebhooks package verifies it", async () => {
    const r = await attempt(rx.url);
    expect(r).toMatchObject({ ok: true, statusCode: 204 });
    const last = rx.received.at(-1)!;
    expect(last.id).toBe("msg_test1");
    expect(last.signature).toMatch(/^v1,[A-Za-z0-9+/=]+$/);
    expect(rx.verified(secret, [last])[0]).toEqual({ type: "run.status" });
    expect(() => rx.verified(newWebhookSecret(), [last])).toThrow();
  });

  it("refuses a name that resolves to loopback, checked at connect time, and sends nothing", async () => {
    const before = rx.received.length;
    const viaName = rx.url.replace("127.0.0.1", "localhost");
    const r = await attempt(viaName, { allowHttp: true, allowPrivate: false });
    expect(r.ok).toBe(false);
    expect(r.statusCode).toBeNull();
    expect(r.error).toMatch(/private, loopback or link-local/);
    const literal = await attempt(rx.url, { allowHttp: true, allowPrivate: false });
    expect(literal.error).toMatch(/private, loopback or link-local/);
    expect(rx.received.length).toBe(before);
    // Allowed, the same name reaches it.
    expect((await attempt(viaName)).ok).toBe(true);
  });

  it("gives up on a receiver that never answers after its timeout", async () => {
    const hang = await startWebhookReceiver({ mode: "hang" });
    try {
      const r = await attempt(hang.url, local, 300);
      expect(r).toMatchObject({ ok: false, statusCode: null });
      expect(r.error).toMatch(/no answer within 300 ms/);
      expect(r.latencyMs).toBeGreaterThanOrEqual(250);
    } finally {
      await hang.close();
    }
  });

  it("counts a non-2xx answer as a failure with its status", async () => {
    const bad = await startWebhookReceiver({ mode: "fail" });
    try {
      expect(await attempt(bad.url)).toMatchObject({ ok: false, statusCode: 500, error: "HTTP 500" });
    } finally {
      await bad.close();
    }
  });
});

describe("webhook settings", () => {
  it("are read from the environment once: flags, a retry schedule, a timeout; a bad schedule names its variable", () => {
    const defaults = loadConfig({});
    expect(defaults).toMatchObject({ webhookAllowHttp: false, webhookAllowPrivate: false, webhookTimeoutMs: 10_000 });
    expect(defaults.webhookRetryMs).toEqual([5_000, 30_000, 120_000, 600_000, 2_700_000]);
    const set = loadConfig({
      PATCHBAY_WEBHOOK_ALLOW_HTTP: "1",
      PATCHBAY_WEBHOOK_ALLOW_PRIVATE: "true",
      PATCHBAY_WEBHOOK_RETRY_MS: "100, 200,400",
      PATCHBAY_WEBHOOK_TIMEOUT_MS: "500",
    });
    expect(set).toMatchObject({ webhookAllowHttp: true, webhookAllowPrivate: true, webhookTimeoutMs: 500 });
    expect(set.webhookRetryMs).toEqual([100, 200, 400]);
    for (const bad of ["", "1,x", "0", "-5", "1.5"])
      expect(() => loadConfig({ PATCHBAY_WEBHOOK_RETRY_MS: bad }), bad).toThrow(/PATCHBAY_WEBHOOK_RETRY_MS/);
  });
});
