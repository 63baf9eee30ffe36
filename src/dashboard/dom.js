// Building the page without innerHTML: every piece of run data goes in as text nodes or
// attribute values, so prompts, agent text and file names can never become markup.

/** Only http(s) links are followed; anything else (javascript:, data:) becomes inert. */
export function safeHref(value) {
  try {
    const url = new URL(String(value), location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : "#";
  } catch {
    return "#";
  }
}

/**
 * `h("a", {href, class, onclick}, ...children)`: an element with attributes, listeners and
 * children (strings become text nodes; null, undefined and false are skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "href") el.setAttribute("href", v.startsWith("#") ? v : safeHref(v));
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "3 min ago" from an ISO time. */
export function age(iso, now = Date.now()) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** Tokens in and out, and the cost when known. */
export function usageText(usage) {
  if (!usage) return "";
  const tokens = (usage.inputTokens ?? 0) + (usage.outputTokens ?? 0);
  const cost = typeof usage.costUsd === "number" && usage.costKnown !== false ? ` · $${usage.costUsd.toFixed(4)}` : "";
  return `${tokens.toLocaleString("en-US")} tokens${cost}`;
}

/** A status badge. */
export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/** Show a short message in the live region. */
export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.textContent = ""), 6000);
}
