/**
 * API keys: `pb_` + 32 random bytes (base64url). Only the sha256 of a key is stored; the
 * plaintext is returned once, by `create`. Verification hashes the presented key, looks the
 * hash up and compares it in constant time; revoked keys never verify.
 */
import crypto from "node:crypto";
import * as z from "zod";
import { EngineError } from "../errors.ts";
import { ApiKeyRecord, type RunStore, type Scope } from "../store/store.ts";

export const KEY_PREFIX = "pb_";
export const DEFAULT_SCOPES: readonly Scope[] = ["read:builder", "write:builder"];
/** lastUsedAt is written at most this often per key, so busy keys do not rewrite the store on every request. */
const LAST_USED_RESOLUTION_MS = 60_000;
/** Longer than any key we issue (3 + 43 chars); anything longer is refused before hashing. */
const MAX_KEY_LENGTH = 200;

export const CreateKeyInput = z
  .object({
    name: z.string().trim().min(1, "name must not be empty").max(100),
    ownerId: z
      .string()
      .min(1)
      .max(100)
      .optional()
      .describe(
        "The user the key acts as (keys of one owner see the same runs); default the instance's owner, PATCHBAY_LOCAL_OWNER",
      ),
    scopes: ApiKeyRecord.shape.scopes.min(1, "at least one scope is required").optional(),
    /** Repositories the key may start runs on (`owner/name`, `owner/*`); leave out for any. */
    repos: ApiKeyRecord.shape.repos,
  })
  .strict();
export type CreateKeyInput = z.input<typeof CreateKeyInput>;

export interface CreatedKey {
  /** The key itself. Shown once: it is not stored and cannot be recovered. */
  key: string;
  record: ApiKeyRecord;
}

export interface KeyService {
  /**
   * Issue a key. A key acts as its owner: every key of one owner sees the same runs. `ownerId`
   * defaults to the instance's owner (`defaultOwnerId`); another `ownerId` is another tenant.
   */
  create(input: CreateKeyInput): Promise<CreatedKey>;
  /** The key's record if it is valid and not revoked, else undefined. */
  verify(key: string): Promise<ApiKeyRecord | undefined>;
  /**
   * The record of the key whose sha256 (hex) is `hash`, if it is not revoked: a dashboard
   * session holds its key's hash, never the key, and re-checks it on every request.
   */
  verifyHash(hash: string): Promise<ApiKeyRecord | undefined>;
  list(): Promise<ApiKeyRecord[]>;
  /** Revoke a key; revoking twice keeps the first time. Throws `key_not_found`. */
  revoke(id: string): Promise<ApiKeyRecord>;
  /** True once any key was ever issued (revoked ones count), so `serve` creates the first admin key only once. */
  hasAnyKey(): Promise<boolean>;
}

export interface KeyServiceOptions {
  store: RunStore;
  /** Owner of keys created without one: the instance's user (`PATCHBAY_LOCAL_OWNER`). */
  defaultOwnerId: string;
  /** Default: the system clock. */
  clock?: () => Date;
}

export function createKeyService({ store, defaultOwnerId, clock = () => new Date() }: KeyServiceOptions): KeyService {
  async function verifyDigest(digest: Buffer): Promise<ApiKeyRecord | undefined> {
    const record = await store.findKeyByHash(digest.toString("hex"));
    if (!record) return undefined;
    // The lookup found it by hash; compare the full digest anyway, in constant time, so a
    // store that matched loosely (another backend, a prefix index) can never let a key in.
    const stored = Buffer.from(record.hash, "hex");
    if (stored.length !== digest.length || !crypto.timingSafeEqual(stored, digest)) return undefined;
    if (record.revokedAt) return undefined;
    const now = clock();
    const lastUsed = record.lastUsedAt ? Date.parse(record.lastUsedAt) : Number.NEGATIVE_INFINITY;
    if (now.getTime() - lastUsed >= LAST_USED_RESOLUTION_MS) {
      return (await store.updateKey(record.id, { lastUsedAt: now.toISOString() })) ?? record;
    }
    return record;
  }

  return {
    async create(input) {
      const parsed = CreateKeyInput.safeParse(input);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new EngineError("invalid_request", `invalid key: ${issue.path.join(".") || "input"}: ${issue.message}`);
      }
      const { name, ownerId, scopes, repos } = parsed.data;
      const key = KEY_PREFIX + crypto.randomBytes(32).toString("base64url");
      const record: ApiKeyRecord = {
        id: `key_${crypto.randomBytes(9).toString("base64url")}`,
        name,
        ownerId: ownerId ?? defaultOwnerId,
        hash: hashKey(key),
        // Enough to tell keys apart in a list, far too little to guess the rest (40 of 256 bits).
        prefix: key.slice(0, KEY_PREFIX.length + 8),
        scopes: [...new Set(scopes ?? DEFAULT_SCOPES)],
        ...(repos ? { repos: [...new Set(repos)] } : {}),
        createdAt: clock().toISOString(),
        revokedAt: null,
        lastUsedAt: null,
      };
      await store.createKey(record);
      return { key, record };
    },

    async verify(key) {
      if (typeof key !== "string" || !key.startsWith(KEY_PREFIX) || key.length > MAX_KEY_LENGTH) return undefined;
      return verifyDigest(crypto.createHash("sha256").update(key).digest());
    },

    async verifyHash(hash) {
      if (!/^[0-9a-f]{64}$/.test(hash)) return undefined;
      return verifyDigest(Buffer.from(hash, "hex"));
    },

    list: () => store.listKeys(),

    async revoke(id) {
      const current = (await store.listKeys()).find((k) => k.id === id);
      if (!current) throw new EngineError("key_not_found", `API key ${id} not found`, { keyId: id });
      if (current.revokedAt) return current;
      const updated = await store.updateKey(id, { revokedAt: clock().toISOString() });
      if (!updated) throw new EngineError("key_not_found", `API key ${id} not found`, { keyId: id });
      return updated;
    },

    async hasAnyKey() {
      return (await store.listKeys()).length > 0;
    },
  };
}

/** sha256 of a key, hex: what the store keeps. */
export function hashKey(key: string): string {
  return crypto.createHash("sha256").update(key).digest("hex");
}
