/**
 * @module The terminal client's input and output. On a terminal it reads keys in raw mode and keeps
 * the line being typed itself, so that a message arriving meanwhile is printed above that line and
 * the prompt with the half-typed text is drawn again below it. With piped stdin it reads plain lines
 * and prints no prompts. Both end with `null` at the end of input.
 */

/** Returned by `readLine` when its signal aborted the wait. */
export const ABORTED = Symbol("aborted");

export interface ReadOptions {
  /** Do not echo what is typed (passwords). */
  secret?: boolean;
  /** Gives up the wait (the session ended under the prompt); the next line stays unread. */
  signal?: AbortSignal;
}

export interface Terminal {
  readonly interactive: boolean;
  /** The next line, or null at the end of input (Ctrl-D, Ctrl-C, or the end of piped stdin). */
  readLine(prompt: string, options?: ReadOptions): Promise<string | null | typeof ABORTED>;
  /** Prints `text` (one or more lines) above the line being typed. */
  print(text: string): void;
  /** Gives the terminal back as it was. */
  close(): void;
}

interface Reader {
  read(p: Uint8Array): Promise<number | null>;
  readonly readable: ReadableStream<Uint8Array>;
  isTerminal(): boolean;
  setRaw(mode: boolean): void;
}

interface Writer {
  writeSync(p: Uint8Array): number;
}

const CLEAR_LINE = "\r\x1b[2K";

export class StdioTerminal implements Terminal {
  readonly interactive: boolean;
  #stdin: Reader;
  #stdout: Writer;
  #encoder = new TextEncoder();
  #queue: string[] = [];
  #ended = false;
  #waiter: ((line: string | null | typeof ABORTED) => void) | null = null;
  #prompt = "";
  #secret = false;
  #buffer = "";
  #escape: 0 | 1 | 2 = 0;
  #raw = false;

  constructor(stdin: Reader = Deno.stdin, stdout: Writer = Deno.stdout) {
    this.#stdin = stdin;
    this.#stdout = stdout;
    this.interactive = stdin.isTerminal();
    if (this.interactive) {
      stdin.setRaw(true);
      this.#raw = true;
      void this.#readKeys();
    } else {
      void this.#readLines();
    }
  }

  readLine(prompt: string, options: ReadOptions = {}): Promise<string | null | typeof ABORTED> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    if (this.#ended) return Promise.resolve(null);
    if (options.signal?.aborted) return Promise.resolve(ABORTED);
    this.#prompt = prompt;
    this.#secret = options.secret ?? false;
    this.#redraw();
    return new Promise((resolve) => {
      const abort = () => {
        this.#waiter = null;
        this.#prompt = "";
        this.#redraw();
        resolve(ABORTED);
      };
      options.signal?.addEventListener("abort", abort, { once: true });
      this.#waiter = (line) => {
        options.signal?.removeEventListener("abort", abort);
        resolve(line);
      };
    });
  }

  print(text: string): void {
    if (!this.interactive) {
      this.#write(`${text}\n`);
      return;
    }
    this.#write(`${CLEAR_LINE}${text.replaceAll("\n", "\r\n")}\r\n${this.#promptLine()}`);
  }

  close(): void {
    if (this.#raw) {
      this.#raw = false;
      try {
        this.#stdin.setRaw(false);
      } catch {
        // stdin is already gone.
      }
    }
  }

  #write(text: string) {
    const bytes = this.#encoder.encode(text);
    for (let done = 0; done < bytes.length;) done += this.#stdout.writeSync(bytes.subarray(done));
  }

  #promptLine(): string {
    return this.#prompt + (this.#secret ? "" : this.#buffer);
  }

  #redraw() {
    if (this.interactive) this.#write(`${CLEAR_LINE}${this.#promptLine()}`);
  }

  #deliver(line: string | null) {
    const waiter = this.#waiter;
    if (line === null) this.#ended = true;
    if (waiter) {
      this.#waiter = null;
      this.#prompt = "";
      waiter(line);
    } else if (line !== null) {
      this.#queue.push(line);
    }
  }

  async #readLines() {
    const decoder = new TextDecoder();
    let pending = "";
    try {
      for await (const chunk of this.#stdin.readable) {
        pending += decoder.decode(chunk, { stream: true });
        const lines = pending.split("\n");
        pending = lines.pop()!;
        for (const line of lines) this.#deliver(line.replace(/\r$/, ""));
      }
      pending += decoder.decode();
      if (pending) this.#deliver(pending.replace(/\r$/, ""));
    } finally {
      this.#deliver(null);
    }
  }

  async #readKeys() {
    const decoder = new TextDecoder();
    const chunk = new Uint8Array(1024);
    try {
      while (!this.#ended) {
        const n = await this.#stdin.read(chunk);
        if (n === null) break;
        for (const key of decoder.decode(chunk.subarray(0, n), { stream: true })) this.#key(key);
      }
    } finally {
      this.#deliver(null);
    }
  }

  /** One key in raw mode. Only appending and erasing at the end: no cursor movement. */
  #key(key: string) {
    if (this.#escape === 1) {
      // ESC [ … or ESC O … start a sequence (arrows, function keys); anything else is Alt+key.
      this.#escape = key === "[" || key === "O" ? 2 : 0;
      return;
    }
    if (this.#escape === 2) {
      if (key >= "\x40" && key <= "\x7e") this.#escape = 0;
      return;
    }
    switch (key) {
      case "\x1b":
        this.#escape = 1;
        return;
      case "\r":
      case "\n": {
        const line = this.#buffer;
        this.#buffer = "";
        this.#write("\r\n");
        this.#deliver(line);
        return;
      }
      case "\x7f":
      case "\b":
        this.#buffer = [...this.#buffer].slice(0, -1).join("");
        this.#redraw();
        return;
      case "\x15": // Ctrl-U: the whole line
        this.#buffer = "";
        this.#redraw();
        return;
      case "\x17": // Ctrl-W: the last word
        this.#buffer = this.#buffer.replace(/\S*\s*$/, "");
        this.#redraw();
        return;
      case "\x0c": // Ctrl-L
        this.#write("\x1b[2J\x1b[H");
        this.#redraw();
        return;
      case "\x03": // Ctrl-C: raw mode turns the signal into a key; leave as at the end of input.
        this.#write("^C\r\n");
        this.#buffer = "";
        this.#deliver(null);
        return;
      case "\x04": // Ctrl-D: the end of input on an empty line, as a shell has it
        if (this.#buffer === "") {
          this.#write("\r\n");
          this.#deliver(null);
        }
        return;
    }
    if (key < " ") return;
    this.#buffer += key;
    if (!this.#secret) this.#write(key);
  }
}
