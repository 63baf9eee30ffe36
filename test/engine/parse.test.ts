import { describe, expect, it } from "vitest";
import * as z from "zod";
import { EngineError } from "../../src/engine/errors.ts";
import { parseInput } from "../../src/engine/parse.ts";

const Input = z.object({ prompt: z.string(), limits: z.object({ turns: z.number() }) }).strict();

function failure(f: () => unknown): EngineError {
  try {
    f();
  } catch (e) {
    if (e instanceof EngineError) return e;
    throw e;
  }
  throw new Error("expected parseInput to throw");
}

describe("parseInput", () => {
  it("returns the parsed value", () => {
    expect(parseInput(Input, { prompt: "hi", limits: { turns: 2 } })).toEqual({ prompt: "hi", limits: { turns: 2 } });
  });

  it("refuses an invalid value with invalid_request, the first issue's path in the message and every issue in details", () => {
    const e = failure(() => parseInput(Input, { prompt: 1, limits: { turns: "x" } }));
    expect(e.code).toBe("invalid_request");
    expect(e.message).toMatch(/^prompt: /);
    expect(e.details).toEqual({
      issues: [
        { path: "prompt", message: expect.any(String) },
        { path: "limits.turns", message: expect.any(String) },
      ],
    });
  });

  it("names a value that is wrong as a whole `body`, and leaves its issue path empty", () => {
    const e = failure(() => parseInput(Input, "text"));
    expect(e.message).toMatch(/^body: /);
    expect(e.details).toEqual({ issues: [{ path: "", message: expect.any(String) }] });
  });

  it("prefixes every path with the request part the value came from", () => {
    const e = failure(() => parseInput(Input, { prompt: "hi", limits: { turns: 1 }, extra: true }, "query"));
    expect(e.message).toMatch(/^query: /);
    expect(e.details).toEqual({ issues: [{ path: "query", message: expect.any(String) }] });
    const nested = failure(() => parseInput(Input, { prompt: "hi", limits: {} }, "body"));
    expect(nested.message).toMatch(/^body\.limits\.turns: /);
    expect(nested.details).toEqual({ issues: [{ path: "body.limits.turns", message: expect.any(String) }] });
  });
});
