/**
 * @module The browser's side of Parley's wire protocol (PROTOCOL.md): one WebSocket at a time,
 * requests matched to their replies by `ref`, pushes handed on, and a session that outlives its
 * socket: after a lost connection or a 1001 it reconnects with exponential backoff and jitter and
 * logs in again with its token; after a 4001 it stays away until asked.
 */

/** An `error` frame the server answered with; `message` is its sentence for people. */
export class ServerError extends Error {
  constructor(frame) {
    super(frame.message || `The server answered "${frame.code}"`);
    this.code = frame.code;
    this.retryAfterMs = frame.retryAfterMs;
  }
}

/** The request never got an answer: no connection, or it closed or stalled on the way. */
export class ConnectionError extends Error {
  code = "connection";
}

const REQUEST_TIMEOUT_MS = 15_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const TOKEN_KEY = "parley.token";
const NAME_KEY = "parley.name";

/**
 * Exponential backoff with "equal jitter": half of each step is fixed, half random, so that the
 * clients of a node that went away do not all come back in the same instant.
 */
export function backoffMs(attempt, random = Math.random) {
  const step = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return Math.round(step / 2 + random() * (step / 2));
}

/** One WebSocket and the requests waiting for their replies on it. */
class Socket {
  #ws;
  #waiting = new Map();
  #nextRef = 1;

  constructor(url, onFrame) {
    this.#ws = new WebSocket(url);
    this.opened = new Promise((resolve, reject) => {
      this.#ws.addEventListener("open", () => resolve(), { once: true });
      this.#ws.addEventListener(
        "close",
        () => reject(new ConnectionError("Cannot reach the server: check your connection")),
        { once: true },
      );
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.#ws.addEventListener("close", (event) => {
        for (const waiter of this.#waiting.values()) {
          clearTimeout(waiter.timer);
          waiter.reject(new ConnectionError("The connection closed before the server answered"));
        }
        this.#waiting.clear();
        resolve(event);
      }, { once: true });
    });
    this.#ws.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      const waiter = frame.ref !== undefined ? this.#waiting.get(frame.ref) : undefined;
      if (!waiter) {
        onFrame(frame);
        return;
      }
      this.#waiting.delete(frame.ref);
      clearTimeout(waiter.timer);
      if (frame.type === "error") waiter.reject(new ServerError(frame));
      else waiter.resolve(frame);
    });
  }

  get isOpen() {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  /** Sends a frame that has no reply (`ack`); false when the socket is not open. */
  send(frame) {
    if (!this.isOpen) return false;
    this.#ws.send(JSON.stringify(frame));
    return true;
  }

  request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
    if (!this.isOpen) {
      return Promise.reject(new ConnectionError("Not connected: try again in a moment"));
    }
    const ref = `w${this.#nextRef++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(ref);
        reject(new ConnectionError("The server did not answer in time: try again"));
      }, timeoutMs);
      this.#waiting.set(ref, { resolve, reject, timer });
      this.#ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  close(code = 1000, reason = "") {
    if (this.#ws.readyState <= WebSocket.OPEN) this.#ws.close(code, reason);
  }
}

/**
 * The states a `Session` reports through `onState(state, detail)`:
 * - `out`: not logged in (detail.reason "expired" when a kept token no longer works);
 * - `connecting`: opening a socket and logging in with the token;
 * - `online`: logged in;
 * - `waiting`: the connection is lost; detail.delayMs until the next try, detail.reason why;
 * - `replaced`: closed with 4001, the account was opened elsewhere; no reconnection by itself.
 */
export class Session {
  #url;
  #storage;
  #on;
  #socket = null;
  #state = "out";
  #attempt = 0;
  #timer = undefined;
  user = null;

  constructor({ url, storage, onWelcome, onPush, onState }) {
    this.#url = url;
    this.#storage = storage;
    this.#on = { onWelcome, onPush, onState };
  }

  get state() {
    return this.#state;
  }

  get token() {
    return this.#storage.getItem(TOKEN_KEY);
  }

  /** The name of the account the kept token belongs to, for "Resuming … as alice". */
  get savedName() {
    return this.#storage.getItem(NAME_KEY);
  }

  #setState(state, detail = {}) {
    this.#state = state;
    this.#on.onState(state, detail);
  }

  async #connect() {
    const socket = new Socket(this.#url, (frame) => this.#on.onPush(frame));
    this.#socket = socket;
    socket.closed.then((event) => this.#closed(socket, event));
    await socket.opened;
    return socket;
  }

  /** A socket for requests before login: the open one, or a new one (the server closes an idle one). */
  async #preLoginSocket() {
    if (this.#socket?.isOpen) return this.#socket;
    return await this.#connect();
  }

  async register(name, password) {
    const socket = await this.#preLoginSocket();
    const reply = await socket.request({ type: "register", name, password });
    return reply.user;
  }

  async login(name, password) {
    const socket = await this.#preLoginSocket();
    const welcome = await socket.request({ type: "login", name, password });
    this.#welcomed(welcome);
  }

  /** Logs in again with the kept token; false when there is none. */
  resume() {
    if (!this.token) return false;
    clearTimeout(this.#timer);
    this.#attempt = 0;
    void this.#tryResume();
    return true;
  }

  /** While waiting to reconnect, try at once (the browser says it is back online). */
  retryNow() {
    if (this.#state !== "waiting") return;
    clearTimeout(this.#timer);
    void this.#tryResume();
  }

  async #tryResume() {
    const token = this.token;
    if (!token) {
      this.#setState("out", { reason: "expired" });
      return;
    }
    this.#setState("connecting");
    let socket;
    try {
      socket = await this.#connect();
      const welcome = await socket.request({ type: "login", token });
      // Runs in the reply's microtask, before the next frame: the app has its state before the
      // waiting messages that follow the welcome are pushed.
      this.#welcomed(welcome);
    } catch (error) {
      if (this.#state !== "connecting") return; // Cancelled meanwhile.
      socket?.close();
      if (error instanceof ServerError && error.code === "bad_credentials") {
        this.#forget();
        this.#setState("out", { reason: "expired" });
        return;
      }
      // `already_online`: the session this one replaces (a reloaded page, a node that died) is
      // still being ended; it will be within moments, or within NODE_TTL_MS for a dead node.
      this.#retryLater(error);
    }
  }

  #retryLater(error) {
    const delayMs = backoffMs(this.#attempt++);
    this.#setState("waiting", {
      delayMs,
      reason: error instanceof ServerError ? error.code : "connection",
      message: error?.message,
    });
    this.#timer = setTimeout(() => void this.#tryResume(), delayMs);
  }

  #welcomed(welcome) {
    this.user = welcome.user;
    this.#attempt = 0;
    this.#storage.setItem(TOKEN_KEY, welcome.token);
    this.#storage.setItem(NAME_KEY, welcome.user.name);
    this.#setState("online");
    this.#on.onWelcome(welcome);
  }

  #closed(socket, event) {
    if (socket !== this.#socket) return;
    this.#socket = null;
    // Before login nothing is lost: the next request opens a new socket.
    if (this.#state !== "online") return;
    if (event.code === 4001) {
      this.#setState("replaced");
      return;
    }
    // 1001 (node shutting down), a dropped network, or anything else unexpected: come back.
    this.#retryLater(new ConnectionError(event.reason || "The connection was lost"));
  }

  /** A request after login; rejects with `ConnectionError` while not connected. */
  request(frame) {
    if (this.#state !== "online" || !this.#socket) {
      return Promise.reject(
        new ConnectionError("Not connected: try again when the connection is back"),
      );
    }
    return this.#socket.request(frame);
  }

  /** Sends a frame without a reply; false when not connected. */
  send(frame) {
    return this.#state === "online" && this.#socket !== null && this.#socket.send(frame);
  }

  /** Logs out on the server (which revokes the token) and forgets the token here. */
  async logout() {
    const socket = this.#socket;
    const wasOnline = this.#state === "online";
    clearTimeout(this.#timer);
    this.#forget();
    this.#setState("out");
    if (socket && wasOnline) {
      try {
        await socket.request({ type: "logout" });
      } catch {
        // The token is forgotten here either way; it expires on the server by itself.
      }
    }
    socket?.close();
  }

  /** Stops resuming and forgets the kept token (another account is about to log in). */
  cancel() {
    clearTimeout(this.#timer);
    this.#forget();
    const socket = this.#socket;
    this.#socket = null;
    socket?.close();
    this.#setState("out");
  }

  #forget() {
    this.user = null;
    this.#storage.removeItem(TOKEN_KEY);
    this.#storage.removeItem(NAME_KEY);
  }
}
