/**
 * @module One WebSocket to a Parley server as the terminal client uses it (PROTOCOL.md): requests
 * matched to their replies by `ref`, everything else handed to `onPush`, and the close kept.
 */

export type Frame = Record<string, unknown> & { type: string };

/** The server answered with an `error` frame; `message` is its sentence for people. */
export class ServerError extends Error {
  override name = "ServerError";
  constructor(readonly code: string, message: string, readonly retryAfterMs?: number) {
    super(message);
  }
}

/** No answer came: the socket is closed, closed on the way, or the server stalled. */
export class ConnectionError extends Error {
  override name = "ConnectionError";
}

export interface Closed {
  code: number;
  reason: string;
}

const OPEN_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 15_000;

export class Connection {
  /** Frames that are not replies: pushes, and errors without a ref. */
  onPush: (frame: Frame) => void = () => {};
  readonly closed: Promise<Closed>;
  #ws: WebSocket;
  #waiting = new Map<string, {
    resolve: (f: Frame) => void;
    reject: (e: Error) => void;
    timer: ReturnType<typeof setTimeout>;
  }>();
  #nextRef = 1;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => {
        for (const waiter of this.#waiting.values()) {
          clearTimeout(waiter.timer);
          waiter.reject(new ConnectionError("The connection closed before the server answered"));
        }
        this.#waiting.clear();
        resolve({ code: event.code, reason: event.reason });
      }, { once: true });
    });
    ws.addEventListener("message", (event) => this.#received(event.data));
  }

  /** Opens a socket to `url`; rejects with a sentence when the server cannot be reached. */
  static open(url: string): Promise<Connection> {
    const ws = new WebSocket(url);
    const connection = new Connection(ws);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(new ConnectionError(`No answer from ${url} within ${OPEN_TIMEOUT_MS} ms`));
      }, OPEN_TIMEOUT_MS);
      ws.addEventListener("open", () => {
        clearTimeout(timer);
        resolve(connection);
      }, { once: true });
      ws.addEventListener("close", () => {
        clearTimeout(timer);
        reject(new ConnectionError(`Cannot connect to ${url}: is the server running?`));
      }, { once: true });
    });
  }

  get isOpen(): boolean {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  #received(data: unknown) {
    if (typeof data !== "string") return;
    let frame: Frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    const ref = typeof frame.ref === "string" ? frame.ref : undefined;
    const waiter = ref !== undefined ? this.#waiting.get(ref) : undefined;
    if (ref === undefined || !waiter) {
      this.onPush(frame);
      return;
    }
    this.#waiting.delete(ref);
    clearTimeout(waiter.timer);
    if (frame.type === "error") {
      waiter.reject(
        new ServerError(
          String(frame.code),
          String(frame.message ?? frame.code),
          typeof frame.retryAfterMs === "number" ? frame.retryAfterMs : undefined,
        ),
      );
    } else {
      waiter.resolve(frame);
    }
  }

  /** Sends a request and resolves with its reply; an `error` reply rejects with `ServerError`. */
  request(frame: Frame, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Frame> {
    if (!this.isOpen) return Promise.reject(new ConnectionError("Not connected"));
    const ref = `t${this.#nextRef++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(ref);
        reject(new ConnectionError(`The server did not answer "${frame.type}" in time`));
      }, timeoutMs);
      this.#waiting.set(ref, { resolve, reject, timer });
      this.#ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  /** Sends a frame that has no reply (`ack`); false when the socket is not open. */
  send(frame: Frame): boolean {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  /** Closes with `code` and waits (briefly) for the close to complete. */
  async close(code = 1000, reason = ""): Promise<void> {
    if (this.#ws.readyState === WebSocket.CONNECTING || this.#ws.readyState === WebSocket.OPEN) {
      this.#ws.close(code, reason);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.closed,
      new Promise((resolve) => timer = setTimeout(resolve, 1000)),
    ]);
    clearTimeout(timer);
  }
}
