/**
 * Images on a prompt: checked before a run or turn exists (base64, at most 10 MB decoded, the
 * bytes what `mimeType` says by their magic number, a model that sees images), handed to the
 * agent as file parts, and recorded only as a description (type, size, sha256), never whole.
 */
import { createHash } from "node:crypto";
import type { AgentImage } from "../agent/agent.ts";
import { EngineError } from "../errors.ts";
import { MAX_IMAGE_BYTES, type ImageInput } from "./schema.ts";

/** What the event log keeps of an image. */
export interface ImageDescription {
  mimeType: string;
  bytes: number;
  sha256: string;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const MAGIC: Record<ImageInput["mimeType"], (b: Buffer) => boolean> = {
  "image/png": (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
  "image/jpeg": (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff,
  "image/gif": (b) => ["GIF87a", "GIF89a"].includes(b.subarray(0, 6).toString("latin1")),
  "image/webp": (b) =>
    b.subarray(0, 4).toString("latin1") === "RIFF" && b.subarray(8, 12).toString("latin1") === "WEBP",
};

/**
 * Decode and check a message's images; throws invalid_image naming the first bad one.
 * Returns them as the agent takes them, with their descriptions.
 */
export function checkImages(images: readonly ImageInput[]): { image: AgentImage; description: ImageDescription }[] {
  return images.map((img, i) => {
    const at = `images.${i}`;
    if (img.data.length % 4 !== 0 || !BASE64.test(img.data))
      throw new EngineError("invalid_image", `${at}: data is not base64 (no data: prefix, no line breaks)`);
    const bytes = Buffer.from(img.data, "base64");
    if (bytes.length > MAX_IMAGE_BYTES)
      throw new EngineError("invalid_image", `${at}: ${bytes.length} bytes; at most ${MAX_IMAGE_BYTES} decoded`);
    if (!MAGIC[img.mimeType](bytes))
      throw new EngineError("invalid_image", `${at}: the bytes are not a ${img.mimeType} image`);
    return {
      image: { mimeType: img.mimeType, data: img.data },
      description: {
        mimeType: img.mimeType,
        bytes: bytes.length,
        sha256: createHash("sha256").update(bytes).digest("hex"),
      },
    };
  });
}

/** Room left in a model request for the prompt, the history and the tools besides the images. */
const REQUEST_HEADROOM_BYTES = 1024 * 1024;

/**
 * Refuse images that cannot fit in one model request through the gateway (its body limit,
 * PATCHBAY_GATEWAY_MAX_BODY_BYTES): the turn would fail with the gateway's 413 otherwise.
 */
export function assertFitsModelRequest(images: readonly ImageInput[], maxRequestBytes: number): void {
  const total = images.reduce((n, i) => n + i.data.length, 0);
  if (total + REQUEST_HEADROOM_BYTES > maxRequestBytes)
    throw new EngineError(
      "invalid_image",
      `the images are ${total} bytes of base64; a model request on this server holds at most ${maxRequestBytes - REQUEST_HEADROOM_BYTES} of images (PATCHBAY_GATEWAY_MAX_BODY_BYTES less 1 MiB)`,
    );
}

/** Refuse images for a model the catalog marks text-only (model_without_vision). */
export function assertVision(textOnlyModels: readonly string[], modelId: string): void {
  if (textOnlyModels.includes(modelId))
    throw new EngineError("model_without_vision", `model ${modelId} takes no images (the catalog marks it text-only)`, {
      modelId,
    });
}
