/**
 * @module The course protocol's stream splitter: TCP bytes in, JSON objects out. The course client
 * ends each object with a NUL byte, but a stream carries several objects per read, an object split
 * across reads, and objects with no NUL between them (the course server dropped or crashed on
 * these). So objects are found by scanning, not by splitting on NUL: a small scanner tracks bracket
 * depth and whether it is inside a string (with its escapes), and a value ends when its depth
 * returns to 0. NUL and whitespace between values are skipped.
 *
 * It works on bytes, not text: every structural character is ASCII and no byte of a multi-byte
 * UTF-8 sequence is below 0x80, so a character split across reads is simply carried over, and each
 * complete object is decoded strictly on its own (invalid UTF-8 is reported, not replaced).
 *
 * Recovery, so one bad object never costs the next good one:
 * - bytes between values that cannot start one (text, numbers) are one garbage run, ending at the
 *   next NUL, `{` or `[`;
 * - a NUL inside a value (never valid JSON) ends that value as malformed;
 * - a value longer than `maxObjectBytes` is dropped and the rest of it skipped up to the next NUL;
 * - an array is scanned whole and reported, so the objects inside it are never acted on.
 */

const NUL = 0x00;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** One thing found in the stream: a JSON object, or bytes that were skipped and why. */
export type Piece =
  | { kind: "object"; value: Record<string, unknown>; bytes: number }
  | { kind: "malformed"; reason: string; bytes: number };

type State = "between" | "value" | "garbage" | "discard";

export interface SplitterOptions {
  /** Longest object accepted, in bytes; a longer one is dropped. */
  maxObjectBytes: number;
}

export class Splitter {
  readonly #max: number;
  #state: State = "between";
  #buf: Uint8Array;
  #len = 0;
  #depth = 0;
  #inString = false;
  #escaped = false;
  /** Bytes skipped in the current garbage or discard run. */
  #skipped = 0;
  #decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

  constructor(options: SplitterOptions) {
    this.#max = options.maxObjectBytes;
    this.#buf = new Uint8Array(Math.min(1024, options.maxObjectBytes));
  }

  /** Scans `chunk` and returns what it completed, in stream order. */
  push(chunk: Uint8Array): Piece[] {
    const out: Piece[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      switch (this.#state) {
        case "between":
          if (b === NUL || WHITESPACE.has(b)) continue;
          if (b === OPEN_BRACE || b === OPEN_BRACKET) this.#begin(b);
          else this.#startGarbage();
          continue;
        case "garbage":
          if (b === NUL || b === OPEN_BRACE || b === OPEN_BRACKET) {
            out.push(this.#endSkip("text outside an object"));
            if (b !== NUL) this.#begin(b);
          } else if (++this.#skipped >= this.#max) {
            // Report long runs as they go, so that a stream of garbage still shows in the log.
            out.push(this.#endSkip("text outside an object"));
            this.#state = "garbage";
          }
          continue;
        case "discard":
          if (b === NUL) out.push(this.#endSkip(`an object longer than ${this.#max} bytes`));
          else this.#skipped++;
          continue;
        case "value":
          this.#value(b, out);
          continue;
      }
    }
    return out;
  }

  /** The stream ended: whatever was incomplete is reported. */
  end(): Piece[] {
    const out: Piece[] = [];
    if (this.#state === "value") {
      out.push({
        kind: "malformed",
        reason: "an object cut off by the end of the stream",
        bytes: this.#len,
      });
    } else if (this.#state === "garbage") {
      out.push(this.#endSkip("text outside an object"));
    } else if (this.#state === "discard") {
      out.push(this.#endSkip(`an object longer than ${this.#max} bytes`));
    }
    this.#reset();
    return out;
  }

  #begin(b: number): void {
    this.#state = "value";
    this.#len = 0;
    this.#depth = 0;
    this.#inString = false;
    this.#escaped = false;
    this.#value(b, []);
  }

  #startGarbage(): void {
    this.#state = "garbage";
    this.#skipped = 1;
  }

  #endSkip(reason: string): Piece {
    const piece: Piece = { kind: "malformed", reason, bytes: this.#skipped };
    this.#reset();
    return piece;
  }

  #reset(): void {
    this.#state = "between";
    this.#len = 0;
    this.#skipped = 0;
  }

  #value(b: number, out: Piece[]): void {
    if (b === NUL) {
      out.push({
        kind: "malformed",
        reason: "an incomplete object ended by NUL",
        bytes: this.#len,
      });
      this.#reset();
      return;
    }
    if (this.#len >= this.#max) {
      this.#state = "discard";
      this.#skipped = this.#len + 1;
      this.#len = 0;
      return;
    }
    this.#append(b);
    if (this.#inString) {
      if (this.#escaped) this.#escaped = false;
      else if (b === BACKSLASH) this.#escaped = true;
      else if (b === QUOTE) this.#inString = false;
      return;
    }
    if (b === QUOTE) this.#inString = true;
    else if (b === OPEN_BRACE || b === OPEN_BRACKET) this.#depth++;
    else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
      if (--this.#depth === 0) {
        out.push(this.#complete());
        this.#reset();
      }
    }
  }

  #append(b: number): void {
    if (this.#len === this.#buf.length) {
      const grown = new Uint8Array(Math.min(this.#max, this.#buf.length * 2));
      grown.set(this.#buf);
      this.#buf = grown;
    }
    this.#buf[this.#len++] = b;
  }

  #complete(): Piece {
    const bytes = this.#len;
    if (this.#buf[0] === OPEN_BRACKET) return { kind: "malformed", reason: "an array", bytes };
    let text: string;
    try {
      text = this.#decoder.decode(this.#buf.subarray(0, bytes));
    } catch {
      return { kind: "malformed", reason: "invalid UTF-8", bytes };
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return { kind: "malformed", reason: "invalid JSON", bytes };
    }
    // A balanced run starting with "{" that parses is always an object.
    return { kind: "object", value: value as Record<string, unknown>, bytes };
  }
}
