/**
 * Bounds on the text an event or a record carries. A model can answer megabytes in one part;
 * stored whole, that one event would be a megabyte on every stream replay and every
 * `?events=1`. Text is cut on a character boundary and says how much was cut.
 */
import type { NewRunEvent } from "./schema.ts";

/** Most UTF-8 bytes of one text field of an event (a text or reasoning part, a log or error message). */
export const MAX_EVENT_TEXT_BYTES = 64 * 1024;

/** `text` cut to at most `maxBytes` bytes of UTF-8, plus a marker naming the bytes cut; `cut` is 0 when it fitted. */
export function boundText(text: string, maxBytes: number): { text: string; cut: number } {
  // A UTF-16 unit is at most 3 bytes of UTF-8: short text needs no encoding to be known to fit.
  if (text.length * 3 <= maxBytes) return { text, cut: 0 };
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= maxBytes) return { text, cut: 0 };
  let end = maxBytes;
  // Back off continuation bytes (10xxxxxx) so the cut never splits a character.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  const cut = bytes.length - end;
  return { text: `${bytes.toString("utf8", 0, end)}… [truncated ${cut} bytes]`, cut };
}

/** The event with its text fields held to MAX_EVENT_TEXT_BYTES. */
export function boundEvent(event: NewRunEvent): NewRunEvent {
  if (event.type !== "builder.event") return event;
  const data = event.data;
  if (data.kind === "text" || data.kind === "reasoning") {
    const { text, cut } = boundText(data.text, MAX_EVENT_TEXT_BYTES);
    return cut ? { ...event, data: { ...data, text } } : event;
  }
  if (data.kind === "log" || data.kind === "error") {
    const { text, cut } = boundText(data.message, MAX_EVENT_TEXT_BYTES);
    return cut ? { ...event, data: { ...data, message: text } } : event;
  }
  return event;
}
