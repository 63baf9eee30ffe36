/**
 * Events as text, written once for every front: the CLI's progress lines, MCP's
 * `stream_events` text and its progress notifications.
 */
import type { RunEvent } from "./schema.ts";

/** One compact line for any event: `#id turn n` and what happened. */
export function describeEvent(ev: RunEvent): string {
  const head = `#${ev.id} turn ${ev.turn}`;
  if (ev.type === "run.status")
    return `${head} status ${ev.data.status}${ev.data.error ? ` (${ev.data.error.code}: ${ev.data.error.message})` : ""}`;
  const d = ev.data;
  const clip = (s: string) => (s.length > 200 ? s.slice(0, 197) + "..." : s).replace(/\s+/g, " ");
  switch (d.kind) {
    case "text":
    case "reasoning":
      return `${head} ${d.kind}: ${clip(d.text)}`;
    case "tool":
      return `${head} tool ${d.tool} ${d.status}${d.title ? `: ${clip(d.title)}` : ""}${d.error ? ` (${clip(d.error)})` : ""}`;
    case "file.edited":
      return `${head} edited ${d.path}`;
    case "step":
      return `${head} step ${d.phase}${d.reason ? ` (${d.reason})` : ""}`;
    case "error":
      return `${head} error ${d.code}: ${clip(d.message)}`;
    case "log":
      return `${head} log: ${clip(d.message)}`;
    case "prompt.images":
      return `${head} prompt images: ${d.images.map((i) => `${i.mimeType} ${i.bytes} B sha256:${i.sha256.slice(0, 12)}`).join(", ")}`;
    case "setup.started":
      return `${head} setup started: ${clip(d.commands.join(" && "))}`;
    case "setup.cached":
      return `${head} setup restored from cache ${d.key.slice(0, 12)}`;
    case "setup.finished":
      return `${head} setup ${d.status} in ${Math.round(d.durationMs)} ms${d.exitCode ? ` (exit ${d.exitCode})` : d.exitCode === null ? " (no exit code)" : ""}`;
    case "session.hibernated":
      return `${head} session hibernated after ${Math.round(d.idleMs / 1000)} s idle`;
    case "session.resumed":
      return `${head} session resumed in ${Math.round(d.wakeMs)} ms`;
  }
}

/**
 * A progress line for an event that marks a meaningful agent step (a tool call finishing,
 * a file edited, a status change, an error), or undefined for the rest (text deltas,
 * tool calls still running, step boundaries), so progress stays one line per step.
 */
export function describeStep(ev: RunEvent): string | undefined {
  if (ev.type === "run.status") return `status: ${ev.data.status}${ev.data.error ? ` (${ev.data.error.code})` : ""}`;
  const d = ev.data;
  switch (d.kind) {
    case "tool":
      if (d.status !== "completed" && d.status !== "error") return undefined;
      return `${d.tool} ${d.status === "error" ? "failed" : "done"}${d.title ? `: ${d.title}` : ""}`;
    case "file.edited":
      return `edited ${d.path}`;
    case "error":
      return `error ${d.code}: ${d.message}`;
    case "setup.cached":
      return "setup restored from cache";
    case "setup.finished":
      return `setup ${d.status} (${Math.round(d.durationMs)} ms)`;
    default:
      return undefined;
  }
}
