/**
 * Per-run secrets (a user's OpenRouter key) encrypted at rest with AES-256-GCM. The run id and
 * the secret's name are the associated data, so a ciphertext copied onto another run, or
 * under another name, fails to decrypt instead of handing its key to the wrong run.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { EngineError } from "../errors.ts";
import type { SecretRecord } from "../store/store.ts";

export const SECRET_KEY_FILE = "secret.key";
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface SecretKeyOptions {
  dataDir: string;
  /** `PATCHBAY_SECRET_KEY`: 32 bytes, base64. Wins over the file. */
  secretKey?: string;
}

/**
 * The secrets key: from config if given, else `<dataDir>/secret.key` (32 raw bytes, 0600),
 * created on first use. Losing the file only loses in-flight per-run secrets, which is why
 * generating one is an acceptable default.
 */
export function loadOrCreateSecretKey(opts: SecretKeyOptions): Buffer {
  if (opts.secretKey !== undefined) {
    const key = Buffer.from(opts.secretKey, "base64");
    if (key.length !== KEY_BYTES)
      throw new EngineError(
        "invalid_request",
        `PATCHBAY_SECRET_KEY must be ${KEY_BYTES} bytes, base64-encoded (got ${key.length} bytes)`,
      );
    return key;
  }
  fs.mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(opts.dataDir, SECRET_KEY_FILE);
  const fresh = crypto.randomBytes(KEY_BYTES);
  try {
    // "wx": never overwrite an existing key, which would make every stored secret unreadable.
    fs.writeFileSync(file, fresh, { flag: "wx", mode: 0o600 });
    return fresh;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
  }
  const key = fs.readFileSync(file);
  if (key.length !== KEY_BYTES) {
    throw new EngineError(
      "internal",
      `${file} is corrupt: expected ${KEY_BYTES} bytes, found ${key.length}; remove it to generate a new key (stored per-run secrets will be lost)`,
    );
  }
  return key;
}

export interface SecretBox {
  /** Encrypt `plaintext` for one run under one name. */
  seal(runId: string, name: string, plaintext: string): SecretRecord;
  /** Decrypt a record. Throws EngineError `internal` if the key is wrong or the record was altered or moved. */
  open(record: SecretRecord): string;
}

export function createSecretBox(key: Buffer): SecretBox {
  if (key.length !== KEY_BYTES)
    throw new EngineError("internal", `the secrets key must be ${KEY_BYTES} bytes (got ${key.length})`);
  return {
    seal(runId, name, plaintext) {
      const iv = crypto.randomBytes(IV_BYTES);
      const cipher = crypto.createCipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(associatedData(runId, name));
      const data = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
      return {
        runId,
        name,
        iv: iv.toString("base64"),
        tag: cipher.getAuthTag().toString("base64"),
        data: data.toString("base64"),
      };
    },

    open(record) {
      const iv = Buffer.from(record.iv, "base64");
      const tag = Buffer.from(record.tag, "base64");
      // A short tag would weaken GCM's check: accept only full-length tags and IVs.
      if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw cannotOpen(record, "malformed IV or tag");
      const decipher = crypto.createDecipheriv("aes-256-gcm", key, iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(associatedData(record.runId, record.name));
      decipher.setAuthTag(tag);
      try {
        return Buffer.concat([decipher.update(Buffer.from(record.data, "base64")), decipher.final()]).toString("utf8");
      } catch (e) {
        // final() throws exactly when authentication fails; anything else is a real bug.
        if (e instanceof Error && /unable to authenticate/i.test(e.message)) {
          throw cannotOpen(record, "wrong secrets key, or the record was altered or moved from another run");
        }
        throw e;
      }
    },
  };
}

/** Length-prefixed, so ("a:b", "c") and ("a", "b:c") can never share associated data. */
function associatedData(runId: string, name: string): Buffer {
  const r = Buffer.from(runId, "utf8");
  const n = Buffer.from(name, "utf8");
  const len = Buffer.alloc(8);
  len.writeUInt32BE(r.length, 0);
  len.writeUInt32BE(n.length, 4);
  return Buffer.concat([Buffer.from("patchbay-secret-v1\0"), len, r, n]);
}

function cannotOpen(record: SecretRecord, why: string): EngineError {
  return new EngineError("internal", `cannot decrypt secret "${record.name}" of run ${record.runId}: ${why}`, {
    runId: record.runId,
    name: record.name,
  });
}
