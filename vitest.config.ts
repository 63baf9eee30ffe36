import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 600_000,
    hookTimeout: 180_000,
    // End-to-end tests start real `opencode serve` processes (~600 MB, ~3 s each):
    // keep parallelism low on small machines.
    maxWorkers: 2,
    globalSetup: ["test/global-setup.ts"],
  },
});
