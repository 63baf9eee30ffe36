// Calls to Patchbay's own API with the session cookie. The CSRF token lives in this module's
// memory only (never in storage); every write carries it in X-CSRF-Token.
export const API = "/api/v1/coding-agent";

let csrfToken = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when the server says the session is gone (401). */
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["x-csrf-token"] = csrfToken;
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, json?.error?.code ?? "http_error", json?.error?.message ?? res.statusText);
    if (res.status === 401 && path !== "/dashboard/session") onSignedOut();
    throw err;
  }
  return json;
}

/** Exchange a key for a session; the key is not kept anywhere on the page. */
export async function signIn(key) {
  const out = await api("POST", "/dashboard/session", { key });
  csrfToken = out.csrfToken;
  return out.key;
}

/** The key this browser is signed in as, or null. */
export async function currentSession() {
  try {
    const out = await api("GET", "/dashboard/session");
    csrfToken = out.csrfToken;
    return out.key;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

export async function signOut() {
  try {
    await api("DELETE", "/dashboard/session");
  } finally {
    csrfToken = null;
  }
}
