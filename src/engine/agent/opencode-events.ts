/**
 * Maps OpenCode's bus events (read with zod at the boundary) to Patchbay's `builder.event`
 * rows. Token-level deltas are not mapped: a text part is recorded once, when it ends, so the
 * stored log grows with the work done, not with the tokens.
 */
import path from "node:path";
import * as z from "zod";
import type { BuilderEventData } from "../events/schema.ts";

const MAX_OUTPUT = 4000;
const MAX_INPUT_STRING = 1000;

const Part = z
  .object({
    id: z.string(),
    sessionID: z.string(),
    messageID: z.string(),
    type: z.string(),
    text: z.string().optional(),
    synthetic: z.boolean().optional(),
    time: z.object({ start: z.number().optional(), end: z.number().optional() }).optional(),
    tool: z.string().optional(),
    callID: z.string().optional(),
    state: z
      .object({
        status: z.string(),
        input: z.unknown().optional(),
        output: z.string().optional(),
        title: z.string().optional(),
        error: z.string().optional(),
      })
      .optional(),
    reason: z.string().optional(),
    tokens: z.object({ input: z.number(), output: z.number() }).partial().optional(),
  })
  .loose();

export const OpencodeEvent = z
  .object({ type: z.string(), properties: z.record(z.string(), z.unknown()).default({}) })
  .loose();
export type OpencodeEvent = z.infer<typeof OpencodeEvent>;

const truncate = (s: string, n: number) => (s.length > n ? `${s.slice(0, n)}… [${s.length - n} more characters]` : s);

function shrinkInput(input: unknown): unknown {
  if (typeof input === "string") return truncate(input, MAX_INPUT_STRING);
  if (Array.isArray(input)) return input.slice(0, 50).map(shrinkInput);
  if (input && typeof input === "object")
    return Object.fromEntries(Object.entries(input as Record<string, unknown>).map(([k, v]) => [k, shrinkInput(v)]));
  return input;
}

/** Keeps per-session state needed to turn part updates into one row per meaningful change. */
export interface EventMapper {
  /** Returns the rows to record for one OpenCode event of our session (may be none). */
  map(event: OpencodeEvent): BuilderEventData[];
}

export function createEventMapper(opts: { sessionId: string; workdir: string }): EventMapper {
  const roles = new Map<string, string>();
  const seenTool = new Set<string>();
  const seenPart = new Set<string>();

  const rel = (file: string) => {
    const r = path.relative(opts.workdir, file);
    return r.startsWith("..") ? file : r;
  };

  return {
    map(event) {
      const p = event.properties;
      switch (event.type) {
        case "message.updated": {
          const info = z.object({ id: z.string(), sessionID: z.string(), role: z.string() }).safeParse(p.info);
          if (info.success && info.data.sessionID === opts.sessionId) roles.set(info.data.id, info.data.role);
          return [];
        }
        case "message.part.updated": {
          const parsed = Part.safeParse(p.part);
          if (!parsed.success || parsed.data.sessionID !== opts.sessionId) return [];
          const part = parsed.data;
          if (roles.get(part.messageID) === "user" || part.synthetic) return [];
          if (part.type === "text" || part.type === "reasoning") {
            if (!part.time?.end || !part.text || seenPart.has(part.id)) return [];
            seenPart.add(part.id);
            return [{ kind: part.type, text: part.text }];
          }
          if (part.type === "tool" && part.state && part.callID) {
            const status = part.state.status;
            if (status !== "running" && status !== "completed" && status !== "error") return [];
            const key = `${part.callID}:${status}`;
            if (seenTool.has(key)) return [];
            seenTool.add(key);
            return [
              {
                kind: "tool",
                tool: part.tool ?? "unknown",
                callId: part.callID,
                status,
                ...(part.state.title ? { title: part.state.title } : {}),
                ...(part.state.input !== undefined ? { input: shrinkInput(part.state.input) } : {}),
                ...(status === "completed" && part.state.output !== undefined
                  ? { output: truncate(part.state.output, MAX_OUTPUT) }
                  : {}),
                ...(status === "error" && part.state.error ? { error: truncate(part.state.error, MAX_OUTPUT) } : {}),
              },
            ];
          }
          if (part.type === "step-start") {
            if (seenPart.has(part.id)) return [];
            seenPart.add(part.id);
            return [{ kind: "step", phase: "start" }];
          }
          if (part.type === "step-finish") {
            if (seenPart.has(part.id)) return [];
            seenPart.add(part.id);
            return [
              {
                kind: "step",
                phase: "finish",
                ...(part.reason ? { reason: part.reason } : {}),
                tokens: { input: part.tokens?.input ?? 0, output: part.tokens?.output ?? 0 },
              },
            ];
          }
          return [];
        }
        case "file.edited": {
          const file = z.object({ file: z.string() }).safeParse(p);
          return file.success ? [{ kind: "file.edited", path: rel(file.data.file) }] : [];
        }
        case "session.error": {
          const err = z.object({ sessionID: z.string().optional(), error: z.unknown().optional() }).safeParse(p);
          if (!err.success || (err.data.sessionID && err.data.sessionID !== opts.sessionId)) return [];
          const { name, message } = describeOpencodeError(err.data.error);
          if (name === "MessageAbortedError") return [];
          return [{ kind: "error", code: name, message }];
        }
        default:
          return [];
      }
    },
  };
}

/** OpenCode errors are `{name, data: {message, statusCode?...}}`; make one readable line. */
export function describeOpencodeError(error: unknown): { name: string; message: string } {
  const e = z
    .object({
      name: z.string().default("UnknownError"),
      data: z.object({ message: z.string().optional(), statusCode: z.number().optional() }).loose().optional(),
      message: z.string().optional(),
    })
    .loose()
    .safeParse(error);
  if (!e.success) return { name: "UnknownError", message: String(error) };
  const status = e.data.data?.statusCode ? ` (HTTP ${e.data.data.statusCode})` : "";
  return { name: e.data.name, message: `${e.data.data?.message ?? e.data.message ?? e.data.name}${status}` };
}
