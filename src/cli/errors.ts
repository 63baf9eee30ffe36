/** How the command line ends: exit codes a CI job can branch on, and the error for bad usage. */

/** Exit codes: 0 done (idle or completed, with a patch), 1 failed, 2 usage, 3 no changes. */
export const EXIT = { ok: 0, failed: 1, usage: 2, noChanges: 3 } as const;

/** Thrown for a command line that cannot be run as given; exits 2 with the usage. */
export class UsageError extends Error {
  override name = "UsageError";
}
