/**
 * What a run or message brings for its turn besides the prompt, checked before anything is
 * stored or started: the output schema compiles (invalid_output_schema), the images are
 * images (invalid_image) and the model sees them (model_without_vision).
 */
import { assertFitsModelRequest, assertVision, checkImages } from "./images.ts";
import type { OutputSchemas } from "./output.ts";
import type { ImageInput, OutputSchema } from "./schema.ts";
import type { TurnInput } from "./turn.ts";

export function prepareTurnInput(
  outputs: OutputSchemas,
  input: { outputSchema?: OutputSchema | undefined; images?: ImageInput[] | undefined },
  modelId: string,
  limits: { textOnlyModels: readonly string[]; maxModelRequestBytes: number },
): TurnInput {
  if (input.outputSchema) outputs.compile(input.outputSchema);
  if (!input.images?.length) return input.outputSchema ? { outputSchema: input.outputSchema } : {};
  assertVision(limits.textOnlyModels, modelId);
  const images = checkImages(input.images);
  assertFitsModelRequest(input.images, limits.maxModelRequestBytes);
  return { ...(input.outputSchema ? { outputSchema: input.outputSchema } : {}), images };
}
