/**
 * @module Structured logging: one JSON object per line on stderr, with time, level, node and
 * event, filtered by LOG_LEVEL. Callers pass fields, never pre-formatted text, and never secrets.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  with(fields: LogFields): Logger;
}

/** Errors become `{error, stack}`: a stack only where a bug may be behind it. */
function serialise(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    if (v instanceof Error) {
      out[k] = v.message;
      if (v.stack) out.stack = v.stack;
    } else if (v !== undefined) {
      out[k] = v;
    }
  }
  return out;
}

export function createLogger(
  level: LogLevel,
  base: LogFields = {},
  write: (line: string) => void = (line) => console.error(line),
): Logger {
  const min = RANK[level];
  const emit = (lvl: LogLevel, event: string, fields?: LogFields) => {
    if (RANK[lvl] < min) return;
    const record = { time: new Date().toISOString(), level: lvl, ...base, event };
    write(JSON.stringify(fields ? { ...record, ...serialise(fields) } : record));
  };
  return {
    debug: (event, fields) => emit("debug", event, fields),
    info: (event, fields) => emit("info", event, fields),
    warn: (event, fields) => emit("warn", event, fields),
    error: (event, fields) => emit("error", event, fields),
    with: (fields) => createLogger(level, { ...base, ...fields }, write),
  };
}
