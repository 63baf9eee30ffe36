/**
 * The model gateway: a loopback OpenAI-compatible endpoint that the agent calls with a
 * per-run token. It checks the token, swaps in the real upstream key, forwards to
 * PATCHBAY_OPENROUTER_BASE_URL with streaming passed through unbuffered, and meters usage.
 * The real key never enters the sandbox.
 */
import type { Usage } from "../run/schema.ts";

export interface GatewayGrant {
  runId: string;
  /** Resolves the real upstream key at call time (managed key, or the run's decrypted key). */
  upstreamKey: () => Promise<string | undefined>;
  /** Model ids this token may call; others are refused with 403. */
  allowedModels: readonly string[];
  /** Called after each upstream response with the usage it reported (tokens, cost). */
  onUsage: (delta: Usage) => void;
  /**
   * Asked before each model call: a message refuses the call (402 `budget_exceeded`, which
   * the agent surfaces as a model error), undefined lets it through. Absent: every call passes.
   */
  admit?: () => Promise<string | undefined>;
}

export interface ModelGateway {
  /** Loopback port the gateway listens on. */
  readonly port: number;
  /** `http://127.0.0.1:PORT/v1` */
  readonly url: string;
  /** Issue a fresh random token bound to the grant. */
  issueToken(grant: GatewayGrant): string;
  /**
   * Accept again a token an earlier Patchbay process issued (a sandbox that outlived it
   * still calls with it). Throws for a string that is not such a token.
   */
  restoreToken(token: string, grant: GatewayGrant): void;
  /** Revoke a token: later calls with it answer 401. */
  revokeToken(token: string): void;
  /**
   * Issue a token for one agent server that serves many runs (PATCHBAY_SHARED_AGENT). It
   * carries no grant of its own: each request must name its OpenCode session
   * (`X-Session-Id`, which OpenCode sends to custom providers) and is authorised as the run
   * token that session is bound to ({@link bindSession}). Without the header it answers 401,
   * with a session bound to no live run token 403. Revoke it with `revokeToken`.
   *
   * `parentOf`, when given, is asked about a session not bound yet (a subagent whose first
   * request outran the event that binds it) and answers its parent session id, or undefined.
   * When that parent is bound to a live run token, the gateway binds the session to it too.
   * The gateway waits at most 5 s for the answer.
   */
  issueSharedToken(opts?: { parentOf?: (sessionId: string) => Promise<string | undefined> }): string;
  /**
   * Authorise requests of `sharedToken` naming `sessionId` as if they carried `runToken`:
   * the run's grant (models, key, metering) applies, and revoking the run's token refuses
   * them too. Throws for an unknown shared token or run token.
   */
  bindSession(sharedToken: string, sessionId: string, runToken: string): void;
  /** Forget a session binding; later requests naming it answer 403. */
  unbindSession(sharedToken: string, sessionId: string): void;
  close(): Promise<void>;
}
