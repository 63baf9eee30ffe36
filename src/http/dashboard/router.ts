/**
 * The dashboard: a page at `/` made of plain ES modules and CSS (`src/dashboard/`, no build
 * step at install or start: the typed client's browser bundle in `vendor/` is committed),
 * diff2html's browser bundle served from its npm package, and the sign-in exchange
 * (`/dashboard/session`). Everything is served from this process, so it works offline, under
 * a Content-Security-Policy that allows only this origin's own scripts and styles.
 *
 * These are not API routes: they are mounted as one router beside the route table, and the
 * page then calls the API itself with the session cookie (see auth.ts).
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import express from "express";
import * as z from "zod";
import type { KeyService } from "../../engine/index.ts";
import { parseInput } from "../../engine/parse.ts";
import { HttpError } from "../errors.ts";
import {
  CSRF_HEADER,
  SECURE_SESSION_COOKIE,
  SESSION_COOKIE,
  sessionCookie,
  type DashboardSessions,
} from "./sessions.ts";

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../dashboard");

/** Only this origin's files; no inline script or style, no framing, no form posts elsewhere. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

interface Asset {
  body: Buffer;
  type: string;
}

/**
 * The dashboard's files (its modules, and in `vendor/` the typed client's committed browser
 * bundle) and diff2html's bundle, read once (a few hundred KB).
 */
function loadAssets(): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const dir of ["", "vendor/"]) {
    for (const name of fs.readdirSync(path.join(WEB_DIR, dir))) {
      const type = TYPES[path.extname(name)];
      if (type && name !== "index.html")
        assets.set(`/dashboard/${dir}${name}`, { body: fs.readFileSync(path.join(WEB_DIR, dir, name)), type });
    }
  }
  const d2h = path.dirname(createRequire(import.meta.url).resolve("diff2html/package.json"));
  assets.set("/dashboard/vendor/diff2html-ui.js", {
    body: fs.readFileSync(path.join(d2h, "bundles/js/diff2html-ui-base.min.js")),
    type: TYPES[".js"]!,
  });
  assets.set("/dashboard/vendor/diff2html.css", {
    body: fs.readFileSync(path.join(d2h, "bundles/css/diff2html.min.css")),
    type: TYPES[".css"]!,
  });
  return assets;
}

const SignIn = z.object({ key: z.string().min(1).max(200) }).strict();

export interface DashboardDeps {
  keys: KeyService;
  sessions: DashboardSessions;
}

/** The dashboard's router: mount before the app's 404 fallback. */
export function dashboardRouter({ keys, sessions }: DashboardDeps): express.Router {
  const assets = loadAssets();
  const index = fs.readFileSync(path.join(WEB_DIR, "index.html"));
  const router = express.Router();

  const secure: express.RequestHandler = (_req, res, next) => {
    res.setHeader("Content-Security-Policy", DASHBOARD_CSP);
    res.setHeader("X-Content-Type-Options", "nosniff");
    res.setHeader("X-Frame-Options", "DENY");
    res.setHeader("Referrer-Policy", "no-referrer");
    next();
  };

  router.get("/", secure, (_req, res) => {
    res.setHeader("Cache-Control", "no-store");
    res.type("html").send(index);
  });
  router.get("/dashboard/*file", secure, (req, res, next) => {
    const asset = assets.get(req.path);
    if (!asset) return next();
    res.setHeader("Cache-Control", "no-cache");
    res.type(asset.type).send(asset.body);
  });

  // Sign in: JSON only, so a cross-site form cannot sign a browser in with another key.
  router.post(
    "/dashboard/session",
    secure,
    express.json({ limit: "4kb", type: "application/json" }),
    (req, res, next) => {
      void (async () => {
        if (!req.is("application/json"))
          throw new HttpError("unsupported_media_type", "send the body as application/json");
        const { key } = parseInput(SignIn, req.body, "body");
        const record = await keys.verify(key.trim());
        if (!record) throw new HttpError("unauthorized", "invalid or revoked API key");
        if (!record.scopes.includes("read:builder"))
          throw new HttpError("forbidden", "the dashboard needs a key with the read:builder scope", {
            required: "read:builder",
          });
        const previous = sessionCookie(req);
        if (previous) sessions.close(previous);
        const session = sessions.open(record.hash);
        const name = req.secure ? SECURE_SESSION_COOKIE : SESSION_COOKIE;
        res.setHeader("Cache-Control", "no-store");
        res.cookie(name, session.id, {
          httpOnly: true,
          sameSite: "strict",
          secure: req.secure,
          path: "/",
          maxAge: session.maxAgeMs,
        });
        res.status(201).json({ csrfToken: session.csrfToken, key: describeKey(record) });
      })().catch(next);
    },
  );

  // Who the page is signed in as, and the CSRF token it lost on reload (same-origin reads only).
  router.get("/dashboard/session", secure, (req, res, next) => {
    void (async () => {
      const session = sessions.get(sessionCookie(req) ?? "");
      const record = session && (await keys.verifyHash(session.keyHash));
      if (!session || !record) throw new HttpError("unauthorized", "not signed in to the dashboard");
      res.setHeader("Cache-Control", "no-store");
      res.json({ csrfToken: session.csrfToken, key: describeKey(record) });
    })().catch(next);
  });

  // Sign out: a write like any other (its CSRF token required), then the cookie is cleared.
  router.delete("/dashboard/session", secure, (req, res) => {
    const id = sessionCookie(req) ?? "";
    const session = sessions.get(id);
    if (session && !sessions.csrfMatches(session, req.get(CSRF_HEADER))) {
      throw new HttpError("csrf_failed", "signing out needs the session's X-CSRF-Token");
    }
    sessions.close(id);
    for (const name of [SESSION_COOKIE, SECURE_SESSION_COOKIE])
      res.clearCookie(name, { httpOnly: true, sameSite: "strict", secure: name === SECURE_SESSION_COOKIE, path: "/" });
    res.status(204).end();
  });
  return router;
}

function describeKey(r: { id: string; name: string; ownerId: string; scopes: readonly string[] }) {
  return { id: r.id, name: r.name, ownerId: r.ownerId, scopes: r.scopes };
}
