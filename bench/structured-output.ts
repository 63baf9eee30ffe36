/**
 * How should a run's `outputSchema` reach the model? Two ways, measured on the scripted model
 * with the real OpenCode: (a) an instruction appended to the prompt (the schema in the user
 * message, the answer a fenced JSON block in the final text), and (b) OpenCode's own
 * `format: {type: "json_schema"}` (a `StructuredOutput` tool whose input schema is the output
 * schema, tool choice forced to `required` on every step, and a system instruction). Each
 * answers the same schema after one `write` step; we record every model request's bytes.
 *
 *   npx tsx bench/structured-output.ts   (results: bench/results/structured-output.md)
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createOpencodeClient, createOpencodeServer } from "@opencode-ai/sdk/v2";
import { buildOpencodeConfig, opencodeEnv, PROVIDER_ID } from "../src/engine/agent/opencode-config.ts";
import { outputInstruction } from "../src/engine/run/output.ts";
import { startScriptedModel, type RecordedRequest } from "../test/fixtures/scripted-model.ts";

const SCHEMA = {
  type: "object",
  properties: {
    title: { type: "string", description: "One-line title of the change" },
    risk: { type: "string", enum: ["low", "medium", "high"] },
    files: { type: "array", items: { type: "string" } },
  },
  required: ["title", "risk", "files"],
  additionalProperties: false,
};
const ANSWER = { title: "Add greet test", risk: "low", files: ["test.js"] };
const WRITE = { name: "write", args: { filePath: "notes.txt", content: "hello\n" } };
const PROMPT = "Write notes.txt, then describe the change.";

async function main(): Promise<void> {
  const model = await startScriptedModel({
    scripts: {
      instruction: [[{ toolCalls: [WRITE] }, { text: "Done.\n```json\n" + JSON.stringify(ANSWER) + "\n```" }]],
      tool: [[{ toolCalls: [WRITE] }, { toolCalls: [{ name: "StructuredOutput", args: ANSWER }] }]],
      plain: [[{ toolCalls: [WRITE] }, { text: "Done." }]],
    },
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pb-so-"));
  const repo = path.join(dir, "repo");
  fs.mkdirSync(repo);
  execFileSync("git", ["init", "-q"], { cwd: repo });
  const config = buildOpencodeConfig({
    modelBaseUrl: model.baseUrl,
    modelToken: "bench",
    modelId: "plain",
    extraModelIds: ["instruction", "tool"],
  });
  Object.assign(process.env, opencodeEnv(config, "bench-password"), { HOME: dir });
  const server = await createOpencodeServer({ port: 0, timeout: 60_000, config });
  try {
    const client = createOpencodeClient({
      baseUrl: server.url,
      directory: repo,
      headers: { authorization: `Basic ${Buffer.from("opencode:bench-password").toString("base64")}` },
    });
    const rows: string[] = [];
    for (const [modelId, extra] of [
      ["plain", {}],
      ["instruction", {}],
      ["tool", { format: { type: "json_schema" as const, schema: SCHEMA } }],
    ] as const) {
      const session = (await client.session.create({ title: "bench" })).data!.id;
      const text = modelId === "instruction" ? `${PROMPT}\n\n${outputInstruction(SCHEMA)}` : PROMPT;
      const t0 = Date.now();
      const res = await client.session.prompt({
        sessionID: session,
        parts: [{ type: "text", text }],
        model: { providerID: PROVIDER_ID, modelID: modelId },
        ...extra,
      });
      const ms = Date.now() - t0;
      const info = res.data?.info as { structured?: unknown; error?: unknown } | undefined;
      const reqs = model.agentRequests(modelId);
      const bytes = reqs.map((r) => JSON.stringify(r.body).length);
      const toolChoice = reqs.map((r: RecordedRequest) => (r.body as { tool_choice?: unknown }).tool_choice ?? "-");
      rows.push(
        `| ${modelId} | ${reqs.length} | ${bytes.join(" + ")} = ${bytes.reduce((a, b) => a + b, 0)} | ${JSON.stringify(toolChoice)} | ${ms} | ${info?.structured !== undefined ? "structured" : info?.error ? "error" : "text"} |`,
      );
    }
    console.log("| approach | model requests | request bytes | tool_choice | ms | answer |");
    console.log("|---|---|---|---|---|---|");
    for (const r of rows) console.log(r);
  } finally {
    server.close();
    await model.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
