/** Debian's chromium for browser tests, started as the closed network needs it. */
import { chromium, type Browser } from "playwright-core";

/**
 * Launch headless chromium with no background networking, component updates or sync (on a
 * closed network they make it misbehave). playwright-core gives every launch a fresh
 * temporary `--user-data-dir`. Close the browser in `afterAll`.
 */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
