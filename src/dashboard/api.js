// The page's calls to Patchbay: the typed client (client/, bundled into vendor/ by
// `npm run dashboard:build`) over the session cookie, and the sign-in exchange beside it.
// The CSRF token lives in this module's memory only (never in storage); a middleware puts it
// in X-CSRF-Token on every write.
import { apiError, createPatchbayClient, PatchbayApiError } from "./vendor/patchbay-client.js";

export { PatchbayApiError as ApiError, unwrap } from "./vendor/patchbay-client.js";

const SESSION = "/dashboard/session";
let csrfToken = null;
let onSignedOut = () => {};

/** The typed client; no API key: same-origin requests carry the session cookie. */
export const client = createPatchbayClient({ baseUrl: location.origin });
client.api.use({
  onRequest({ request }) {
    if (request.method !== "GET" && request.method !== "HEAD" && csrfToken)
      request.headers.set("x-csrf-token", csrfToken);
    return request;
  },
  onResponse({ response }) {
    if (response.status === 401) onSignedOut();
  },
});

/** Called when the server says the session is gone (401). */
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

/** A 401 from the event stream (not an openapi-fetch call) ends the session the same way. */
export function noticeSignedOut(e) {
  if (e instanceof PatchbayApiError && e.status === 401) onSignedOut();
}

/** The session routes are the dashboard's, not the API's: plain fetch, same errors. */
async function session(method, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["x-csrf-token"] = csrfToken;
  const res = await fetch(SESSION, {
    method,
    headers,
    credentials: "same-origin",
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (!res.ok) throw await apiError(res);
  return res.status === 204 ? undefined : res.json();
}

/** Exchange a key for a session; the key is not kept anywhere on the page. */
export async function signIn(key) {
  const out = await session("POST", { key });
  csrfToken = out.csrfToken;
  return out.key;
}

/** The key this browser is signed in as, or null. */
export async function currentSession() {
  try {
    const out = await session("GET");
    csrfToken = out.csrfToken;
    return out.key;
  } catch (e) {
    if (e instanceof PatchbayApiError && e.status === 401) return null;
    throw e;
  }
}

export async function signOut() {
  try {
    await session("DELETE");
  } finally {
    csrfToken = null;
  }
}
