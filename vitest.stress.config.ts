import { defineConfig } from "vitest/config";

/**
 * `npm run test:stress`: the heavier reliability suites (faults injected into real runs, SSE
 * reconnect storms). Named `*.stress.ts` so the default `npm test` does not pick them up.
 * Run from .ci/run after `npm test`; budget about 5 minutes on 2 cores.
 */
export default defineConfig({
  test: {
    include: ["test/stress/**/*.stress.ts"],
    testTimeout: 180_000,
    hookTimeout: 60_000,
    maxWorkers: 2,
    globalSetup: ["test/global-setup.ts"],
  },
});
