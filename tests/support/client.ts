/**
 * @module A real WebSocket client for tests: requests matched to replies by `ref`, pushes awaited by
 * predicate with a deadline, and the close code kept.
 */

export type Frame = Record<string, unknown> & { type: string };

let nextRef = 1;

export class Client {
  readonly frames: Frame[] = [];
  readonly closed: Promise<CloseEvent>;
  #ws: WebSocket;
  #waiters: { test: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  #cursor = 0;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.closed = new Promise((resolve) => ws.addEventListener("close", (e) => resolve(e)));
    ws.addEventListener("message", (e) => {
      const frame = JSON.parse(e.data) as Frame;
      this.frames.push(frame);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.test(frame)) return true;
        w.resolve(frame);
        return false;
      });
    });
  }

  static async connect(url: string, protocols?: string[]): Promise<Client> {
    const ws = new WebSocket(url, protocols);
    const client = new Client(ws);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`Cannot connect to ${url}`)), {
        once: true,
      });
    });
    return client;
  }

  get raw(): WebSocket {
    return this.#ws;
  }

  send(frame: unknown): void {
    this.#ws.send(
      typeof frame === "string" || frame instanceof Uint8Array ? frame : JSON.stringify(frame),
    );
  }

  /** Sends a request with a fresh ref and resolves with the reply carrying that ref. */
  async request(frame: Frame, ms = 10_000): Promise<Frame> {
    const ref = `r${nextRef++}`;
    const reply = this.next((f) => f.ref === ref, ms);
    this.send({ ...frame, ref });
    return await reply;
  }

  /** The first frame, received from now on or already received but not yet taken, that passes `test`. */
  next(test: (f: Frame) => boolean, ms = 10_000): Promise<Frame> {
    for (let i = this.#cursor; i < this.frames.length; i++) {
      if (test(this.frames[i])) return Promise.resolve(this.frames[i]);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `No matching frame within ${ms} ms; got ${JSON.stringify(this.frames.slice(-5))}`,
          ),
        );
      }, ms);
      const waiter = {
        test,
        resolve: (f: Frame) => {
          clearTimeout(timer);
          resolve(f);
        },
      };
      this.#waiters.push(waiter);
    });
  }

  /** Forgets frames received so far for `next`. */
  skipReceived(): void {
    this.#cursor = this.frames.length;
  }

  /** The close event, or an error if the socket is still open after `ms`. */
  async closedWithin(ms: number): Promise<CloseEvent> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) =>
      timer = setTimeout(() => reject(new Error(`socket still open after ${ms} ms`)), ms)
    );
    try {
      return await Promise.race([this.closed, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<CloseEvent> {
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) {
      this.#ws.close(1000);
    }
    return await this.closed;
  }
}

/** Registers a fresh, uniquely named user over `client` and returns its id, name and password. */
export async function registerUser(
  client: Client,
  prefix = "u",
): Promise<{ id: number; name: string; password: string }> {
  const name = `${prefix}${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const password = `pw-${crypto.randomUUID()}`;
  const reply = await client.request({ type: "register", name, password });
  if (reply.type !== "registered") throw new Error(`register failed: ${JSON.stringify(reply)}`);
  return { id: (reply.user as { id: number }).id, name, password };
}

/** Connects, registers a fresh user and logs it in; returns the client and the welcome. */
export async function loggedIn(url: string, prefix = "u") {
  const client = await Client.connect(url);
  const user = await registerUser(client, prefix);
  const welcome = await client.request({ type: "login", name: user.name, password: user.password });
  if (welcome.type !== "welcome") {
    await client.close();
    throw new Error(`login failed: ${JSON.stringify(welcome)}`);
  }
  return { client, user, welcome, token: welcome.token as string };
}

/**
 * Logs in with `token` on a fresh socket, as a client does after a close. It asks again while the
 * user's previous session is still closing (`already_online`) or the node is rejoining
 * (`unavailable`), each time on a new socket; any other answer, or `ms` passing, fails.
 */
export async function resume(url: string, token: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (true) {
    const client = await Client.connect(url);
    const welcome = await client.request({ type: "login", token });
    if (welcome.type === "welcome") return { client, welcome };
    await client.close();
    const transient = welcome.code === "already_online" || welcome.code === "unavailable";
    if (!transient || Date.now() > deadline) {
      throw new Error(`login by token failed: ${JSON.stringify(welcome)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls `check` until it returns true or `ms` pass. */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  ms = 10_000,
  what = "condition",
) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
}
