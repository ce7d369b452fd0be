/**
 * @module A test client speaking the course protocol byte for byte, as the course's C++ client does:
 * each request is one write of a JSON object followed by a NUL byte; replies are read as they come
 * and split into objects by the server's own splitter. It also keeps every read as it arrived,
 * because the course client parses each `recv` as exactly one object, and a transcript of the bytes
 * both ways (printed on close when PARLEY_TEST_VERBOSE or PARLEY_COURSE_TRANSCRIPT is set).
 */
import { Splitter } from "../../src/legacy/framing.ts";

export type CourseObject = Record<string, unknown>;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes as readable text: NUL shown as \0, other control bytes and non-UTF-8 bytes as \xNN. */
export function showBytes(bytes: Uint8Array): string {
  let out = "";
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (code === 0) out += "\\0";
    else if (code === 0xfffd) out += "\\x??";
    else if (code < 0x20) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out;
}

export class CourseClient {
  /** Every object received, in order. */
  readonly objects: CourseObject[] = [];
  /** Every read, as the bytes arrived: what the course client's `recv` would have seen. */
  readonly reads: Uint8Array[] = [];
  /** Both directions, in order: "C: " for what the client wrote, "S: " for each read. */
  readonly transcript: string[] = [];
  /** Anything the server sent that is not a JSON object (there should be none). */
  readonly garbage: string[] = [];
  /** Resolves when the server closes the connection (or the read fails). */
  readonly closed: Promise<void>;
  #conn: Deno.TcpConn;
  #splitter = new Splitter({ maxObjectBytes: 1 << 20 });
  #cursor = 0;
  #listeners = new Set<() => void>();
  #ended = false;
  #closedLocally = false;
  #reader: Promise<void>;

  private constructor(conn: Deno.TcpConn, readonly label: string) {
    this.#conn = conn;
    let resolveClosed!: () => void;
    this.closed = new Promise((resolve) => resolveClosed = resolve);
    this.#reader = this.#read().finally(() => {
      this.#ended = true;
      this.#changed();
      resolveClosed();
    });
  }

  static async connect(port: number, label = "course"): Promise<CourseClient> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new CourseClient(conn, label);
  }

  get ended(): boolean {
    return this.#ended;
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) return;
        const chunk = buffer.slice(0, n);
        this.reads.push(chunk);
        this.transcript.push(`S: ${showBytes(chunk)}`);
        for (const piece of this.#splitter.push(chunk)) {
          if (piece.kind === "object") this.objects.push(piece.value);
          else this.garbage.push(piece.reason);
        }
        this.#changed();
      }
    } catch (error) {
      if (!this.#closedLocally) this.transcript.push(`!: ${String(error)}`);
    }
  }

  #changed(): void {
    for (const listener of this.#listeners) listener();
  }

  /** Writes exactly these bytes (or this text as UTF-8), in one write. */
  async write(data: Uint8Array | string): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    this.transcript.push(`C: ${showBytes(bytes)}`);
    for (let done = 0; done < bytes.length;) done += await this.#conn.write(bytes.subarray(done));
  }

  /** One request as the course client sends it: the JSON text and a NUL, in one write. */
  async send(request: CourseObject): Promise<void> {
    await this.write(`${JSON.stringify(request)}\0`);
  }

  /** The next object not yet taken, in arrival order. */
  async next(ms = 10_000): Promise<CourseObject> {
    const deadline = Date.now() + ms;
    while (this.#cursor >= this.objects.length) {
      const left = deadline - Date.now();
      if (this.#ended) {
        throw new Error(`${this.label}: connection closed; got ${JSON.stringify(this.objects)}`);
      }
      if (left <= 0) {
        throw new Error(
          `${this.label}: no object within ${ms} ms; got ${JSON.stringify(this.objects.slice(-5))}`,
        );
      }
      await this.#changeWithin(left);
    }
    return this.objects[this.#cursor++];
  }

  /** Takes objects until one passes `test`, and returns it. */
  async until(test: (o: CourseObject) => boolean, ms = 10_000): Promise<CourseObject> {
    const deadline = Date.now() + ms;
    while (true) {
      const o = await this.next(Math.max(1, deadline - Date.now()));
      if (test(o)) return o;
    }
  }

  /** Resolves once the server has closed the connection, or rejects after `ms`. */
  async closedWithin(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.#ended) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: connection still open after ${ms} ms`);
      await this.#changeWithin(left);
    }
  }

  #changeWithin(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#listeners.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#listeners.add(done);
    });
  }

  /** `{msgid:4}`, then the ack. */
  async register(name: string, password: string): Promise<CourseObject> {
    await this.send({ msgid: 4, name, password });
    return await this.until((o) => o.msgid === 5);
  }

  /** `{msgid:1}`, then the ack (which must be the next object). */
  async login(id: number, password: string): Promise<CourseObject> {
    await this.send({ msgid: 1, id, password });
    return await this.next();
  }

  /** Closes the connection (if the server has not) and waits for the reader to stop. */
  async close(): Promise<void> {
    if (!this.#closedLocally) {
      this.#closedLocally = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed.
      }
    }
    await this.#reader;
    if (Deno.env.get("PARLEY_TEST_VERBOSE") || Deno.env.get("PARLEY_COURSE_TRANSCRIPT")) {
      console.error(`--- transcript of ${this.label} ---\n${this.transcript.join("\n")}`);
    }
  }
}

/** Registers a fresh, uniquely named user through `client`; returns its id, name and password. */
export async function registerCourseUser(
  client: CourseClient,
  prefix = "c",
): Promise<{ id: number; name: string; password: string }> {
  const name = `${prefix}${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const password = `pw-${crypto.randomUUID().slice(0, 8)}`;
  const ack = await client.register(name, password);
  if (ack.errno !== 0 || typeof ack.id !== "number") {
    throw new Error(`register failed: ${JSON.stringify(ack)}`);
  }
  return { id: ack.id, name, password };
}

/** The text of one read, parsed as the course client does: the whole `recv` as one JSON value. */
export function parseRead(bytes: Uint8Array): unknown {
  return JSON.parse(decoder.decode(bytes));
}
