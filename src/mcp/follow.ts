/** Following a run from the moment of the call, for waits and subscriptions that want only what happens next. */
import type { Engine, FollowOptions, RunFollow } from "../engine/index.ts";

/**
 * `engine.follow` after the last event stored now. The facade has no cheaper way to learn
 * where the log ends than reading it; a wait or a subscription does this once.
 */
export async function followFromNow(
  engine: Engine,
  ownerId: string,
  runId: string,
  opts: Omit<FollowOptions, "after"> = {},
): Promise<RunFollow> {
  const stored = await engine.events(ownerId, runId, 0);
  return engine.follow(ownerId, runId, { ...opts, after: stored.at(-1)?.id ?? 0 });
}
