/**
 * The built-in smoke model `patchbay doctor` runs a turn against: a loopback OpenAI-compatible
 * server whose agent answer is always the same two steps, a `write` of SMOKE_FILE and then a
 * closing text. It is all a smoke run needs to prove that the sandbox, OpenCode, the gateway
 * and the patch work together; the tests' scripted model (test/fixtures) does much more.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export const SMOKE_MODEL = "patchbay/doctor-smoke";
export const SMOKE_FILE = "PATCHBAY_DOCTOR.txt";
export const SMOKE_TEXT = "patchbay doctor smoke run\n";

interface ChatBody {
  model?: string;
  stream?: boolean;
  tools?: unknown[];
  messages?: { role: string }[];
}

/** The next assistant message: the write first, then (a tool result came back) the closing text. */
function nextStep(body: ChatBody): { text: string; toolCall?: { name: string; arguments: string } } {
  const messages = body.messages ?? [];
  const lastUser = messages.map((m) => m.role).lastIndexOf("user");
  const answered = messages.slice(lastUser + 1).some((m) => m.role === "tool");
  // Title and summary requests carry no tools: any short text does.
  if (!body.tools?.length) return { text: "Doctor smoke run" };
  if (answered) return { text: "Smoke run done." };
  return {
    text: "",
    toolCall: { name: "write", arguments: JSON.stringify({ filePath: SMOKE_FILE, content: SMOKE_TEXT }) },
  };
}

function stream(res: http.ServerResponse, model: string, step: ReturnType<typeof nextStep>): void {
  const base = { id: "chatcmpl-smoke", object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model };
  const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
    `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  res.write(chunk({ role: "assistant", content: step.text }));
  if (step.toolCall)
    res.write(chunk({ tool_calls: [{ index: 0, id: "call_smoke", type: "function", function: step.toolCall }] }));
  res.write(chunk({}, step.toolCall ? "tool_calls" : "stop"));
  const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
  res.write(`data: ${JSON.stringify({ ...base, choices: [], usage })}\n\n`);
  res.end("data: [DONE]\n\n");
}

export interface SmokeModel {
  /** The base URL to use as the model endpoint (ends with /v1). */
  baseUrl: string;
  close(): Promise<void>;
}

export async function startSmokeModel(): Promise<SmokeModel> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || !req.url?.endsWith("/chat/completions")) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "not found" } }));
        return;
      }
      let body: ChatBody;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as ChatBody;
      } catch {
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "bad json" } }));
        return;
      }
      const step = nextStep(body);
      if (body.stream) return stream(res, body.model ?? SMOKE_MODEL, step);
      const message = {
        role: "assistant",
        content: step.text || null,
        ...(step.toolCall ? { tool_calls: [{ id: "call_smoke", type: "function", function: step.toolCall }] } : {}),
      };
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          id: "chatcmpl-smoke",
          object: "chat.completion",
          model: body.model,
          choices: [{ index: 0, message, finish_reason: step.toolCall ? "tool_calls" : "stop" }],
          usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
