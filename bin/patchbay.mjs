#!/usr/bin/env node
// Entry point for `npx patchbay`: runs the TypeScript sources through tsx, so a checkout
// works right after `npm install` with no build step.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
await main(process.argv.slice(2));
