/**
 * Whether the database answers, as the store's connections last found it. A replica that
 * loses it says so once (not once per connection, loop or retry) and once when it is back;
 * meanwhile every failed call is `storage_failed` (HTTP 503), which `/readyz` reports too.
 */
import pg from "pg";
import { EngineError } from "../../errors.ts";
import type { Logger } from "../../log.ts";

/** Shared by every connection of one store (pool, LISTEN, advisory locks). */
export interface DatabaseHealth {
  /** A call failed: when the connection is what failed, the database is down (logged once). */
  failed(error: unknown): void;
  /** A call was answered: the database is up (logged once after an outage). */
  answered(): void;
  /** What a call that threw `e` throws: `storage_failed` when the database did not answer (noted), else `e`. */
  failure(e: unknown): unknown;
}

/** What a connection that broke or never opened throws (the socket, pg's client, the server going away). */
const SOCKET_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
// Not pg-pool's "timeout exceeded when trying to connect": every connection busy is not a lost database.
const CLIENT_MESSAGES = /Connection terminated|not queryable/i;

/** Whether `e` says the database is unreachable (not that it refused a statement). */
export function isConnectionError(e: unknown): boolean {
  if (!(e instanceof Error) || e instanceof EngineError) return false;
  const code = (e as { code?: unknown }).code;
  if (e instanceof pg.DatabaseError)
    // connection_exception, admin or crash shutdown, cannot connect now, too many connections
    return typeof code === "string" && (code.startsWith("08") || /^57P0[123]$/.test(code) || code === "53300");
  return (typeof code === "string" && SOCKET_CODES.has(code)) || CLIENT_MESSAGES.test(e.message);
}

/**
 * The error a call answers while the database is unreachable. A socket error says only its
 * code: its message names the database's address, which is the log's to tell (`/readyz` is public).
 */
export function databaseUnavailable(e: unknown): EngineError {
  const code = (e as { code?: unknown } | undefined)?.code;
  const reason = typeof code === "string" && SOCKET_CODES.has(code) ? code : e instanceof Error ? e.message : String(e);
  return new EngineError("storage_failed", `the database (PATCHBAY_DATABASE_URL) does not answer: ${reason}`);
}

export function createDatabaseHealth(log: Logger): DatabaseHealth {
  let down = false;
  const failed = (error: unknown) => {
    if (down || !isConnectionError(error)) return;
    down = true;
    log.warn("lost the database", {
      error,
      effect: "requests answer 503 storage_failed, /readyz 503, no queued run is taken, until it answers again",
    });
  };
  return {
    failed,
    answered() {
      if (!down) return;
      down = false;
      log.info("the database answers again");
    },
    failure(e) {
      if (!isConnectionError(e)) return e;
      failed(e);
      return databaseUnavailable(e);
    },
  };
}
