/**
 * The dashboard in a real browser (Debian's chromium driven by playwright-core) against the
 * real app, engine, OpenCode and the scripted model: sign in, start a run from the form, watch
 * its events and diff, follow up, end the session, sign out; and what must be refused (a wrong
 * key, a write without the CSRF token, a signed-out cookie). The agent's text, the prompt and
 * the patch carry markup that must show as text and never run. One browser for the file.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dashboardRouter } from "../../src/http/dashboard/router.ts";
import { createDashboardSessions } from "../../src/http/dashboard/sessions.ts";
import { launchChromium } from "../support/browser.ts";
import { startCutProxy, type CutProxy } from "../support/cut-proxy.ts";
import { LOADED } from "../support/harness.ts";
import { API, serveHarness, type HttpHarness } from "../support/http.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MODEL = "anthropic/claude-sonnet-4.6";
/** Markup in run data: if any of it runs, `window.__xss` is set. */
const XSS_PROMPT = 'Add a greeting <script>window.__xss="prompt"</script><img src=x onerror="window.__xss=\'prompt\'">';
const XSS_TEXT = "Added hello.js <img src=x onerror=\"window.__xss='text'\">";
/** A path that is markup if a renderer forgets to escape it (`/` only makes directories). */
const XSS_PATH = "<img/src=x/onerror=window.__xss='name'>.js";
const XSS_LINE = '// <script>window.__xss="diff"</script><img src=x onerror="window.__xss=\'diff\'">';

let h: HttpHarness;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let runId: string;
let proxy: CutProxy | undefined;
const pageErrors: string[] = [];

beforeAll(async () => {
  h = await serveHarness();
  h.model.script(MODEL, [
    [
      {
        toolCalls: [
          { name: "write", args: { filePath: "hello.js", content: `export const hello = () => "hi";\n${XSS_LINE}\n` } },
          { name: "write", args: { filePath: XSS_PATH, content: "1\n" } },
        ],
      },
      { text: XSS_TEXT },
    ],
    [
      { toolCalls: [{ name: "write", args: { filePath: "bye.js", content: "export const bye = 1;\n" } }] },
      { text: "Follow-up done." },
    ],
  ]);
  browser = await launchChromium();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(e.message));
}, LOADED.hookMs);

afterAll(async () => {
  await browser?.close();
  await proxy?.close();
  await h?.close();
}, LOADED.hookMs);

const sessionCookie = async () => (await context.cookies(h.base)).find((c) => c.name === "patchbay_session");
// Browser-side expressions are strings: the tests' TypeScript has no DOM types.
const noXss = () => page.evaluate<unknown>("window.__xss");
const pageWidth = () => page.evaluate<number>("document.documentElement.scrollWidth");

describe("the dashboard", { timeout: LOADED.testMs }, () => {
  it("serves every asset itself under a strict Content-Security-Policy", async () => {
    const res = await fetch(`${h.base}/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain("unsafe-inline");
    const html = await res.text();
    expect(html).not.toMatch(/<script>|https?:\/\//);
    for (const src of html.matchAll(/(?:src|href)="(\/dashboard\/[^"]+)"/g)) {
      expect((await fetch(`${h.base}${src[1]}`)).status, src[1]).toBe(200);
    }
    // The typed client's committed browser bundle, which api.js imports.
    const bundle = await fetch(`${h.base}/dashboard/vendor/patchbay-client.js`);
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get("content-type")).toContain("text/javascript");
    expect(await bundle.text()).toContain("function createPatchbayClient");
  });

  it("its router holds only the page, its assets and the session exchange (the API's route inventory does not see it)", () => {
    const router = dashboardRouter({ keys: h.pb.keys, sessions: createDashboardSessions() }) as unknown as {
      stack: { route?: { path: string; methods: Record<string, boolean> } }[];
    };
    const routes = router.stack.flatMap((l) =>
      l.route ? Object.keys(l.route.methods).map((m) => `${m} ${l.route!.path}`) : [],
    );
    expect(routes.sort()).toEqual(
      [
        "get /",
        "get /dashboard/*file",
        "post /dashboard/session",
        "get /dashboard/session",
        "delete /dashboard/session",
      ].sort(),
    );
  });

  it("refuses a wrong key and signs in with a right one for an HttpOnly, SameSite=Strict cookie", async () => {
    await page.goto(`${h.base}/`);
    await page.getByLabel("API key").fill("pb_wrong-key-00000000000000000000000000000000");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect.poll(() => page.getByRole("alert").textContent()).toContain("invalid or revoked API key");
    expect(await sessionCookie()).toBeUndefined();

    // By keyboard: the field is focused on load, Enter submits.
    await page.keyboard.type(h.keys.rw);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Runs" }).waitFor();
    const cookie = await sessionCookie();
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/" });
    const stored = await page.evaluate<string>(
      "JSON.stringify({ ...localStorage, ...sessionStorage }) + document.cookie",
    );
    expect(stored).not.toContain(h.keys.rw);
    expect(stored).not.toContain(cookie!.value);
  });

  it("starts a run from the form and shows its events, prompt and diff, with no markup run", async () => {
    await page.getByRole("link", { name: "New run" }).first().click();
    await page.getByLabel("Repository").fill("acme/web");
    await page.getByLabel("Prompt").fill(XSS_PROMPT);
    await expect.poll(() => page.getByLabel("Model").inputValue()).toBe(MODEL);
    await page.getByRole("button", { name: "Start run" }).click();
    await page.waitForURL(/#\/runs\/run_/);
    runId = /#\/runs\/(run_[\w-]+)/.exec(page.url())![1]!;

    const agentText = page.locator(".events .ev-agent", { hasText: "Added hello.js" });
    await agentText.waitFor({ timeout: LOADED.turnWaitMs });
    expect(await agentText.textContent()).toContain(XSS_TEXT);
    await page.locator(".events .ev-edited", { hasText: "hello.js" }).first().waitFor();
    await page.locator(".status-idle").first().waitFor({ timeout: LOADED.turnWaitMs });

    const file = page.locator(".d2h-file-name", { hasText: "hello.js" }).first();
    await file.waitFor();
    const added = page.locator(".d2h-ins", { hasText: 'export const hello = () => "hi";' }).first();
    await added.waitFor();
    await page.locator(".d2h-ins", { hasText: "<script>" }).first().waitFor();
    await page.locator(".d2h-file-name", { hasText: XSS_PATH }).first().waitFor();
    await page.locator(".events .ev-edited", { hasText: XSS_PATH }).first().waitFor();
    expect(await page.locator(".turns .prompt").first().textContent()).toBe(XSS_PROMPT);
    expect(await page.locator("main img, main script").count()).toBe(0);
    expect(await noXss()).toBeUndefined();
    expect(pageErrors).toEqual([]);

    // The README's picture: `DASHBOARD_SCREENSHOT=docs/dashboard.png npx vitest run test/http/dashboard.e2e.test.ts`.
    const shot = await page.screenshot({ fullPage: true });
    expect(shot.length).toBeGreaterThan(10_000);
    const target = process.env.DASHBOARD_SCREENSHOT;
    if (target) fs.writeFileSync(path.resolve(ROOT, target), shot);
  });

  it("answers a cookie-only write without the CSRF token 403, and one with it as the key's scopes allow", async () => {
    const cookie = (await sessionCookie())!;
    const headers = { cookie: `${cookie.name}=${cookie.value}`, "content-type": "application/json" };
    const read = await fetch(`${h.base}${API}/runs/${runId}`, { headers });
    expect(read.status).toBe(200);
    const forged = await fetch(`${h.base}${API}/runs/${runId}/cancel`, { method: "POST", headers, body: "{}" });
    expect(forged.status).toBe(403);
    expect(((await forged.json()) as { error: { code: string } }).error.code).toBe("csrf_failed");
    // The page's own fetch without the header is refused the same way.
    const fromPage = await page.evaluate(
      async (p) =>
        (await fetch(p, { method: "POST", body: "{}", headers: { "content-type": "application/json" } })).status,
      `${API}/runs/${runId}/cancel`,
    );
    expect(fromPage).toBe(403);
    expect((await h.api("GET", `${API}/runs/${runId}`)).json.status).toBe("idle");
  });

  it("sends a follow-up that runs a second turn in the same session, then ends the session", async () => {
    // From here the page goes through a forwarder that drops every connection on `cut()`.
    proxy = await startCutProxy({ host: "127.0.0.1", port: Number(new URL(h.base).port) });
    await page.goto(`${proxy.base}/#/runs/${runId}`);
    await page.locator(".events .ev-status", { hasText: "Turn 1: idle" }).waitFor();
    // The typed client's follow() reconnects by itself, naming the last event it saw (the proxy
    // cannot tell: chromium may send it on a connection that carried another request first).
    const resumed = page.waitForRequest(
      async (r) =>
        r.url().includes("/stream") &&
        r.resourceType() === "fetch" &&
        (await r.allHeaders())["last-event-id"] !== undefined,
      { timeout: 60_000 },
    );
    proxy.cut();
    expect(Number((await (await resumed).allHeaders())["last-event-id"])).toBeGreaterThan(0);
    await page.getByLabel("Message to the agent").fill("Now say goodbye.");
    await page.getByRole("button", { name: "Send" }).click();
    await page.locator(".events .ev-agent", { hasText: "Follow-up done." }).waitFor({ timeout: LOADED.turnWaitMs });
    await page.locator(".turns .turn", { hasText: "Turn 2" }).waitFor({ timeout: LOADED.turnWaitMs });
    await page.locator(".d2h-file-name", { hasText: "bye.js" }).first().waitFor({ timeout: LOADED.turnWaitMs });
    const end = page.getByRole("button", { name: "End session" });
    await end.waitFor({ timeout: LOADED.turnWaitMs });
    await end.click();
    await page.locator(".run-header .status-completed").waitFor({ timeout: LOADED.turnWaitMs });
    const run = (await h.api("GET", `${API}/runs/${runId}?turns=1&events=1`)).json;
    // Across the cut, nothing was lost or shown twice: every status change once, in order.
    const shown = await page.evaluate<string[]>(
      "[...document.querySelectorAll('.events .ev-status')].map((e) => e.textContent)",
    );
    const logged = run.events
      .filter((e: { type: string }) => e.type === "run.status")
      .map((e: { turn: number; data: { status: string } }) => `Turn ${e.turn}: ${e.data.status}`);
    expect(shown).toEqual(logged);
    expect(run).toMatchObject({ status: "completed", turnCount: 2 });
    expect(run.turns.map((t: { n: number; prompt: string }) => [t.n, t.prompt])).toEqual([
      [1, XSS_PROMPT],
      [2, "Now say goodbye."],
    ]);
  });

  it("lists the run with its status, repository, model and turns, and filters by status; readable at 390 px", async () => {
    await page.getByRole("link", { name: "Runs", exact: true }).click();
    const row = page.locator(`tr[data-run="${runId}"]`);
    await row.waitFor();
    expect(await row.textContent()).toMatch(/completed.*acme\/web.*anthropic\/claude-sonnet-4\.6.*2/);
    await page.getByLabel("Status").selectOption("failed");
    await page.getByText("No run matches this filter.").waitFor();
    await page.getByLabel("Status").selectOption("all");
    await row.waitFor();
    await page.setViewportSize({ width: 390, height: 844 });
    expect(await pageWidth()).toBeLessThanOrEqual(390);
    await page.goto(`${h.base}/#/runs/${runId}`);
    await page.locator(".d2h-file-name", { hasText: "hello.js" }).first().waitFor();
    expect(await pageWidth()).toBeLessThanOrEqual(390);
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  it("sign-in takes JSON only and a key that may read; revoking the key ends its sessions", async () => {
    const signIn = (body: string, type = "application/json") =>
      fetch(`${h.base}/dashboard/session`, { method: "POST", headers: { "content-type": type }, body });
    // A cross-site form can send only form types: it can never sign a browser in.
    expect((await signIn(`key=${h.keys.rw}`, "application/x-www-form-urlencoded")).status).toBe(415);
    expect((await signIn(JSON.stringify({ key: h.keys.admin }))).status).toBe(403);
    expect((await signIn(JSON.stringify({ key: h.keys.revoked }))).status).toBe(401);
    const key = await h.pb.keys.create({ name: "dash", scopes: ["read:builder"], ownerId: "owner-a" });
    const res = await signIn(JSON.stringify({ key: key.key }));
    expect(res.status).toBe(201);
    const setCookie = res.headers.getSetCookie().join("\n");
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(JSON.stringify(await res.json())).not.toContain(key.key);
    const cookie = /^(patchbay_session=[^;]+)/.exec(setCookie)![1]!;
    const list = () => fetch(`${h.base}${API}/runs`, { headers: { cookie } });
    expect((await list()).status).toBe(200);
    // Its scopes hold: a read-only key's session cannot write even with the token.
    const { csrfToken } = (await (await fetch(`${h.base}/dashboard/session`, { headers: { cookie } })).json()) as {
      csrfToken: string;
    };
    const write = await fetch(`${h.base}${API}/runs/${runId}/cancel`, {
      method: "POST",
      headers: { cookie, "x-csrf-token": csrfToken, "content-type": "application/json" },
      body: "{}",
    });
    expect(write.status).toBe(403);
    await h.pb.keys.revoke(key.record.id);
    expect((await list()).status).toBe(401);
  });

  it("signs out: the page asks for a key again and the old cookie opens nothing", async () => {
    const cookie = (await sessionCookie())!;
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("API key").waitFor();
    expect(await sessionCookie()).toBeUndefined();
    const res = await fetch(`${h.base}${API}/runs`, { headers: { cookie: `${cookie.name}=${cookie.value}` } });
    expect(res.status).toBe(401);
    // Bearer clients never depended on any of it.
    expect((await h.api("GET", `${API}/runs/${runId}`)).status).toBe(200);
    expect(await noXss()).toBeUndefined();
  });
});
