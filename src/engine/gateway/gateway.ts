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
  close(): Promise<void>;
}
