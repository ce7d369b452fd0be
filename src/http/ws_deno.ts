/**
 * @module The one place that touches Hono's Deno WebSocket adapter (deprecated for Hono 5, fine in
 * 4.x): it maps a Deno WebSocket onto the neutral `SocketLike` and its events onto a `ChatSocket`.
 */
import type { Context, MiddlewareHandler } from "hono";
import { getConnInfo, upgradeWebSocket } from "hono/deno";
import type { ChatSocket, SocketLike } from "../realtime/socket.ts";

/**
 * The `/ws` handler. `idleTimeoutMs` becomes Deno's ping interval: a peer that answers no ping is
 * closed, and its close event ends its session like any other close.
 */
export function websocketHandler(
  createSocket: (socket: SocketLike, remote: string) => ChatSocket,
  idleTimeoutMs: number,
): MiddlewareHandler {
  return upgradeWebSocket((c) => {
    let chat: ChatSocket | undefined;
    const remote = clientAddress(c);
    return {
      onOpen(_event, ws) {
        const raw = ws.raw as WebSocket;
        chat = createSocket({
          send: (text) => raw.send(text),
          close: (code, reason) => raw.close(code, reason),
          get bufferedAmount() {
            return raw.bufferedAmount;
          },
        }, remote);
        chat.opened();
      },
      onMessage(event) {
        chat?.received(event.data);
      },
      onClose() {
        void chat?.closedByPeer();
      },
      onError() {
        // A close event always follows; the session ends there.
      },
    };
  }, { idleTimeout: Math.max(1, Math.ceil(idleTimeoutMs / 2000)) });
}

/** The peer's IP address as the socket sees it (behind a proxy: the proxy's). */
export function clientAddress(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? "unknown";
  } catch {
    return "unknown";
  }
}
