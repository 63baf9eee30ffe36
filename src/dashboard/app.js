// The dashboard's entry: sign-in, then hash routes (#/, #/new, #/runs/<id>). Each view
// returns a cleanup function that stops its polling and streams when the route changes.
import { ApiError, currentSession, signIn, signOut, whenSignedOut } from "./api.js";
import { fill, h, toast } from "./dom.js";
import { newRunView } from "./new-run.js";
import { runView } from "./run.js";
import { runsView } from "./runs.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = () => {};
let signedIn = null;

function signInView() {
  nav.hidden = true;
  const input = h("input", {
    id: "api-key",
    name: "key",
    type: "password",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
  });
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { class: "card sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", { class: "muted" }, "Paste an API key. It is exchanged for a session and not kept in the page."),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("button", { type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      signedIn = await signIn(input.value);
      input.value = "";
      route();
    } catch (e) {
      input.value = "";
      error.textContent = e instanceof ApiError ? e.message : "could not reach Patchbay";
      input.focus();
    }
  });
  fill(main, form);
  input.focus();
  return () => {};
}

function route() {
  cleanup();
  if (!signedIn) {
    cleanup = signInView();
    return;
  }
  nav.hidden = false;
  fill(document.getElementById("who"), `${signedIn.name} (${signedIn.ownerId})`);
  const hash = location.hash.replace(/^#/, "") || "/";
  const run = /^\/runs\/([A-Za-z0-9_-]{1,64})$/.exec(hash);
  if (run) cleanup = runView(main, run[1]);
  else if (hash === "/new") cleanup = newRunView(main);
  else cleanup = runsView(main);
}

whenSignedOut(() => {
  if (!signedIn) return;
  signedIn = null;
  toast("Your session ended. Sign in again.");
  route();
});

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await signOut();
  } finally {
    signedIn = null;
    route();
  }
});

// diff2html's file list links to `#d2h-…` anchors inside the run page: not a route.
window.addEventListener("hashchange", () => {
  if (!location.hash.startsWith("#d2h-")) route();
});

currentSession()
  .then((key) => {
    signedIn = key;
    route();
  })
  .catch(() => {
    fill(main, h("p", { class: "error", role: "alert" }, "Could not reach Patchbay."));
  });
