/** Dashboard sessions on their own, with a hand-moved clock: expiry, eviction, CSRF checks. */
import { describe, expect, it } from "vitest";
import { createDashboardSessions } from "../../src/http/dashboard/sessions.ts";

const HASH = "a".repeat(64);

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe("dashboard sessions", () => {
  it("a session lives while used and ends after its idle time or its maximum age", () => {
    const c = clock();
    const sessions = createDashboardSessions({ idleMs: 1000, maxAgeMs: 2500, now: c.now });
    const { id } = sessions.open(HASH);
    c.advance(900);
    expect(sessions.get(id)?.keyHash).toBe(HASH);
    c.advance(900);
    expect(sessions.get(id)).toBeDefined();
    c.advance(900);
    // Used every 900 ms, but 2700 ms after sign-in: past the maximum age.
    expect(sessions.get(id)).toBeUndefined();
    const other = sessions.open(HASH);
    c.advance(1000);
    expect(sessions.get(other.id)).toBeUndefined();
  });

  it("ids are random and unguessable, closed sessions and malformed cookies open nothing", () => {
    const sessions = createDashboardSessions();
    const a = sessions.open(HASH);
    const b = sessions.open(HASH);
    expect(a.id).not.toBe(b.id);
    expect(a.csrfToken).not.toBe(b.csrfToken);
    expect(a.id).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(sessions.close(a.id)).toBe(true);
    expect(sessions.get(a.id)).toBeUndefined();
    expect(sessions.close(a.id)).toBe(false);
    for (const bad of ["", "x", a.id + "=", "../" + b.id.slice(3)]) expect(sessions.get(bad)).toBeUndefined();
    expect(sessions.get(b.id)).toBeDefined();
  });

  it("the CSRF token must match exactly", () => {
    const sessions = createDashboardSessions();
    const { id, csrfToken } = sessions.open(HASH);
    const s = sessions.get(id)!;
    expect(sessions.csrfMatches(s, csrfToken)).toBe(true);
    for (const bad of [undefined, "", csrfToken.slice(1), csrfToken + "x", sessions.open(HASH).csrfToken])
      expect(sessions.csrfMatches(s, bad)).toBe(false);
  });

  it("holds at most `max` sessions, dropping the least recently used first", () => {
    const sessions = createDashboardSessions({ max: 3 });
    const [a, b, c] = [sessions.open(HASH), sessions.open(HASH), sessions.open(HASH)];
    expect(sessions.get(a.id)).toBeDefined(); // a is now the most recently used
    const d = sessions.open(HASH);
    expect(sessions.size).toBe(3);
    expect(sessions.get(b.id)).toBeUndefined();
    for (const s of [a, c, d]) expect(sessions.get(s.id)).toBeDefined();
  });
});
