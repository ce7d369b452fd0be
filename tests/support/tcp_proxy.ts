/**
 * @module A TCP proxy between the servers under test and PostgreSQL that can fail on command:
 * refuse new connections, blackhole (accept and forward nothing), reset every open connection, or
 * go down altogether (nothing listens: connection refused, as while PostgreSQL restarts).
 * It works in front of any of the fixture's database providers.
 */

export type ProxyMode = "pass" | "refuse" | "blackhole" | "down";

interface Pair {
  client: Deno.TcpConn;
  upstream: Deno.TcpConn | null;
}

export class TcpProxy {
  readonly port: number;
  #listener: Deno.TcpListener;
  #mode: ProxyMode = "pass";
  #pairs = new Set<Pair>();
  #pumps = new Set<Promise<void>>();
  #accepting: Promise<void>;

  private constructor(
    listener: Deno.TcpListener,
    private readonly target: { hostname: string; port: number },
  ) {
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  static start(target: { hostname: string; port: number }): TcpProxy {
    return new TcpProxy(Deno.listen({ hostname: "127.0.0.1", port: 0 }), target);
  }

  /** `url` with its host and port replaced by this proxy's. */
  wrap(url: string): string {
    const u = new URL(url);
    u.hostname = "127.0.0.1";
    u.port = String(this.port);
    return u.toString();
  }

  get mode(): ProxyMode {
    return this.#mode;
  }

  /**
   * From now on: pass traffic, refuse new connections, or blackhole: bytes are held, not dropped,
   * as on a network path that stops answering, and flow again when the mode returns to "pass".
   */
  set(mode: ProxyMode): void {
    const wasDown = this.#mode === "down";
    this.#mode = mode;
    if (mode === "down" && !wasDown) {
      this.#listener.close();
      this.resetAll();
    } else if (wasDown && mode !== "down") {
      this.#listener = Deno.listen({ hostname: "127.0.0.1", port: this.port });
      const before = this.#accepting;
      this.#accepting = before.then(() => this.#accept());
    }
    if (mode === "pass") {
      this.#resume();
      this.#held = new Promise((resolve) => this.#resume = resolve);
    }
  }

  #resume: () => void = () => {};
  #held: Promise<void> = new Promise((resolve) => this.#resume = resolve);

  /** Closes every open connection at once, both ways, as a failing network or restart would. */
  resetAll(): void {
    for (const pair of this.#pairs) this.#close(pair);
  }

  async #accept() {
    const listener = this.#listener;
    for await (const client of listener) {
      if (this.#mode === "refuse") {
        client.close();
        continue;
      }
      const pair: Pair = { client, upstream: null };
      this.#pairs.add(pair);
      this.#track(this.#connect(pair));
    }
  }

  #track(p: Promise<void>) {
    this.#pumps.add(p);
    p.finally(() => this.#pumps.delete(p));
  }

  async #connect(pair: Pair) {
    try {
      pair.upstream = await Deno.connect(this.target);
    } catch {
      this.#close(pair);
      return;
    }
    if (!this.#pairs.has(pair)) {
      // Reset (or the proxy closed) while connecting: the client side is gone already.
      pair.upstream.close();
      return;
    }
    this.#track(this.#pump(pair, pair.client, pair.upstream));
    this.#track(this.#pump(pair, pair.upstream, pair.client));
  }

  async #pump(pair: Pair, from: Deno.TcpConn, to: Deno.TcpConn) {
    const buf = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) break;
        while (this.#mode === "blackhole") await this.#held;
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
      }
    } catch {
      // Either side went away; the pair closes below.
    }
    this.#close(pair);
  }

  #close(pair: Pair) {
    if (!this.#pairs.delete(pair)) return;
    for (const conn of [pair.client, pair.upstream]) {
      try {
        conn?.close();
      } catch {
        // Already closed.
      }
    }
  }

  async close(): Promise<void> {
    this.set("pass");
    this.#listener.close();
    await this.#accepting.catch(() => {});
    this.resetAll();
    await this.#accepting.catch(() => {});
    // A connection still being made starts its pumps after this began: wait for those too.
    while (this.#pumps.size > 0) await Promise.allSettled([...this.#pumps]);
  }
}
