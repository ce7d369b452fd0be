/**
 * @module The closed set of failures a client can be told about (PROTOCOL.md, Errors). The domain
 * throws `ChatError`; only the edges map a code to a frame, an HTTP status or a close code.
 */

export const ERROR_CODES = [
  "bad_json",
  "bad_frame",
  "unauthenticated",
  "bad_credentials",
  "already_online",
  "name_taken",
  "not_found",
  "forbidden",
  "rate_limited",
  "unavailable",
  "internal",
] as const;

export type ErrorCode = typeof ERROR_CODES[number];

export class ChatError extends Error {
  override name = "ChatError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/**
 * SQLSTATE classes that mean "the database is not there right now" rather than "this request is
 * wrong": connection exceptions (08), operator intervention such as shutdown (57P), insufficient
 * resources (53). postgres.js adds its own codes for sockets that close or never open.
 */
const UNAVAILABLE_PREFIXES = ["08", "57P", "53"];
const UNAVAILABLE_DRIVER_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
]);

/** True when `error` says the database could not be reached, so nothing was stored. */
export function isUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== "string") return false;
  // Operating-system socket errors (ECONNRESET, ENOTCONN, EHOSTUNREACH, ...) all mean the same.
  if (/^E[A-Z]+$/.test(code) && typeof (error as { errno?: unknown }).errno === "number") {
    return true;
  }
  return UNAVAILABLE_DRIVER_CODES.has(code) || UNAVAILABLE_PREFIXES.some((p) => code.startsWith(p));
}

/** Maps any thrown value to the error a client sees; unknown failures are `internal`. */
export function toChatError(error: unknown): ChatError {
  if (error instanceof ChatError) return error;
  if (isUnavailable(error)) {
    return new ChatError(
      "unavailable",
      "The database cannot be reached: nothing was stored, retry later",
    );
  }
  return new ChatError("internal", "Something went wrong on the server: it has been logged");
}
