/**
 * `images` end to end: the real engine, real OpenCode in the local sandbox and the scripted
 * model, over REST and MCP (Streamable HTTP) on 127.0.0.1. An image reaches the model's chat
 * completion request as an `image_url` part; what is not an image, too much, or meant for a
 * text-only model is refused before anything starts; the log keeps only a description.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Client } from "@modelcontextprotocol/sdk/client/index.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOADED } from "../support/harness.ts";
import { callApi, walkFiles } from "../support/http.ts";
import { REPO_FILES, serveMcp, TURN_CALL, type McpHarness } from "../support/mcp.ts";
import { pollUntilTurnOver } from "../support/poll.ts";

const API = "/api/v1/coding-agent";
/** A real 1×1 PNG (OpenCode refuses image bytes it cannot decode) and a 1×1 GIF. */
const PNG = Buffer.from(
  "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154789c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082",
  "hex",
).toString("base64");
const GIF = "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
const sha256 = (b64: string) => createHash("sha256").update(Buffer.from(b64, "base64")).digest("hex");

let h: McpHarness;
let key: string;
let client: Client;

const api = (method: string, p: string, body?: unknown) => callApi(h.url.origin, key, method, p, body);

const start = (images: unknown, modelId = "test/vision") =>
  api("POST", `${API}/runs`, {
    repository: "acme/web",
    prompt: "What is in the picture?",
    modelId,
    validationMode: "minimal",
    images,
  });

/** The image_url parts of the last user message of the model's last request for `modelId`. */
function imageUrls(modelId: string): string[] {
  const req = h.model.agentRequests(modelId).at(-1)!;
  const user = req.body.messages.filter((m) => m.role === "user").at(-1)!;
  const parts = Array.isArray(user.content) ? (user.content as { type: string; image_url?: { url: string } }[]) : [];
  return parts.filter((p) => p.type === "image_url").map((p) => p.image_url!.url);
}

beforeAll(async () => {
  h = await serveMcp({
    repos: { "acme/web": REPO_FILES },
    model: {
      scripts: {
        "test/vision": [[{ text: "A green pixel." }], [{ text: "A black pixel." }]],
        "test/text-only": [[{ text: "I cannot see." }]],
      },
    },
    env: { OPENROUTER_API_KEY: "sk-or-v1-test-images", PATCHBAY_TEXT_ONLY_MODELS: "test/text-only" },
  });
  key = (await h.pb.keys.create({ name: "rw", scopes: ["read:builder", "write:builder"] })).key;
  ({ client } = await h.connect(key));
}, LOADED.hookMs);

afterAll(async () => {
  await h?.close();
}, LOADED.hookMs);

describe("images", { timeout: LOADED.testMs }, () => {
  let runId: string;

  it("an image on a run reaches the model as an image_url part; the log keeps its type, size and sha256 only", async () => {
    const started = await start([{ data: PNG, mimeType: "image/png" }]);
    expect(started.status).toBe(201);
    runId = started.json.id;
    const run = await pollUntilTurnOver(() => api("GET", `${API}/runs/${runId}?events=1`), {
      timeoutMs: LOADED.turnWaitMs,
      what: `run ${runId}`,
    });
    expect(run.status).toBe("idle");
    expect(run.summary).toBe("A green pixel.");
    expect(imageUrls("test/vision")).toEqual([`data:image/png;base64,${PNG}`]);
    const described = run.events.filter((e: { data: { kind?: string } }) => e.data.kind === "prompt.images");
    expect(described).toHaveLength(1);
    expect(described[0].data.images).toEqual([
      { mimeType: "image/png", bytes: Buffer.from(PNG, "base64").length, sha256: sha256(PNG) },
    ]);
    // The store (runs, turns, event logs, patches) never holds the image itself.
    const stored = walkFiles(h.pb.dataDir).filter((f) => !f.includes(`${path.sep}sandboxes${path.sep}`));
    expect(stored.length).toBeGreaterThan(1);
    for (const f of stored) expect(fs.readFileSync(f, "latin1").includes(PNG), f).toBe(false);
  });

  it("an image on an MCP send_message reaches the model in the same session", async () => {
    const sent = (await client.callTool(
      {
        name: "send_message",
        arguments: { runId, prompt: "And this one?", images: [{ data: GIF, mimeType: "image/gif" }], wait: true },
      },
      undefined,
      TURN_CALL,
    )) as CallToolResult;
    expect(sent.isError).toBeFalsy();
    expect((sent.structuredContent as { summary: string }).summary).toBe("A black pixel.");
    expect(imageUrls("test/vision")).toEqual([`data:image/gif;base64,${GIF}`]);
  });

  it("refuses a non-image declared png, too many images and an image over 10 MB, starting nothing", async () => {
    const before = (await api("GET", `${API}/runs?limit=100`)).json.runs.length;
    const text = Buffer.from("just some text, not a picture at all").toString("base64");
    const fake = await start([{ data: text, mimeType: "image/png" }]);
    expect(fake.status).toBe(400);
    expect(fake.json.error.code).toBe("invalid_image");
    expect(fake.json.error.message).toMatch(/images\.0: the bytes are not a image\/png image/);
    // A real GIF declared as png is refused too: the magic number decides.
    const mislabelled = await start([{ data: GIF, mimeType: "image/png" }]);
    expect(mislabelled.json.error.code).toBe("invalid_image");
    const notBase64 = await start([{ data: "data:image/png;base64," + PNG, mimeType: "image/png" }]);
    expect(notBase64.json.error.code).toBe("invalid_image");

    const six = await start(Array.from({ length: 6 }, () => ({ data: PNG, mimeType: "image/png" })));
    expect(six.status).toBe(400);
    expect(six.json.error.code).toBe("invalid_request");
    expect(six.json.error.message).toMatch(/at most 5 images/);

    // 10 MB + 1 byte behind a PNG signature: a 14 MB body this route takes, refused by its decoded size.
    const huge = Buffer.alloc(10 * 1024 * 1024 + 1);
    Buffer.from(PNG, "base64").copy(huge);
    const big = await start([{ data: huge.toString("base64"), mimeType: "image/png" }]);
    expect(big.status).toBe(400);
    expect(big.json.error.code).toBe("invalid_image");
    expect(big.json.error.message).toMatch(/at most 10485760 decoded/);

    // 6 MB is a valid image, but not one a model request through the gateway (8 MiB by default) can carry.
    const sixMb = Buffer.alloc(6 * 1024 * 1024);
    Buffer.from(PNG, "base64").copy(sixMb);
    const unfit = await start([{ data: sixMb.toString("base64"), mimeType: "image/png" }]);
    expect(unfit.status).toBe(400);
    expect(unfit.json.error.code).toBe("invalid_image");
    expect(unfit.json.error.message).toMatch(/PATCHBAY_GATEWAY_MAX_BODY_BYTES/);

    const viaMcp = (await client.callTool({
      name: "start_run",
      arguments: {
        repository: "acme/web",
        prompt: "x",
        modelId: "test/vision",
        images: [{ data: text, mimeType: "image/png" }],
      },
    })) as CallToolResult;
    expect(viaMcp.isError).toBe(true);
    expect(JSON.stringify(viaMcp.content)).toContain("invalid_image");
    expect((await api("GET", `${API}/runs?limit=100`)).json.runs.length).toBe(before);
  });

  it("refuses images for a model the catalog marks text-only (400 model_without_vision), on a run and a message", async () => {
    const models = await api("GET", `${API}/models`);
    expect(models.json.textOnlyModels).toEqual(["test/text-only"]);
    const refused = await start([{ data: PNG, mimeType: "image/png" }], "test/text-only");
    expect(refused.status).toBe(400);
    expect(refused.json.error.code).toBe("model_without_vision");
    // Without images the same model runs; a message with an image to it is refused the same way.
    const plain = await start(undefined, "test/text-only");
    expect(plain.status).toBe(201);
    const settled = await pollUntilTurnOver(() => api("GET", `${API}/runs/${plain.json.id}`), {
      timeoutMs: LOADED.turnWaitMs,
      what: "text-only run",
    });
    expect(settled.status).toBe("idle");
    const message = await api("POST", `${API}/runs/${plain.json.id}/messages`, {
      prompt: "Look.",
      images: [{ data: PNG, mimeType: "image/png" }],
    });
    expect(message.status).toBe(400);
    expect(message.json.error.code).toBe("model_without_vision");
  });
});
