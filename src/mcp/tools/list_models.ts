/** `list_models`: which model ids a run may use. */
import * as z from "zod";
import { ModelCatalog } from "../../engine/run/schema.ts";
import { defineTool } from "../tool.ts";

export const ListModelsArgs = z.object({}).strict();

export const ListModelsResult = ModelCatalog.extend({
  anyModel: z.boolean().describe("true when any model id is accepted"),
});

export const listModelsTool = defineTool({
  name: "list_models",
  title: "List models",
  description:
    "List the model ids this Patchbay server accepts for start_run's modelId (OpenRouter-style ids such as anthropic/claude-sonnet-4.6), and the default model used when none is given. Returns defaultModel, models, textOnlyModels (models that take no images) and anyModel (true when the server accepts any id).",
  input: ListModelsArgs,
  output: ListModelsResult,
  annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
  scope: "read:builder",
  async run(_args, ctx) {
    const { defaultModel, models, textOnlyModels } = ctx.engine.models();
    const structured = { defaultModel, models, textOnlyModels, anyModel: models.length === 0 };
    const text =
      `Default model: ${defaultModel}\n${models.length ? `Allowed: ${models.join(", ")}` : "Any model id is accepted."}` +
      (textOnlyModels.length ? `\nText-only (no images): ${textOnlyModels.join(", ")}` : "");
    return { structured, text };
  },
});
