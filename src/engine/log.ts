/**
 * A small structured logger writing one JSON line per entry to a stream (stderr by default:
 * stdout belongs to the MCP stdio transport). Registered secrets are replaced by
 * `[redacted]` in every line, a last line of defence behind not logging them at all.
 */
export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
  /** Never print this value (API keys, tokens): `as` instead (default `[redacted]`). */
  redact(secret: string | undefined, as?: string): void;
  /** Undo one `redact` of this value (a run's secret whose session ended); counted, so two runs may share a value. */
  unredact(secret: string): void;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; default process.stderr. */
  write?: (line: string) => void;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const min = ORDER[opts.level ?? "info"];
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  /** Each value with what replaces it, and how many `redact` calls hold it. */
  const secrets = new Map<string, { as: string; holds: number }>();
  const scrub = (s: string) => {
    // Longest first, so a secret that contains another is replaced whole.
    for (const [secret, { as }] of [...secrets].sort((a, b) => b[0].length - a[0].length))
      if (s.includes(secret)) s = s.split(secret).join(as);
    return s;
  };
  const make = (bound: Record<string, unknown>): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
      if (ORDER[level] < min) return;
      const entry = { t: new Date().toISOString(), level, msg, ...bound, ...fields };
      write(scrub(JSON.stringify(entry, errorReplacer)) + "\n");
    };
    return {
      debug: (m, f) => emit("debug", m, f),
      info: (m, f) => emit("info", m, f),
      warn: (m, f) => emit("warn", m, f),
      error: (m, f) => emit("error", m, f),
      child: (fields) => make({ ...bound, ...fields }),
      redact: (secret, as = "[redacted]") => {
        if (!secret || secret.length < 6) return;
        for (const form of jsonForms(secret)) {
          const held = secrets.get(form);
          if (held) held.holds++;
          else secrets.set(form, { as, holds: 1 });
        }
      },
      unredact: (secret) => {
        for (const form of jsonForms(secret)) {
          const held = secrets.get(form);
          if (held && --held.holds === 0) secrets.delete(form);
        }
      },
    };
  };
  return make({});
}

/** A value as it appears in a JSON line: itself, and escaped when it holds quotes, newlines or backslashes. */
function jsonForms(secret: string): Set<string> {
  return new Set([secret, JSON.stringify(secret).slice(1, -1)]);
}

function errorReplacer(_key: string, value: unknown) {
  if (value instanceof Error)
    return { name: value.name, message: value.message, code: (value as { code?: unknown }).code };
  return value;
}

/** A logger that drops everything (tests, quiet CLI). */
export const silentLogger: Logger = createLogger({ level: "silent" });
