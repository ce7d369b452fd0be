/**
 * @module The one place that touches Deno's WebSocket upgrade and Hono's Deno helpers: it upgrades
 * the request and maps the socket's events onto a `ChatSocket`. The Deno `WebSocket` is itself a
 * `SocketLike`, so it is handed over as it is: no wrapper objects per socket (Hono's
 * `upgradeWebSocket` kept a context, its closures and ours per socket, about 1 KiB on each of
 * 10,000 idle sockets).
 */
import type { Context, MiddlewareHandler } from "hono";
import { getConnInfo } from "hono/deno";
import type { ChatSocket, SocketLike } from "../realtime/socket.ts";

/**
 * The `/ws` handler. `idleTimeoutMs` becomes Deno's ping interval: a peer that answers no ping is
 * closed, and its close event ends its session like any other close.
 */
export function websocketHandler(
  createSocket: (socket: SocketLike, remote: string) => ChatSocket,
  idleTimeoutMs: number,
): MiddlewareHandler {
  const idleTimeout = Math.max(1, Math.ceil(idleTimeoutMs / 2000));
  return (c) => {
    // As Hono's helper did: agree to the first subprotocol the client offers, if any.
    const protocol = c.req.header("sec-websocket-protocol")?.split(",")[0]?.trim();
    // Read before the upgrade, which takes the request's connection over.
    const remote = clientAddress(c);
    const { response, socket } = Deno.upgradeWebSocket(c.req.raw, {
      idleTimeout,
      ...(protocol ? { protocol } : {}),
    });
    const chat = createSocket(socket, remote);
    socket.onopen = () => {
      socket.onopen = null;
      chat.opened();
    };
    socket.onmessage = (event) => chat.received(event.data);
    // An error event is always followed by a close event; the session ends there.
    socket.onclose = () => void chat.closedByPeer();
    return Promise.resolve(response);
  };
}

/** The peer's IP address as the socket sees it (behind a proxy: the proxy's). */
export function clientAddress(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? "unknown";
  } catch {
    return "unknown";
  }
}
