/** Input fields several tools share (tool inputs derive from the engine schemas; these are the MCP-only ones). */
import * as z from "zod";

export const RunIdField = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, "is not a run id")
  .describe("The run id returned by start_run (run_...)");
