/**
 * The gateway's token registry: the one owner of which tokens are live, what each may do,
 * and which shared-server sessions stand for which run. Tokens are kept by their sha256
 * only, and registered with `log.redact` so they never show in our own log lines.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type http from "node:http";
import type { Logger } from "../log.ts";
import type { GatewayGrant, ModelGateway } from "./gateway.ts";

const TOKEN_PREFIX = "pbgw_";
/** Longest the gateway waits for a shared server's driver to name an unbound session's parent. */
const RESOLVE_TIMEOUT_MS = 5000;
/** Headers in which OpenCode names the session of a model request (custom providers, 1.18.33). */
const SESSION_HEADERS = ["x-session-id", "x-session-affinity"] as const;

/** A live run token, as a request authorised with it sees it. */
export interface LiveToken {
  readonly grant: GatewayGrant;
  /** Aborts when the token is revoked: requests in flight with it stop. */
  readonly revoked: AbortSignal;
  /**
   * Take one of the token's in-flight slots (a shared token's session counts as its run's
   * token): the function that gives it back, or undefined when all are taken.
   */
  acquire(): (() => void) | undefined;
}

/** Who a request is: a live run token, or why it is refused. */
export type Authorisation = { token: LiveToken } | { status: 401 | 403; message: string };

/** The token half of {@link ModelGateway} (documented there), plus authorising a request. */
export interface TokenRegistry extends Pick<
  ModelGateway,
  "issueToken" | "restoreToken" | "revokeToken" | "issueSharedToken" | "bindSession" | "unbindSession"
> {
  /** Authorise a request by its `Authorization` header (and, for a shared token, its session headers). */
  authorise(headers: http.IncomingHttpHeaders): Promise<Authorisation>;
}

interface TokenEntry {
  /** sha256 of the token: the Map key, and what is compared in constant time. */
  digest: Buffer;
  grant: GatewayGrant;
  revoked: AbortController;
  /** Requests with this token between authorisation and their end. */
  inFlight: number;
}

/** A shared agent server's token: OpenCode session id -> digest (hex) of the run token it stands for. */
interface SharedEntry {
  digest: Buffer;
  sessions: Map<string, string>;
  parentOf?: (sessionId: string) => Promise<string | undefined>;
}

/** Options for {@link createTokenRegistry}. */
export interface TokenRegistryOptions {
  log: Logger;
  /** Requests one run token may have in flight at once; default unlimited. */
  maxInFlight?: number;
}

export function createTokenRegistry(opts: TokenRegistryOptions): TokenRegistry {
  const { log } = opts;
  const maxInFlight = opts.maxInFlight ?? Infinity;
  /** Keyed by the token's sha256 hex, so a lookup never compares the token itself char by char. */
  const tokens = new Map<string, TokenEntry>();
  /** Shared agent servers' tokens, keyed like `tokens`. */
  const shared = new Map<string, SharedEntry>();

  const register = (token: string, grant: GatewayGrant): string => {
    const digest = sha256(token);
    tokens.set(digest.toString("hex"), { digest, grant, revoked: new AbortController(), inFlight: 0 });
    // The token is a credential too: keep it out of our own log lines.
    log.redact(token);
    return token;
  };

  const sharedEntryOf = (token: string): SharedEntry => {
    const entry = shared.get(hex(token));
    if (!entry) throw new TypeError("not a shared token this gateway issued");
    return entry;
  };

  const live = (entry: TokenEntry): LiveToken => ({
    grant: entry.grant,
    revoked: entry.revoked.signal,
    acquire() {
      if (entry.inFlight >= maxInFlight) return undefined;
      entry.inFlight++;
      let released = false;
      return () => {
        if (released) return;
        released = true;
        entry.inFlight--;
      };
    },
  });

  /**
   * The run token (hex) a shared token's session stands for. A session not bound yet is bound
   * to its parent's run token: the one place a binding is made without `bindSession`.
   */
  const sessionRun = async (entry: SharedEntry, sessionId: string): Promise<string | undefined> => {
    const bound = entry.sessions.get(sessionId);
    if (bound !== undefined || !entry.parentOf) return bound;
    let timer: NodeJS.Timeout | undefined;
    const parent = await Promise.race([
      entry.parentOf(sessionId).catch((e: unknown) => {
        log.warn("could not find an agent session's parent", { error: e });
        return undefined;
      }),
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), RESOLVE_TIMEOUT_MS).unref())),
    ]).finally(() => clearTimeout(timer));
    // Read after the wait: the parent may have been bound (or its run ended) meanwhile.
    const runHex = parent === undefined ? undefined : entry.sessions.get(parent);
    if (runHex === undefined || !tokens.has(runHex) || shared.get(entry.digest.toString("hex")) !== entry)
      return undefined;
    entry.sessions.set(sessionId, runHex);
    return runHex;
  };

  return {
    issueToken: (grant) => register(TOKEN_PREFIX + randomBytes(32).toString("base64url"), grant),
    restoreToken(token, grant) {
      if (!token.startsWith(TOKEN_PREFIX) || !/^[A-Za-z0-9_-]{43}$/.test(token.slice(TOKEN_PREFIX.length)))
        throw new TypeError("not a token this gateway issues");
      register(token, grant);
    },
    revokeToken(token) {
      const h = hex(token);
      shared.delete(h);
      const entry = tokens.get(h);
      if (!entry) return;
      tokens.delete(h);
      entry.revoked.abort();
      // Its sessions are no one's now; among them may be ones bound through `parentOf`, which
      // the agent side never heard of and so never unbinds.
      for (const { sessions } of shared.values())
        for (const [id, runHex] of sessions) if (runHex === h) sessions.delete(id);
    },
    issueSharedToken(o = {}) {
      const token = TOKEN_PREFIX + randomBytes(32).toString("base64url");
      const digest = sha256(token);
      shared.set(digest.toString("hex"), {
        digest,
        sessions: new Map(),
        ...(o.parentOf ? { parentOf: o.parentOf } : {}),
      });
      log.redact(token);
      return token;
    },
    bindSession(sharedToken, sessionId, runToken) {
      const entry = sharedEntryOf(sharedToken);
      const runHex = hex(runToken);
      if (!tokens.has(runHex)) throw new TypeError("not a live run token of this gateway");
      entry.sessions.set(sessionId, runHex);
    },
    unbindSession(sharedToken, sessionId) {
      shared.get(hex(sharedToken))?.sessions.delete(sessionId);
    },
    async authorise(headers) {
      const header = headers.authorization;
      const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
      const refused: Authorisation = { status: 401, message: "invalid or revoked gateway token" };
      if (!m || !m[1]!.startsWith(TOKEN_PREFIX)) return refused;
      const digest = sha256(m[1]!);
      const h = digest.toString("hex");
      // The Map lookups already matched on the digest; the constant-time compares keep the
      // check honest should the maps ever be keyed differently.
      const entry = tokens.get(h);
      if (entry) return timingSafeEqual(entry.digest, digest) ? { token: live(entry) } : refused;
      const sharedEntry = shared.get(h);
      if (!sharedEntry || !timingSafeEqual(sharedEntry.digest, digest)) return refused;
      const ids = SESSION_HEADERS.map((n) => headers[n]).filter((v): v is string => typeof v === "string" && !!v);
      if (ids.length === 0) return { status: 401, message: "a shared gateway token needs an X-Session-Id header" };
      if (ids.some((id) => id !== ids[0])) return { status: 403, message: "the request names two different sessions" };
      const runHex = await sessionRun(sharedEntry, ids[0]!);
      const runEntry = runHex === undefined ? undefined : tokens.get(runHex);
      // A session whose run ended (unbound, or its run token revoked) is no one's any more.
      if (!runEntry) return { status: 403, message: "this session is bound to no live run" };
      return { token: live(runEntry) };
    },
  };
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

function hex(token: string): string {
  return sha256(token).toString("hex");
}
