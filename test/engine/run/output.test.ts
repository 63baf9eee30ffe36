/**
 * Structured output and image checks without an agent: how an answer's JSON is found and
 * checked, which schemas are refused, and which bytes count as which image.
 */
import { describe, expect, it } from "vitest";
import { assertFitsModelRequest, checkImages } from "../../../src/engine/run/images.ts";
import { createOutputSchemas, extractJson, readOutput, repairPrompt } from "../../../src/engine/run/output.ts";

const { compile: compileOutputSchema } = createOutputSchemas();

const SCHEMA = { type: "object", properties: { n: { type: "integer" } }, required: ["n"], additionalProperties: false };

describe("structured output", () => {
  it("takes the last fenced block, else the whole text", async () => {
    expect(extractJson('first\n```json\n{"n": 1}\n```\nthen\n```json\n{"n": 2}\n```\n')).toEqual({
      ok: true,
      value: { n: 2 },
    });
    expect(extractJson("```\n[1, 2]\n```")).toEqual({ ok: true, value: [1, 2] });
    expect(extractJson('  {"n": 3}\n')).toEqual({ ok: true, value: { n: 3 } });
    expect(extractJson("42")).toEqual({ ok: true, value: 42 });
    expect(extractJson("no json here").ok).toBe(false);
    expect(extractJson("").ok).toBe(false);
  });

  it("reports the validator's messages for an invalid value, and the value for a valid one", async () => {
    const v = compileOutputSchema(SCHEMA);
    expect(await readOutput(v, '```json\n{"n": 5}\n```')).toEqual({ output: { n: 5 }, outputError: null });
    const bad = await readOutput(v, '{"n": 1.5, "extra": true}');
    expect(bad.output).toBeNull();
    expect(bad.outputError).toEqual(["/ must NOT have additional properties (extra)", "/n must be integer"]);
    expect(repairPrompt(bad.outputError!)).toContain("- /n must be integer");
  });

  it("checks formats, and takes draft 2020-12 schemas by their $schema", async () => {
    const email = compileOutputSchema({ type: "string", format: "email" });
    expect((await readOutput(email, '"a@b.example"')).outputError).toBeNull();
    expect((await readOutput(email, '"nope"')).outputError).toEqual(['/ must match format "email"']);
    const tuple = compileOutputSchema({
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "array",
      prefixItems: [{ type: "number" }],
    });
    expect((await readOutput(tuple, '["x"]')).outputError).toEqual(["/0 must be number"]);
  });

  it("compiles two schemas with the same $id one after the other (each leaves ajv's cache)", async () => {
    const a = compileOutputSchema({ $id: "https://example.com/answer", type: "string" });
    const b = compileOutputSchema({ $id: "https://example.com/answer", type: "number" });
    expect((await readOutput(a, '"x"')).outputError).toBeNull();
    expect((await readOutput(b, "1")).outputError).toBeNull();
    expect((await readOutput(b, '"x"')).outputError).toEqual(["/ must be number"]);
  });

  it(
    "a backtracking pattern stalls only its checker, which is ended at the deadline",
    { timeout: 60_000 },
    async () => {
      const v = compileOutputSchema({ type: "string", pattern: "^(a+)+$" });
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 100);
      try {
        const started = Date.now();
        const r = await readOutput(v, JSON.stringify("a".repeat(40) + "!"));
        expect(r.outputError).toEqual([expect.stringMatching(/took over 10000 ms/)]);
        // The event loop kept turning meanwhile.
        expect(ticks).toBeGreaterThan(((Date.now() - started) / 100) * 0.5);
      } finally {
        clearInterval(ticker);
      }
    },
  );

  it("refuses schemas it cannot compile and schemas over 64 KB", async () => {
    for (const schema of [{ type: "strnig" }, { $ref: "https://example.com/x.json" }, { minLength: -1 }])
      expect(() => compileOutputSchema(schema)).toThrow(expect.objectContaining({ code: "invalid_output_schema" }));
    const big = { description: "x".repeat(64 * 1024) };
    expect(() => compileOutputSchema(big)).toThrow(/at most 65536/);
  });
});

describe("images", () => {
  const b64 = (...bytes: (number | string)[]) =>
    Buffer.concat(bytes.map((b) => (typeof b === "string" ? Buffer.from(b, "latin1") : Buffer.from([b])))).toString(
      "base64",
    );

  it("knows each type by its magic number and describes it by type, size and sha256", async () => {
    const ok = [
      { mimeType: "image/png" as const, data: b64(0x89, "PNG\r\n\x1a\n", "rest") },
      { mimeType: "image/jpeg" as const, data: b64(0xff, 0xd8, 0xff, 0xe0, "rest") },
      { mimeType: "image/gif" as const, data: b64("GIF89a", "rest") },
      { mimeType: "image/webp" as const, data: b64("RIFF", "\0\0\0\0", "WEBP", "VP8 ") },
    ];
    const checked = checkImages(ok);
    expect(checked.map((c) => c.description.mimeType)).toEqual(ok.map((o) => o.mimeType));
    expect(checked[0]!.description).toEqual({
      mimeType: "image/png",
      bytes: 12,
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(JSON.stringify(checked.map((c) => c.description))).not.toContain(ok[0]!.data);
  });

  it("refuses what its declared type does not match, and data that is not plain base64", async () => {
    const cases = [
      { mimeType: "image/png" as const, data: b64("GIF89a", "rest") },
      { mimeType: "image/jpeg" as const, data: b64("plain text") },
      { mimeType: "image/webp" as const, data: b64("RIFF", "\0\0\0\0", "WAVE") },
      { mimeType: "image/png" as const, data: "not base64!" },
    ];
    for (const img of cases)
      expect(() => checkImages([img]), img.data).toThrow(expect.objectContaining({ code: "invalid_image" }));
  });

  it("refuses images that together do not fit in one model request through the gateway", async () => {
    const img = (chars: number) => ({ mimeType: "image/png" as const, data: "A".repeat(chars) });
    const limit = 8 * 1024 * 1024;
    expect(() => assertFitsModelRequest([img(3 * 1024 * 1024), img(3 * 1024 * 1024)], limit)).not.toThrow();
    expect(() => assertFitsModelRequest([img(4 * 1024 * 1024), img(4 * 1024 * 1024)], limit)).toThrow(
      expect.objectContaining({
        code: "invalid_image",
        message: expect.stringMatching(/PATCHBAY_GATEWAY_MAX_BODY_BYTES/),
      }),
    );
  });
});
