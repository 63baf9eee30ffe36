/**
 * Secrets a run's commands see as environment variables: the run's own
 * (`environment.secrets`) and copies of the owner's stored ones it names
 * (`environment.secretNames`, stored with `POST /api/v1/secrets`). At rest each is sealed like
 * the per-run model key: a run's copies under the run id (deleted with the session), an
 * owner's under the owner id. In memory a live run's values are kept only to hand them to its
 * commands and to mask them: every text Patchbay records for the run passes through `mask`,
 * which writes `[secret:NAME]` where a value was.
 */
import * as z from "zod";
import { EngineError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { RunRecord } from "../run/schema.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { OwnerSecretRecord, RunStore } from "../store/store.ts";
import type { RunEnvironmentRuntime } from "./index.ts";
import { MAX_SECRETS, SecretName, SecretValue, type EnvironmentInput } from "./schema.ts";

/** Body of `POST /api/v1/secrets` and input of the `put_secret` tool. */
export const OwnerSecretInput = z.object({ name: SecretName, value: SecretValue }).strict();
export type OwnerSecretInput = z.infer<typeof OwnerSecretInput>;

/** An owner's secret as listed: never its value. */
export const OwnerSecretView = z.object({ name: z.string(), createdAt: z.string(), updatedAt: z.string() });
export type OwnerSecretView = z.infer<typeof OwnerSecretView>;

/** Most secrets one owner may store. */
export const MAX_OWNER_SECRETS = 200;

/** A run's copy of a secret is stored as `env:NAME` beside its other sealed values (model key, resume). */
const RUN_SECRET_PREFIX = "env:";
/** Variables the agent's server and Patchbay itself set: a secret may not replace them. */
const RESERVED_NAME = /^(OPENCODE_|PATCHBAY_)|^(PATH|HOME|TMPDIR|USER|LANG|TERM|LD_PRELOAD|LD_LIBRARY_PATH)$/;

/** The owner's stored secrets (write scope to change, read to list names). */
export interface OwnerSecrets {
  /** Store or replace one. Throws invalid_request for a bad name or value, or past {@link MAX_OWNER_SECRETS}. */
  put(ownerId: string, input: unknown): Promise<OwnerSecretView>;
  list(ownerId: string): Promise<OwnerSecretView[]>;
  /** False when the owner has no secret of that name. */
  remove(ownerId: string, name: string): Promise<boolean>;
}

/** A new run's secrets, values in hand between the checks and the run's creation. */
export interface ResolvedSecrets {
  readonly entries: readonly { name: string; value: string }[];
}

/** The engine's side of run secrets: the {@link RunEnvironmentRuntime} seam plus sealing and forgetting. */
export interface RunSecrets extends RunEnvironmentRuntime {
  /**
   * Check a new run's secrets and read the named stored ones (before the run exists). Throws
   * secret_not_found for a name the owner has not stored, invalid_request for a reserved or
   * doubled name.
   */
  resolve(ownerId: string, input: EnvironmentInput | undefined): Promise<ResolvedSecrets>;
  /** Seal the run's copies (once it is stored) and keep them ready for `env` and `mask`. */
  seal(runId: string, secrets: ResolvedSecrets): Promise<void>;
  /** `mask` over every string in a value (events, run fields): a copy when anything changed. */
  maskDeep<T>(runId: string, value: T): T;
  /** The session ended: drop the values from memory (the sealed copies go with the run's secrets). */
  forget(runId: string): void;
}

/** What this process holds for a live run with secrets. */
interface Loaded {
  env: Record<string, string>;
  mask: (text: string) => string;
}

export function createOwnerSecrets(deps: { store: RunStore; box: SecretBox; now: () => Date }): OwnerSecrets {
  const { store, box } = deps;
  return {
    async put(ownerId, raw) {
      const input = parseSecretInput(raw);
      const existing = await store.getOwnerSecret(ownerId, input.name);
      if (!existing && (await store.listOwnerSecrets(ownerId)).length >= MAX_OWNER_SECRETS)
        throw new EngineError("invalid_request", `an owner may store at most ${MAX_OWNER_SECRETS} secrets`);
      const t = deps.now().toISOString();
      const sealed = box.seal(ownerScope(ownerId), input.name, input.value);
      const record: OwnerSecretRecord = {
        ownerId,
        name: input.name,
        iv: sealed.iv,
        tag: sealed.tag,
        data: sealed.data,
        createdAt: existing?.createdAt ?? t,
        updatedAt: t,
      };
      await store.putOwnerSecret(record);
      return view(record);
    },
    async list(ownerId) {
      return (await store.listOwnerSecrets(ownerId)).map(view);
    },
    remove: (ownerId, name) => store.deleteOwnerSecret(ownerId, name),
  };
}

export function createRunSecrets(deps: { store: RunStore; box: SecretBox; log: Logger }): RunSecrets {
  const { store, box, log } = deps;
  const loaded = new Map<string, Loaded>();
  const loading = new Map<string, Promise<Loaded | undefined>>();

  const hold = (runId: string, entries: readonly { name: string; value: string }[]): Loaded | undefined => {
    if (entries.length === 0) return undefined;
    const previous = loaded.get(runId);
    if (previous) return previous;
    for (const e of entries) log.redact(e.value, `[secret:${e.name}]`);
    const entry: Loaded = {
      env: Object.fromEntries(entries.map((e) => [e.name, e.value])),
      mask: masker(entries),
    };
    loaded.set(runId, entry);
    return entry;
  };

  /** The run's values: in memory for a live run, else read back from its sealed copies (after a restart). */
  const load = (run: Pick<RunRecord, "id" | "environment">): Promise<Loaded | undefined> => {
    const names = run.environment?.secretNames ?? [];
    if (names.length === 0) return Promise.resolve(undefined);
    const held = loaded.get(run.id);
    if (held) return Promise.resolve(held);
    let p = loading.get(run.id);
    if (!p) {
      p = (async () => {
        const entries: { name: string; value: string }[] = [];
        for (const name of names) {
          // Gone once the session ended: nothing runs for the run any more.
          const record = await store.getSecret(run.id, RUN_SECRET_PREFIX + name);
          if (record) entries.push({ name, value: box.open(record) });
        }
        return hold(run.id, entries);
      })().finally(() => loading.delete(run.id));
      loading.set(run.id, p);
    }
    return p;
  };

  const maskWith = (runId: string, text: string): string => loaded.get(runId)?.mask(text) ?? text;

  return {
    async resolve(ownerId, input) {
      const own = Object.entries(input?.secrets ?? {}).map(([name, value]) => ({ name, value }));
      const named = input?.secretNames ?? [];
      const all = [...own.map((e) => e.name), ...named];
      const doubled = all.find((n, i) => all.indexOf(n) !== i);
      if (doubled)
        throw new EngineError("invalid_request", `environment: the secret ${doubled} is named twice`, {
          name: doubled,
        });
      if (all.length > MAX_SECRETS)
        throw new EngineError("invalid_request", `environment: at most ${MAX_SECRETS} secrets per run`);
      const reserved = all.find((n) => RESERVED_NAME.test(n));
      if (reserved)
        throw new EngineError(
          "invalid_request",
          `environment: ${reserved} is set by Patchbay and cannot be a secret's name`,
          { name: reserved },
        );
      const entries = [...own];
      for (const name of named) {
        const record = await store.getOwnerSecret(ownerId, name);
        if (!record)
          throw new EngineError(
            "secret_not_found",
            `no stored secret named ${name} (POST /api/v1/secrets stores one)`,
            {
              name,
            },
          );
        entries.push({
          name,
          value: box.open({ runId: ownerScope(ownerId), name, iv: record.iv, tag: record.tag, data: record.data }),
        });
      }
      return { entries };
    },

    async seal(runId, secrets) {
      for (const { name, value } of secrets.entries)
        await store.putSecret(box.seal(runId, RUN_SECRET_PREFIX + name, value));
      hold(runId, secrets.entries);
    },

    async env(run) {
      return { ...(await load(run))?.env };
    },

    mask: (text, run) => maskWith(run.id, text),

    maskDeep<T>(runId: string, value: T): T {
      const entry = loaded.get(runId);
      return entry ? (maskValue(value, entry.mask) as T) : value;
    },

    forget(runId) {
      const entry = loaded.get(runId);
      if (!entry) return;
      loaded.delete(runId);
      for (const value of Object.values(entry.env)) log.unredact(value);
    },
  };
}

/** `[secret:NAME]` for every value, in one pass: a replacement is never masked again. */
export function masker(entries: readonly { name: string; value: string }[]): (text: string) => string {
  // Longest first, so a secret that contains another is masked whole.
  const sorted = [...entries].sort((a, b) => b.value.length - a.value.length);
  const names = new Map<string, string>();
  for (const e of sorted) if (!names.has(e.value)) names.set(e.value, e.name);
  const pattern = new RegExp([...names.keys()].map(escapeRegExp).join("|"), "g");
  return (text) => (text ? text.replace(pattern, (m) => `[secret:${names.get(m)}]`) : text);
}

function maskValue(value: unknown, mask: (s: string) => string): unknown {
  if (typeof value === "string") return mask(value);
  if (Array.isArray(value)) return value.map((v) => maskValue(v, mask));
  if (value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype)
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskValue(v, mask)]));
  return value;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Associated data of an owner's secret: never a run id (those have no colon). */
function ownerScope(ownerId: string): string {
  return `owner:${ownerId}`;
}

function parseSecretInput(raw: unknown): OwnerSecretInput {
  const parsed = OwnerSecretInput.safeParse(raw);
  if (parsed.success) {
    if (RESERVED_NAME.test(parsed.data.name))
      throw new EngineError(
        "invalid_request",
        `name: ${parsed.data.name} is set by Patchbay and cannot be a secret's name`,
      );
    return parsed.data;
  }
  // Never echo the value back: only the path and the message.
  const issue = parsed.error.issues[0]!;
  throw new EngineError("invalid_request", `${issue.path.join(".") || "body"}: ${issue.message}`);
}

function view(r: OwnerSecretRecord): OwnerSecretView {
  return { name: r.name, createdAt: r.createdAt, updatedAt: r.updatedAt };
}
