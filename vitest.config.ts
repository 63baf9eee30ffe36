import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 600_000,
    hookTimeout: 180_000,
    // End-to-end tests start real `opencode serve` processes (~600 MB, ~3 s each) and spend
    // much of their time waiting on them: on 2 cores, 4 workers ran a set of e2e files in 0.64
    // of the time 2 took (24 GB holds their servers).
    maxWorkers: 4,
    globalSetup: ["test/global-setup.ts"],
  },
});
