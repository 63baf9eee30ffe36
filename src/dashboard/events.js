// A run's live event stream: the typed client's follow(), which reads the API's SSE route with
// fetch (the session cookie goes along, same-origin) and, after a dropped connection, resumes
// with Last-Event-ID, so the server replays exactly what came after the last event shown.
import { client, noticeSignedOut } from "./api.js";
import { h, toast } from "./dom.js";

/**
 * Follow `runId`'s events into `list`; `onStatus(data)` hears every `run.status`.
 * Returns a function that closes the stream.
 */
export function followEvents(runId, list, onStatus) {
  const tools = new Map();
  const stop = new AbortController();
  const add = (ev, el) => {
    if (!el) return;
    el.dataset.eventId = String(ev.id);
    list.append(el);
    list.scrollTop = list.scrollHeight;
  };
  const show = (ev) => {
    if (ev.type === "run.status") {
      add(
        ev,
        h(
          "li",
          { class: "ev ev-status" },
          `Turn ${ev.turn}: ${ev.data.status}`,
          ev.data.error ? ` — ${ev.data.error.message}` : "",
        ),
      );
      onStatus(ev.data);
      return;
    }
    const d = ev.data;
    if (d.kind === "tool") {
      const label = `${d.tool}${d.title ? `: ${d.title}` : ""} (${d.status})`;
      const prior = tools.get(d.callId);
      const el = h(
        "li",
        { class: `ev ev-tool tool-${d.status}` },
        h("span", { class: "ev-kind" }, "tool"),
        label,
        d.error ? h("pre", {}, d.error) : null,
      );
      if (prior) prior.replaceWith(el);
      tools.set(d.callId, el);
      if (!prior) add(ev, el);
      return;
    }
    add(ev, describe(d));
  };
  // Like EventSource, it keeps reconnecting while the page is open (a server restart); the
  // client skips what a resumed stream repeats, so each event is shown once, in order.
  void (async () => {
    try {
      for await (const ev of client.follow(runId, { signal: stop.signal, maxReconnects: Infinity })) show(ev);
    } catch (e) {
      noticeSignedOut(e);
      if (!stop.signal.aborted) toast(`Live events stopped: ${e.message}`);
    }
  })();
  return () => stop.abort();
}

function describe(d) {
  const kind = (k, ...rest) =>
    h("li", { class: `ev ev-${k.replace(/\W/g, "-")}` }, h("span", { class: "ev-kind" }, k), ...rest);
  switch (d.kind) {
    case "text":
      return kind("agent", h("p", { class: "agent-text" }, d.text));
    case "reasoning":
      return kind("thinking", h("details", {}, h("summary", {}, "Reasoning"), h("p", {}, d.text)));
    case "file.edited":
      return kind("edited", h("code", {}, d.path));
    case "error":
      return kind("error", `${d.code}: ${d.message}`);
    case "log":
      return kind("log", d.message);
    case "setup.started":
      return kind("setup", `started: ${d.commands.join(" && ")}`);
    case "setup.cached":
      return kind("setup", "restored from the cache");
    case "setup.finished":
      return kind("setup", `${d.status} in ${Math.round(d.durationMs)} ms`);
    case "prompt.images":
      return kind("images", `${d.images.length} image(s) with the prompt`);
    case "step":
      return d.phase === "finish" && d.tokens
        ? kind("step", `${d.tokens.input} in / ${d.tokens.output} out tokens`)
        : null;
    default:
      return kind(String(d.kind), "");
  }
}
