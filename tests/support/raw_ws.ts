/**
 * @module A WebSocket peer built on a bare TCP connection, for the faults a browser never makes:
 * it performs the handshake, sends frames, and then goes silent (no pongs, no close reply), like
 * a peer behind a dead network path.
 */

function frame(text: string): Uint8Array {
  const payload = new TextEncoder().encode(text);
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const len = payload.length;
  const header = len < 126 ? [0x81, 0x80 | len] : [0x81, 0x80 | 126, len >> 8, len & 0xff];
  if (len >= 65536) throw new Error("frame too long for this test peer");
  const out = new Uint8Array(header.length + 4 + len);
  out.set(header, 0);
  out.set(mask, header.length);
  for (let i = 0; i < len; i++) out[header.length + 4 + i] = payload[i] ^ mask[i % 4];
  return out;
}

export class SilentPeer {
  #conn: Deno.TcpConn;
  #received = "";

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** Connects and upgrades; the server's reply is read until the end of the 101 response. */
  static async connect(port: number): Promise<SilentPeer> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const key = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    await conn.write(new TextEncoder().encode(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ));
    const peer = new SilentPeer(conn);
    await peer.readUntil((s) => s.includes("\r\n\r\n"));
    if (!peer.#received.startsWith("HTTP/1.1 101")) {
      conn.close();
      throw new Error(`upgrade refused: ${peer.#received.split("\r\n")[0]}`);
    }
    return peer;
  }

  /** Reads (without answering anything) until `done` holds for all text read so far. */
  async readUntil(done: (text: string) => boolean, ms = 10_000): Promise<string> {
    const buf = new Uint8Array(16384);
    const deadline = Date.now() + ms;
    while (!done(this.#received)) {
      if (Date.now() > deadline) {
        throw new Error(`peer read timed out; got ${this.#received.slice(-300)}`);
      }
      const n = await this.#conn.read(buf);
      if (n === null) break;
      // Frames from the server are unmasked; reading them as Latin-1 keeps JSON text searchable.
      this.#received += String.fromCharCode(...buf.subarray(0, n));
    }
    return this.#received;
  }

  async send(message: unknown): Promise<void> {
    await this.#conn.write(frame(JSON.stringify(message)));
  }

  /** Resolves once the server has closed the TCP connection. */
  async untilClosed(ms = 30_000): Promise<void> {
    const buf = new Uint8Array(16384);
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const n = await this.#conn.read(buf).catch(() => null);
      if (n === null) return;
    }
    throw new Error("the server did not close the connection");
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }
}
