/**
 * The model gateway over real loopback HTTP, with the scripted model as its upstream.
 */
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { createModelGateway, NO_MODEL_KEY_MESSAGE } from "../../../src/engine/gateway/server.ts";
import { createSseUsageScanner } from "../../../src/engine/gateway/metering.ts";
import { rewriteBody } from "../../../src/engine/gateway/request.ts";
import type { GatewayGrant, ModelGateway } from "../../../src/engine/gateway/gateway.ts";
import { createLogger } from "../../../src/engine/log.ts";
import type { Usage } from "../../../src/engine/run/schema.ts";
import { startScriptedModel, type ScriptedModel, type Step } from "../../fixtures/scripted-model.ts";
import { waitFor } from "../../helpers.ts";

const REAL_KEY = "sk-or-v1-canary-9f3b2c7d1e5a4b6c8d0e2f4a6b8c0d1e";
const MODEL = "test/gateway-model";

interface Fixture {
  model: ScriptedModel;
  gw: ModelGateway;
  lines: string[];
  usage: Usage[];
  grant(over?: Partial<GatewayGrant>): string;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A scripted model and a gateway in front of it; every log line is collected. */
async function setup(
  steps: Step[] = [{ text: "hello" }],
  opts: {
    maxBodyBytes?: number;
    upstreamBaseUrl?: string;
    bodyTimeoutMs?: number;
    maxInFlightPerToken?: number;
    maxTokens?: number;
  } = {},
): Promise<Fixture> {
  const model = await startScriptedModel({ scripts: { [MODEL]: [steps] } });
  const lines: string[] = [];
  const log = createLogger({ level: "debug", write: (l) => lines.push(l) });
  const gw = await createModelGateway({
    upstreamBaseUrl: opts.upstreamBaseUrl ?? model.baseUrl,
    log,
    maxBodyBytes: opts.maxBodyBytes,
    bodyTimeoutMs: opts.bodyTimeoutMs,
    maxInFlightPerToken: opts.maxInFlightPerToken,
    maxTokens: opts.maxTokens,
  });
  const usage: Usage[] = [];
  return {
    model,
    gw,
    lines,
    usage,
    grant: (over = {}) =>
      gw.issueToken({
        runId: "run_test",
        upstreamKey: async () => REAL_KEY,
        allowedModels: [MODEL],
        onUsage: (u) => usage.push(u),
        ...over,
      }),
    async [Symbol.asyncDispose]() {
      await gw.close();
      await model.close();
    },
  };
}

/** The scripted model treats tool-less requests as side requests; a tool keeps us on the script. */
function chatBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: MODEL,
    messages: [{ role: "user", content: "hi" }],
    tools: [{ type: "function", function: { name: "noop", parameters: { type: "object", properties: {} } } }],
    ...extra,
  };
}

function chat(gw: ModelGateway, token: string | undefined, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(`${gw.url}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal,
  });
}

async function errorOf(res: Response): Promise<{ message: string; type: string; code: string }> {
  const json = (await res.json()) as { error: { message: string; type: string; code: string } };
  return json.error;
}

describe("model gateway", () => {
  it("a request with a valid token reaches the upstream with the real key, and the token never does", async () => {
    await using f = await setup([{ text: "hello there", usage: { prompt_tokens: 7, completion_tokens: 3 } }]);
    const token = f.grant();
    expect(token).toMatch(/^pbgw_[A-Za-z0-9_-]{43}$/);

    const res = await chat(f.gw, token, chatBody());
    expect(res.status).toBe(200);
    const json = (await res.json()) as { choices: { message: { content: string } }[] };
    expect(json.choices[0]!.message.content).toBe("hello there");

    expect(f.model.requests).toHaveLength(1);
    const seen = f.model.requests[0]!;
    expect(seen.authorization).toBe(`Bearer ${REAL_KEY}`);
    expect(seen.headers["x-title"]).toBe("Patchbay");
    expect(seen.headers["http-referer"]).toBeTruthy();
    expect(JSON.stringify(seen.headers) + JSON.stringify(seen.body)).not.toContain(token);
    // Non-streaming usage is read from the JSON body.
    expect(f.usage).toEqual([{ inputTokens: 7, outputTokens: 3 }]);
  });

  it("unknown and revoked tokens get 401 and nothing reaches the upstream", async () => {
    await using f = await setup();
    const token = f.grant();
    f.gw.revokeToken(token);

    for (const t of [undefined, "pbgw_not-a-real-token", "sk-something-else", token]) {
      const res = await chat(f.gw, t, chatBody());
      expect(res.status).toBe(401);
      const err = await errorOf(res);
      expect(err.type).toBe("authentication_error");
      expect(err.code).toBe("unauthorized");
    }
    expect(f.model.requests).toHaveLength(0);
  });

  it("a shared token is authorised per session: each bound session as its own run, unknown, unbound, ended or missing ones refused", async () => {
    await using f = await setup([{ text: "ok", usage: { prompt_tokens: 5, completion_tokens: 1 } }]);
    const usageA: Usage[] = [];
    const usageB: Usage[] = [];
    const tokenA = f.grant({ runId: "run_a", onUsage: (u) => usageA.push(u) });
    const tokenB = f.grant({ runId: "run_b", onUsage: (u) => usageB.push(u), allowedModels: ["other/model"] });
    const shared = f.gw.issueSharedToken();
    const otherShared = f.gw.issueSharedToken();
    f.gw.bindSession(shared, "ses_a", tokenA);
    f.gw.bindSession(shared, "ses_b", tokenB);
    f.gw.bindSession(otherShared, "ses_other", tokenA);
    expect(() => f.gw.bindSession(shared, "ses_x", "pbgw_never-issued")).toThrow();
    expect(() => f.gw.bindSession(tokenA, "ses_x", tokenB)).toThrow();

    const as = (token: string, session?: string, extra: Record<string, string> = {}, body = chatBody()) =>
      fetch(`${f.gw.url}/chat/completions`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${token}`,
          ...(session ? { "x-session-id": session, "x-session-affinity": session } : {}),
          ...extra,
        },
        body: JSON.stringify(body),
      });

    // A bound session is its run: the real key upstream, metered to that run only.
    const ok = await as(shared, "ses_a");
    expect(ok.status).toBe(200);
    await ok.text();
    expect(f.model.requests.at(-1)!.authorization).toBe(`Bearer ${REAL_KEY}`);
    expect(usageA).toEqual([{ inputTokens: 5, outputTokens: 1 }]);
    expect(usageB).toEqual([]);
    // ... and its run's allowed models: run_b may not call MODEL.
    const wrongModel = await as(shared, "ses_b");
    expect(wrongModel.status).toBe(403);
    expect((await errorOf(wrongModel)).code).toBe("model_not_allowed");

    const refused = async (res: Response, status: number, code: string) => {
      expect(res.status).toBe(status);
      expect((await errorOf(res)).code).toBe(code);
    };
    await refused(await as(shared), 401, "unauthorized");
    await refused(await as(shared, "ses_unknown"), 403, "session_not_bound");
    // A session bound under another shared server's token is not this one's.
    await refused(await as(shared, "ses_other"), 403, "session_not_bound");
    // Two different sessions named at once.
    await refused(await as(shared, "ses_a", { "x-session-affinity": "ses_b" }), 403, "session_not_bound");
    // The run token itself does not accept a session header as a way out of its grant.
    const direct = await as(tokenB, "ses_a");
    expect(direct.status).toBe(403);

    f.gw.unbindSession(shared, "ses_a");
    await refused(await as(shared, "ses_a"), 403, "session_not_bound");
    // Revoking a run's token ends its bound session too.
    f.gw.bindSession(shared, "ses_a", tokenA);
    f.gw.revokeToken(tokenA);
    await refused(await as(shared, "ses_a"), 403, "session_not_bound");
    // Revoking the shared token refuses everything sent with it.
    f.gw.revokeToken(shared);
    await refused(await as(shared, "ses_b", {}, chatBody({ model: "other/model" })), 401, "unauthorized");
    expect(usageA).toHaveLength(1);
    expect(f.model.requests).toHaveLength(1);
  });

  it("a shared token asks parentOf about a session not bound yet, binds it to its parent's live run, and refuses otherwise", async () => {
    await using f = await setup([{ text: "ok", usage: { prompt_tokens: 2, completion_tokens: 1 } }]);
    const usage: Usage[] = [];
    const runToken = f.grant({ runId: "run_sub", onUsage: (u) => usage.push(u) });
    const endedToken = f.grant({ runId: "run_ended" });
    const asked: string[] = [];
    const shared = f.gw.issueSharedToken({
      parentOf: async (id) => {
        asked.push(id);
        if (id === "ses_child") return "ses_parent";
        if (id === "ses_boom") throw new Error("server unreachable");
        // A parent whose run has ended, and one never bound: neither gives the child a run.
        if (id === "ses_forged") return "ses_ended";
        if (id === "ses_orphan") return "ses_never_bound";
        return undefined;
      },
    });
    f.gw.bindSession(shared, "ses_parent", runToken);
    f.gw.bindSession(shared, "ses_ended", endedToken);
    f.gw.revokeToken(endedToken);
    const as = (session: string) =>
      fetch(`${f.gw.url}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${shared}`, "x-session-id": session },
        body: JSON.stringify(chatBody()),
      });
    // A subagent's request that outran the event binding its session: resolved, then bound.
    const first = await as("ses_child");
    expect(first.status).toBe(200);
    await first.text();
    const second = await as("ses_child");
    expect(second.status).toBe(200);
    await second.text();
    expect(asked.filter((id) => id === "ses_child")).toHaveLength(1);
    expect(usage).toEqual([
      { inputTokens: 2, outputTokens: 1 },
      { inputTokens: 2, outputTokens: 1 },
    ]);
    for (const id of ["ses_nobody", "ses_boom", "ses_forged", "ses_orphan"]) {
      const res = await as(id);
      expect(res.status).toBe(403);
      expect((await errorOf(res)).code).toBe("session_not_bound");
    }
    // Once its run ends, the resolved session is refused like a bound one.
    f.gw.revokeToken(runToken);
    expect((await as("ses_child")).status).toBe(403);
    expect(f.model.requests).toHaveLength(2);
  });

  it("a restarted gateway on the same port accepts a restored token, refuses strings it never issues, and keeps it out of logs", async () => {
    await using first = await setup([{ text: "before" }, { text: "after" }]);
    const token = first.grant();
    const port = first.gw.port;
    await first.gw.close();
    const lines: string[] = [];
    const gw = await createModelGateway({
      upstreamBaseUrl: first.model.baseUrl,
      port,
      log: createLogger({ level: "debug", write: (l) => lines.push(l) }),
    });
    try {
      expect(gw.url).toBe(`http://127.0.0.1:${port}/v1`);
      expect((await chat(gw, token, chatBody())).status).toBe(401); // unknown until restored
      const usage: Usage[] = [];
      const grant: GatewayGrant = {
        runId: "run_test",
        upstreamKey: async () => REAL_KEY,
        allowedModels: [MODEL],
        onUsage: (u) => usage.push(u),
      };
      gw.restoreToken(token, grant);
      expect((await chat(gw, token, chatBody())).status).toBe(200);
      for (const bad of ["", "pbgw_short", "sk-or-v1-abc", `${token}x`])
        expect(() => gw.restoreToken(bad, grant)).toThrow(TypeError);
      expect(lines.join("\n")).not.toContain(token);
    } finally {
      await gw.close();
    }
  });

  it("revoking a token aborts its request in flight", async () => {
    await using f = await setup([{ hang: true }]);
    const token = f.grant();
    const pending = chat(f.gw, token, chatBody());
    const seen = await f.model.nextRequest(MODEL);
    f.gw.revokeToken(token);

    const res = await pending;
    expect(res.status).toBe(401);
    await seen.closed; // the upstream connection was dropped, not left hanging
  });

  it("revoking a token mid-stream cuts the client's stream", async () => {
    await using f = await setup([{ stallAfter: "partial" }]);
    const token = f.grant();
    const res = await chat(f.gw, token, chatBody({ stream: true }));
    const reader = res.body!.getReader();
    await reader.read();
    const seen = f.model.requests[0]!;

    f.gw.revokeToken(token);
    // The stream errors instead of ending cleanly: a half answer must not look complete.
    await expect(reader.read()).rejects.toThrow();
    await seen.closed;
  });

  it("a model outside the grant gets 403 and nothing reaches the upstream", async () => {
    await using f = await setup();
    const token = f.grant();
    const res = await chat(f.gw, token, chatBody({ model: "openai/gpt-5-expensive" }));
    expect(res.status).toBe(403);
    expect((await errorOf(res)).code).toBe("model_not_allowed");
    expect(f.model.requests).toHaveLength(0);
  });

  it("streaming is passed through unbuffered", async () => {
    const delay = 150;
    // 5 text chunks of 16 chars plus role and finish chunks: 6 pauses between them.
    await using f = await setup([{ text: "abcdefghijklmnop".repeat(5), chunkDelayMs: delay }]);
    const token = f.grant();
    const res = await chat(f.gw, token, chatBody({ stream: true }));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");

    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let firstAt = 0;
    let text = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!firstAt) firstAt = Date.now();
      text += decoder.decode(value, { stream: true });
    }
    const endAt = Date.now();
    expect(text.startsWith("data: ")).toBe(true);
    expect(text).toContain("data: [DONE]");
    // Buffering would deliver everything at once at the end.
    expect(endAt - firstAt).toBeGreaterThan(delay * 4);
  });

  it("usage from the stream's final chunk is reported via onUsage", async () => {
    await using f = await setup([
      { text: "counted", usage: { prompt_tokens: 1234, completion_tokens: 56, cost: 0.0042 } },
    ]);
    const token = f.grant();
    const res = await chat(f.gw, token, chatBody({ stream: true, stream_options: { foo: 1 } }));
    await res.text();

    await waitFor(() => f.usage.length > 0, { what: "usage", timeoutMs: 5000 });
    expect(f.usage).toEqual([{ inputTokens: 1234, outputTokens: 56, costUsd: 0.0042 }]);
    // The gateway asked for usage in the stream; other stream options are not forwarded.
    expect((f.model.requests[0]!.body as unknown as { stream_options: unknown }).stream_options).toEqual({
      include_usage: true,
    });
  });

  it("the usage scanner copes with lines split anywhere across chunks", () => {
    const stream =
      'data: {"choices":[{"delta":{"content":"héllo ✓"}}]}\r\n\r\n' +
      'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":22,"cost":0.5}}\n\n' +
      "data: [DONE]\n\n";
    const bytes = Buffer.from(stream, "utf8");
    const scanner = createSseUsageScanner();
    // One byte at a time splits every line and every multi-byte character.
    for (let i = 0; i < bytes.length; i++) scanner.push(bytes.subarray(i, i + 1));
    expect(scanner.end()).toEqual({ inputTokens: 11, outputTokens: 22, costUsd: 0.5 });

    // Responses API: usage arrives in `response.completed`, in a last line without a newline.
    const responses = createSseUsageScanner();
    responses.push(
      Buffer.from(
        'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":3,',
      ),
    );
    responses.push(Buffer.from('"output_tokens":4}}}'));
    expect(responses.end()).toEqual({ inputTokens: 3, outputTokens: 4 });

    const malformed = createSseUsageScanner();
    malformed.push(Buffer.from('data: {"usage": nope\n\ndata: [DONE]\n\n'));
    expect(malformed.end()).toBeUndefined();
  });

  it("upstream 500 and 429 with retry-after pass through with their status", async () => {
    await using f = await setup([
      {
        respond: (req) =>
          req.lastUser === "rate"
            ? { error: { status: 429, message: "slow down", headers: { "retry-after": "7" } } }
            : { error: { status: 500, message: "upstream exploded" } },
      },
    ]);
    const token = f.grant();

    const r500 = await chat(f.gw, token, chatBody());
    expect(r500.status).toBe(500);
    expect((await errorOf(r500)).message).toBe("upstream exploded");

    const r429 = await chat(f.gw, token, chatBody({ messages: [{ role: "user", content: "rate" }] }));
    expect(r429.status).toBe(429);
    expect(r429.headers.get("retry-after")).toBe("7");
    expect((await errorOf(r429)).message).toBe("slow down");
    expect(f.usage).toEqual([]);
  });

  it("an unreachable upstream answers 502", async () => {
    // A port that was just free: nothing listens there.
    const probe = http.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));

    await using f = await setup(undefined, { upstreamBaseUrl: `http://127.0.0.1:${port}/v1` });
    const res = await chat(f.gw, f.grant(), chatBody());
    expect(res.status).toBe(502);
    const err = await errorOf(res);
    expect(err.code).toBe("bad_gateway");
    expect(err.message).toContain("ECONNREFUSED");
  });

  it("a run without a model key gets 401 with a clear message", async () => {
    await using f = await setup();
    const token = f.grant({ upstreamKey: async () => undefined });
    const res = await chat(f.gw, token, chatBody());
    expect(res.status).toBe(401);
    const err = await errorOf(res);
    expect(err.message).toBe(NO_MODEL_KEY_MESSAGE);
    expect(err.message).toContain("OPENROUTER_API_KEY");
    expect(err.code).toBe("no_model_key");
    expect(f.model.requests).toHaveLength(0);
  });

  it("the real key appears in no response body, response header or log line", async () => {
    await using f = await setup([
      {
        respond: (req) =>
          req.lastUser === "echo"
            ? // Like real providers: "Incorrect API key provided: sk-...".
              {
                error: {
                  status: 401,
                  message: `Incorrect API key provided: ${req.authorization}`,
                  headers: { "x-debug-key": REAL_KEY },
                },
              }
            : { text: "fine" },
      },
    ]);
    const token = f.grant();
    const seen: string[] = [];
    const record = async (res: Response) => {
      seen.push(String(res.status), JSON.stringify([...res.headers]), await res.text());
    };
    await record(await chat(f.gw, token, chatBody()));
    await record(await chat(f.gw, token, chatBody({ stream: true })));
    await record(await chat(f.gw, token, chatBody({ messages: [{ role: "user", content: "echo" }] })));
    await record(await chat(f.gw, token, chatBody({ model: "not/allowed" })));
    await record(await chat(f.gw, token, "{broken"));
    await record(await fetch(`${f.gw.url}/models`, { headers: { authorization: `Bearer ${token}` } }));

    expect(f.model.requests.length).toBeGreaterThanOrEqual(3);
    const echoed = seen.join("\n");
    expect(echoed).toContain("Incorrect API key provided: Bearer [redacted]");
    expect(echoed).not.toContain(REAL_KEY);
    expect(f.lines.length).toBeGreaterThan(0);
    expect(f.lines.join("")).not.toContain(REAL_KEY);
    expect(f.lines.join("")).not.toContain(token);
  });

  it("an @ai-sdk/openai-compatible style client reaches ${baseURL}/chat/completions", async () => {
    await using f = await setup([{ text: "via sdk path" }]);
    // The SDK joins `${baseURL}${path}` with path "/chat/completions", and sends the API key as a bearer.
    const baseURL = f.gw.url;
    expect(baseURL).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
    const res = await fetch(`${baseURL}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${f.grant()}` },
      body: JSON.stringify(chatBody({ stream: true })),
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("via sdk path".slice(0, 12));
    expect(f.model.requests[0]!.path).toBe("/v1/chat/completions");
  });

  it("other OpenAI routes pass through, and unknown routes answer 404", async () => {
    await using f = await setup();
    const token = f.grant();
    const auth = { authorization: `Bearer ${token}` };

    const models = await fetch(`${f.gw.url}/models`, { headers: auth });
    expect(models.status).toBe(200);
    expect(((await models.json()) as { data: { id: string }[] }).data.map((m) => m.id)).toContain(MODEL);

    // The scripted model has no /completions route: its own 404 proves the request got there.
    const completions = await fetch(`${f.gw.url}/completions`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "hi" }),
    });
    expect(completions.status).toBe(404);
    expect((await errorOf(completions)).message).toBe("no route POST /v1/completions");

    const unknown = await fetch(`${f.gw.url}/embeddings`, { method: "POST", headers: auth, body: "{}" });
    expect(unknown.status).toBe(404);
    expect((await errorOf(unknown)).code).toBe("not_found");
  });

  it("a malformed body gets 400 and an oversized body 413, and the gateway keeps serving", async () => {
    await using f = await setup([{ text: "still here" }], { maxBodyBytes: 4096 });
    const token = f.grant();

    const bad = await chat(f.gw, token, "{not json");
    expect(bad.status).toBe(400);
    expect((await errorOf(bad)).code).toBe("invalid_request");

    const notObject = await chat(f.gw, token, "[1,2]");
    expect(notObject.status).toBe(400);

    const big = await chat(f.gw, token, chatBody({ messages: [{ role: "user", content: "x".repeat(10_000) }] }));
    expect(big.status).toBe(413);
    expect((await errorOf(big)).code).toBe("payload_too_large");

    const ok = await chat(f.gw, token, chatBody());
    expect(ok.status).toBe(200);
    expect(f.model.requests).toHaveLength(1);
  });

  it("a client that disconnects mid-stream aborts the upstream request", async () => {
    await using f = await setup([{ stallAfter: "partial" }]);
    const abort = new AbortController();
    const res = await chat(f.gw, f.grant(), chatBody({ stream: true }), abort.signal);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain("partial");

    const seen = f.model.requests[0]!;
    abort.abort();
    await seen.closed; // would hang forever if the gateway kept the upstream open
  });
});

/** A raw HTTP request that declares a body of `declared` bytes, sends `sent` of them and stalls. */
function stalledRequest(
  port: number,
  token: string,
  declared: number,
  sent: number,
): Promise<{ status: Promise<number>; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n` +
          `authorization: Bearer ${token}\r\ncontent-length: ${declared}\r\n\r\n`,
      );
      socket.write(Buffer.alloc(sent, 0x20));
      let head = "";
      const status = new Promise<number>((res) => {
        socket.on("data", (d: Buffer) => {
          head += d.toString("latin1");
          const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
          if (m) res(Number(m[1]));
        });
        socket.on("close", () => res(0));
      });
      resolve({ status, socket });
    });
    socket.on("error", reject);
  });
}

describe("model gateway under a hostile agent", () => {
  it("only allow-listed fields reach the upstream: fallbacks, provider, plugins, query and custom headers dropped, n forced to 1, max_tokens clamped", async () => {
    await using f = await setup([{ text: "ok" }], { maxTokens: 1000 });
    const res = await fetch(`${f.gw.url}/chat/completions?api_key=x&route=fallback`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${f.grant()}`,
        "x-custom": "1",
        "x-openrouter-provider": "expensive",
        "user-agent": "evil",
        "x-session-id": "ses_1",
      },
      body: JSON.stringify(
        chatBody({
          models: ["openai/gpt-5-expensive", "anthropic/claude-opus"],
          route: "fallback",
          provider: { order: ["expensive"] },
          plugins: [{ id: "web" }],
          transforms: ["middle-out"],
          service_tier: "priority",
          n: 64,
          max_tokens: 100_000_000,
          max_completion_tokens: 5_000_000,
          reasoning: { max_tokens: 9_000_000 },
          temperature: 0.2,
          tool_choice: "auto",
        }),
      ),
    });
    expect(res.status).toBe(200);
    await res.text();
    const seen = f.model.requests[0]!;
    expect(seen.path).toBe("/v1/chat/completions");
    expect(Object.keys(seen.body).sort()).toEqual(
      [
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "model",
        "n",
        "reasoning",
        "temperature",
        "tool_choice",
        "tools",
      ].sort(),
    );
    const body = seen.body as unknown as Record<string, unknown>;
    expect(body.n).toBe(1);
    expect(body.max_tokens).toBe(1000);
    expect(body.max_completion_tokens).toBe(1000);
    expect(body.reasoning).toEqual({ max_tokens: 1000 });
    expect(body.temperature).toBe(0.2);
    const forwarded = Object.keys(seen.headers).sort();
    for (const h of forwarded)
      expect([
        "accept",
        "accept-encoding",
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "http-referer",
        "x-title",
        "x-session-id",
        "x-session-affinity",
      ]).toContain(h);
    expect(seen.headers["x-custom"]).toBeUndefined();
    expect(seen.headers["x-openrouter-provider"]).toBeUndefined();
  });

  it("what OpenCode sends passes unchanged, and a repeated key is forwarded once, as the gateway checked it", () => {
    // The fields OpenCode 1.18 sends to an OpenAI-compatible provider (recorded from the e2e tests).
    const opencode = {
      model: MODEL,
      max_tokens: 32000,
      messages: [
        { role: "system", content: "s" },
        { role: "user", content: [{ type: "text", text: 'héllo "✓"' }] },
      ],
      tools: [{ type: "function", function: { name: "bash", parameters: { type: "object" } } }],
      tool_choice: "auto",
      stream: true,
      stream_options: { include_usage: true },
    };
    const out = rewriteBody(Buffer.from(JSON.stringify(opencode)), "/chat/completions", 32000);
    expect(JSON.parse(Buffer.concat(out.pieces).toString("utf8"))).toEqual(opencode);
    expect(out.dropped).toEqual([]);

    const dup = rewriteBody(
      Buffer.from(`{"model":"evil/model","messages":[],"model":"${MODEL}"}`),
      "/chat/completions",
      10,
    );
    const text = Buffer.concat(dup.pieces).toString("utf8");
    expect(dup.model).toBe(MODEL);
    expect(text.split('"model"')).toHaveLength(2);
    expect(JSON.parse(text)).toEqual({ messages: [], model: MODEL });
    for (const bad of ['{"model":"a"', '{"model":"a"}x', '{"messages":[}', "[1]", '{"model":1}'])
      expect(() => rewriteBody(Buffer.from(bad), "/chat/completions", 10)).toThrow();
  });

  it("an upstream that echoes the key in a 200 answer, streamed or not, in headers or body, never hands it to the agent", async () => {
    const echo = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const auth = String(req.headers.authorization);
        const stream = (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { stream?: boolean }).stream === true;
        if (!stream) {
          res.writeHead(200, { "content-type": "application/json", "x-echo": auth, "x-other": "fine" });
          res.end(JSON.stringify({ choices: [{ message: { role: "assistant", content: `your key: ${auth}` } }] }));
          return;
        }
        res.writeHead(200, { "content-type": "text/event-stream", "x-echo": auth });
        const event = `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: `your key: ${auth}` } }] })}\n\n`;
        // The key split across two writes: a scrubber that looks at one chunk at a time misses it.
        const cut = event.indexOf(REAL_KEY) + 10;
        res.write(event.slice(0, cut));
        setTimeout(() => res.end(event.slice(cut) + "data: [DONE]\n\n"), 50);
      });
    });
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    try {
      await using f = await setup([], {
        upstreamBaseUrl: `http://127.0.0.1:${(echo.address() as AddressInfo).port}/v1`,
      });
      const token = f.grant();
      for (const stream of [false, true]) {
        const res = await chat(f.gw, token, chatBody({ stream }));
        expect(res.status).toBe(200);
        const seen = JSON.stringify([...res.headers]) + (await res.text());
        expect(seen).toContain("your key: Bearer [redacted]");
        expect(seen).not.toContain(REAL_KEY);
        expect(seen).not.toContain("x-echo");
      }
    } finally {
      echo.closeAllConnections();
      await new Promise<void>((r) => echo.close(() => r()));
    }
  });

  it("twenty stalled large-body requests from one token are refused or cut, and the gateway keeps serving others", async () => {
    await using f = await setup([{ text: "still here" }], { bodyTimeoutMs: 3000, maxInFlightPerToken: 4 });
    const attacker = f.grant({ runId: "run_attacker" });
    const other = f.grant({ runId: "run_other" });
    // Declared over the cap: refused before a byte of the body is read.
    const huge = await stalledRequest(f.gw.port, attacker, 32 * 1024 * 1024, 1024);
    expect(await huge.status).toBe(413);
    const stalled = await Promise.all(
      Array.from({ length: 20 }, () => stalledRequest(f.gw.port, attacker, 4 * 1024 * 1024, 64 * 1024)),
    );
    try {
      // Another run is served meanwhile.
      const ok = await chat(f.gw, other, chatBody());
      expect(ok.status).toBe(200);
      await ok.text();
      const statuses = await Promise.all(stalled.map((s) => s.status));
      expect(statuses.filter((s) => s === 429)).toHaveLength(16);
      expect(statuses.filter((s) => s === 408)).toHaveLength(4);
      // Their slots are free again.
      const again = await chat(f.gw, attacker, chatBody());
      expect(again.status).toBe(200);
      await again.text();
    } finally {
      for (const s of stalled) s.socket.destroy();
    }
  });

  it("a valid big body still works, and reaches the upstream intact", async () => {
    await using f = await setup([{ text: "read it" }]);
    const content = "é".repeat(3 * 1024 * 1024); // 6 MB of UTF-8
    const res = await chat(f.gw, f.grant(), chatBody({ messages: [{ role: "user", content }] }));
    expect(res.status).toBe(200);
    await res.text();
    expect(f.model.requests[0]!.lastUser).toBe(content);
  });
});
