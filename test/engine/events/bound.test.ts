import { describe, expect, it } from "vitest";
import { boundEvent, boundText, MAX_EVENT_TEXT_BYTES } from "../../../src/engine/events/bound.ts";
import type { NewRunEvent } from "../../../src/engine/events/schema.ts";

const text = (t: string): NewRunEvent => ({ type: "builder.event", turn: 1, data: { kind: "text", text: t } });

describe("bounded text", () => {
  it("text within the bound is kept as it is", () => {
    expect(boundText("héllo", 6)).toEqual({ text: "héllo", cut: 0 });
    const event = text("x".repeat(MAX_EVENT_TEXT_BYTES));
    expect(boundEvent(event)).toBe(event);
  });

  it("longer text is cut on a character boundary and says how many bytes were cut", () => {
    // "é" is 2 bytes, "😀" 4: a cut at byte 5 would split the emoji.
    const { text: cutText, cut } = boundText("éé😀tail", 5);
    expect(cutText).toBe("éé… [truncated 8 bytes]");
    expect(cut).toBe(8);
    expect(cutText).not.toContain("\uFFFD");
  });

  it("a 20 MB text, reasoning, log or error event is stored as 64 KB and a marker", () => {
    const huge = "word ".repeat(4 * 1024 * 1024);
    for (const data of [
      { kind: "text", text: huge },
      { kind: "reasoning", text: huge },
      { kind: "log", message: huge },
      { kind: "error", code: "model_error", message: huge },
    ] as const) {
      const bounded = boundEvent({ type: "builder.event", turn: 1, data });
      const json = JSON.stringify(bounded);
      expect(json.length).toBeLessThan(MAX_EVENT_TEXT_BYTES + 200);
      expect(json).toContain(`… [truncated ${huge.length - MAX_EVENT_TEXT_BYTES} bytes]`);
    }
  });
});
